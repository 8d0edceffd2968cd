"""``lorank train --dry-run`` (lorank.study.train_price.plan_training): the steps it counts are the steps the HF Trainer
then takes (epochs, unit query / positive, grad_accum), a resume's done steps, the hours by part, the CLI's table
trains nothing; the real MS MARCO configs counted before mining."""
from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorank.cli import app
from lorank.train.config import TrainConfig
from lorank.study.train_price import plan_training
from tests.tinydata import make_trec_dir, save_tiny_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("dry")
    return root, make_trec_dir(root / "data", n_queries=5, n_cands=8), save_tiny_model(root / "model")


def _cfg(root: Path, data: Path, model: Path, name: str, **fields) -> TrainConfig:
    return TrainConfig.from_dict({"model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(data)}],
                                  "group_size": 4, "lr": 1e-3, "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
                                  "eval": {"sets": []}, "output_dir": str(root / name), **fields})


@pytest.mark.parametrize("fields, groups, steps", [
    ({"unit": "query", "batch_queries": 2, "epochs": 2}, 5, 6),                         # 3 batches an epoch, twice
    ({"unit": "positive", "batch_queries": 2, "grad_accum": 2, "epochs": 1}, 15, 4),    # 8 batches, 2 a step
])
def test_the_counted_steps_are_the_steps_training_takes(tiny, fields, groups, steps):
    from lorank.train.run import train

    root, data, model = tiny
    cfg = _cfg(root, data, model, f"run-{fields['unit']}", checkpoints={"every": 2}, **fields)
    plan = plan_training(cfg)
    assert (plan.groups, plan.groups_exact, plan.steps, plan.steps_done) == (groups, True, steps, 0)
    assert plan.seconds["training"] > 0 and plan.total_s >= plan.seconds["training"]
    assert train(cfg, progress=False).steps == steps
    after = plan_training(cfg)  # the run's last complete checkpoint: what a resume skips
    assert after.steps_done == steps and after.left_s < plan.total_s


def test_the_evaluations_are_priced_and_the_cli_trains_nothing(tiny, tmp_path):
    root, data, model = tiny
    plain = plan_training(_cfg(root, data, model, "x", max_steps=10))
    evaluated = plan_training(_cfg(root, data, model, "x", max_steps=10, checkpoints={"steps": "5,10"},
                                   eval={"sets": [str(data)], "depth": 8, "curve": {"every": 2, "depth": 4}}))
    assert plain.steps == evaluated.steps == 10
    assert evaluated.seconds["checkpoint evaluations"] > plain.seconds["checkpoint evaluations"]
    assert evaluated.seconds["curve"] > 0 == plain.seconds["curve"]
    f = tmp_path / "cfg.yaml"
    f.write_text(f"model: {model}\ndata: [{{kind: trec, path: {data}}}]\ngroup_size: 4\nmax_steps: 7\n"
                 f"output_dir: {tmp_path / 'out'}\n")
    res = CliRunner().invoke(app, ["train", str(f), "--dry-run", "--set", "batch_queries=1"])
    assert res.exit_code == 0, res.output
    assert "lorank train --dry-run" in res.output and "optimizer steps" in res.output and "training (h)" in res.output
    assert not (tmp_path / "out").exists()  # nothing trained, no folder


def test_the_msmarco_configs_are_counted_before_mining():
    data = ROOT.parent / "shared" / "data" / "msmarco-train-12k"
    if not data.is_dir():
        pytest.skip(f"real data not found at {data} (../shared/data)")
    plan = plan_training(ROOT / "configs" / "train_msmarco12k_cpu_gemma.yaml", {"output_dir": "/nonexistent/run"})
    # the folder's 11,992 queries with a positive, 2 a step over one epoch; mining keeps 11,959 of them (the run's
    # log), so the run takes 5,980 steps: the count is an upper bound, and says so
    assert (plan.groups, plan.groups_exact, plan.steps, plan.steps_done) == (11992, False, 5996, 0)
    assert any("upper bound" in n for n in plan.notes) and any("cost basis" in n for n in plan.notes)
    assert plan.model == "gemma3-270m" and plan.seconds["training"] > 3600


def test_the_hf_forward_slowdowns_are_the_committed_measurement():
    """The cost model's factors for runs off the packed forward are results/train_speed_variants.json's."""
    import json

    from lorank.study.cost import HF_FORWARD_SLOWDOWN

    measured = json.loads((ROOT / "results" / "train_speed_variants.json").read_text())["variants"]
    names = {"hf": "lorank-2x8-hf", "dylora": "dylora-r32", "adalora": "adalora-12to8"}
    assert {k: measured["slowdown_vs_packed"][v] for k, v in names.items()} == HF_FORWARD_SLOWDOWN


def test_a_run_off_the_packed_forward_is_priced_slower_on_the_cpu(tiny):
    root, data, model = tiny
    plain = plan_training(_cfg(root, data, model, "x", max_steps=10), device="cpu")
    hf = plan_training(_cfg(root, data, model, "x", max_steps=10, forward="hf"), device="cpu")
    assert hf.seconds["training"] == pytest.approx(plain.seconds["training"] * 1.77)
    gpu_plain = plan_training(_cfg(root, data, model, "x", max_steps=10), device="cuda")
    gpu_hf = plan_training(_cfg(root, data, model, "x", max_steps=10, forward="hf"), device="cuda")
    assert gpu_hf.seconds["training"] == gpu_plain.seconds["training"]  # the GPU rates are not the packed forward's
