"""benchmarks/train_speed.py's headline (the figures its JSON leads with), from a measured table: the speed-ups
against the baselines, Gemma's packed/HF ratio and the HF-forward variants' slow-down (issue 44's cost basis)."""
from __future__ import annotations

from tests.benchmark_module import load_benchmark


def _row(config: str, tokens_per_s: float, **kw) -> dict:
    return {"config": config, "tokens_per_s": tokens_per_s, "dtype": "bf16", "group_size": 8, **kw}


def test_the_headline_gives_each_ratio_from_the_same_run():
    speed = load_benchmark("train_speed")
    table = [_row("plain", 100.0), _row("lorank-2x8", 600.0, forward="packed"), _row("lorank-2x8-hf", 400.0),
             _row("dylora-r32", 300.0), _row("gemma-2x8", 500.0, forward="packed"), _row("gemma-2x8-hf", 250.0)]
    out = speed.headline(table)
    assert out["speedup"] == 6.0 and out["gemma"]["speedup_packed_vs_hf"] == 2.0
    assert out["variants"]["slowdown_vs_packed"] == {"lorank-2x8-hf": 1.5, "dylora-r32": 2.0}
    assert "adalora-12to8" not in out["variants"]["tokens_per_s"]  # not measured: not invented
    assert "variants" not in speed.headline([_row("dylora-r32", 300.0)])  # no packed row in the run: no ratio


def test_the_variant_configurations_are_the_views_studys():
    cfgs = load_benchmark("train_speed").LORANK
    assert cfgs["dylora-r32"][2]["lora.variant"] == "dylora" and cfgs["dylora-r32"][2]["lora.rank"] == 32
    assert cfgs["adalora-12to8"][2]["lora.adalora"]["target_r"] == 8 and cfgs["lorank-2x8-hf"][2] == {"forward": "hf"}
