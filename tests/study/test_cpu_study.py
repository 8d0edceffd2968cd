"""The CPU preset of the study (studies/paper-smollm2-cpu.yaml) and the CPU cost model it is sized with: the rates
measured per precision, what the plan predicts for the measured runs, the preset's recipe, equal budgets, one
evaluation depth, its ablations on the external reference adapter (pending while that adapter is not there) and
its estimate."""
from __future__ import annotations

from pathlib import Path

import pytest

from lorank.study import build_plan, find_spec, load_spec
from lorank.study.cost import CPU_MEASURED, CPU_REF_PARAMS, model_rates, score_s
from lorank.study.plan import RATES, count_params, model_config

N = count_params(model_config("smollm2-135m"))
SEEDED = Path(__file__).resolve().parents[2] / "results" / "study_smollm2_cpu_seeds"


def test_the_cpu_rates_are_the_measured_ones_for_each_precision():
    assert N == CPU_REF_PARAMS  # the rates are stated for SmolLM2-135M's body
    for prec, train_tok_s, pairs_s, eval_s in (("bf16", 676, 23, 32), ("fp32", 236.2, 6.3, 2.7)):
        r = model_rates("cpu", "smollm2-135m", N, RATES["cpu"], prec)
        assert r.train / (4 * N) == pytest.approx(train_tok_s) and r.score / (2 * N * 100) == pytest.approx(pairs_s)
        assert r.eval_rate / (2 * N * 100) == pytest.approx(eval_s)
        assert f"in {prec}" in r.note and "measured" in r.note
    assert "AMX" in CPU_MEASURED["bf16"].source and "248" in CPU_MEASURED["fp32"].source
    # the fp32 training rate is the committed measurement's, over the steps its source names
    import json as _json

    rows = {}
    for line in (SEEDED.parent / "train_rate_smollm2_fp32" / "train_log.jsonl").read_text().splitlines():
        r = _json.loads(line)
        if "tokens_per_s" in r:
            rows[r["step"]] = r
    assert "steps 21-120" in CPU_MEASURED["fp32"].source
    a, b = rows[20], rows[120]
    assert CPU_MEASURED["fp32"].train_tokens_s == pytest.approx(
        (b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]), abs=0.1)
    # the fp32 ablation rate is the demo's ablation step measured on an AVX2-only CPU, rounded down: its
    # configuration-pairs from the demo spec (components 4 + 11-layer windows 7 configurations, a slice of queries x
    # depth), over the step's wall time; the bf16 demo step on the AMX Xeon agrees with the bf16 basis
    demo = build_plan(load_spec(find_spec("demo")), check_data=False, device="cpu")
    (abl,) = [st for st in demo.steps if st.kind == "ablate"]
    payload = abl.payload
    config_pairs = 11 * payload["max_queries"] * payload["depth"]
    timing = _json.loads((SEEDED.parent / "demo_timing.json").read_text())
    t = timing["fp32_avx2"]["summary"]["steps_s"][abl.step_id]
    assert "(AVX2)" in timing["fp32_avx2"]["cpu"] and config_pairs == 5940
    assert CPU_MEASURED["fp32"].score_pairs_s == int(10 * config_pairs / t) / 10
    bf16_rate = config_pairs / timing["bf16"]["summary"]["steps_s"][abl.step_id]
    assert abs(bf16_rate - CPU_MEASURED["bf16"].score_pairs_s) < 1.5
    calls = [_json.loads(x) for x in (SEEDED.parent / "train_rate_smollm2_fp32" / "train_calls.jsonl").read_text()
             .splitlines()]
    assert [(c["from_step"], c["dtype"], c["forward"]) for c in calls] == [(1, "fp32", "packed")]
    # the ablation rate is the committed measurement's, rounded down
    import json

    abl = json.loads((SEEDED.parent / "score_dtype_ablation.json").read_text())["dtypes"]["bf16"]
    assert CPU_MEASURED["bf16"].score_pairs_s == int(abl["configuration_pairs_per_s"])
    # another model is priced at the same effective FLOP/s: twice the parameters, half the tokens/s
    big = model_rates("cpu", "x-270m", 2 * N, RATES["cpu"], "bf16")
    assert big.train == model_rates("cpu", "smollm2-135m", N, RATES["cpu"], "bf16").train and "scaled" in big.note


def test_the_plan_predicts_the_measured_bf16_runs_within_30_percent(monkeypatch):
    """The seeded study's r8-all-s42 run, trained alone on the 2-core AMX CPU in bf16 at 2 threads (committed
    summary): its training, and its own evaluations (2 dev checkpoints, the dense curve, the test scorings), each
    against the plan's estimate of that part."""
    import json

    from lorank.study import cost

    monkeypatch.setenv("LORANK_BF16", "1")
    plan = build_plan(load_spec(find_spec("paper-smollm2-cpu-seeds")), "paper-smollm2-cpu-seeds", check_data=False,
                      device="cpu")
    run = next(r for r in plan.runs if r.label == "r8-all-s42")
    summary = json.loads((SEEDED / "runs" / run.run_id / "train_summary.json").read_text())
    rates = model_rates("cpu", "smollm2-135m", N, RATES["cpu"], "bf16")
    tc = run.train_config
    share = summary["tokens_this_call"] / cost.train_tokens(tc)  # the call resumed from step 27
    trained = cost.training_s(tc, N, rates) * share
    assert 0.7 * summary["train_s"] < trained < 1.3 * summary["train_s"], (trained, summary["train_s"])
    # its own evaluations: dev checkpoints, the dense curve and the DL22 scorings (those alone vary most: 156-226 s)
    evals = (cost.checkpoint_evals_s(tc, N, rates) - cost.START_S + cost.curve_estimate(tc, N, rates)
             + cost.test_estimate(tc, N, rates))
    measured = summary["eval_in_training_s"] + summary["test_eval_s"]
    assert 0.7 * measured < evals < 1.3 * measured, (evals, measured)


def _plan(monkeypatch, bf16: str = "1", **update):
    monkeypatch.setenv("LORANK_BF16", bf16)
    spec = load_spec(find_spec("paper-smollm2-cpu"))
    if update:
        spec = spec.model_copy(update=update)
    return build_plan(spec, "paper-smollm2-cpu", check_data=False, device="cpu")


def test_cpu_preset_recipe_budget_and_one_depth(monkeypatch):
    plan = _plan(monkeypatch, adapters={"reference": "/nonexistent/smollm2-135m-msmarco12k-r8"})
    from lorank.train.config import TrainConfig

    ref = TrainConfig.from_yaml(Path(__file__).resolve().parents[2] / "configs" / "train_msmarco12k_cpu_reference.yaml")
    assert [r.label for r in plan.runs] == ["r1-all-s42", "r2-all-s42", "r8-all-s42", "r32-all-s42", "r8-mha-s42",
                                            "r8-mlp-s42"]
    for r in plan.runs:
        tc = r.train_config
        d = tc["data"][0]
        assert d["kind"] == "msmarco" and d["path"] == "msmarco-train-12k"
        assert d["mine"]["collections"] == ["self", "dl20"] and d["mine"]["window"] == "1-30"
        assert d["mine"]["exclude_eval"] == ["dl19"] and d["mine"]["teacher"] is True
        assert (tc["loss"], tc["group_size"], tc["batch_queries"]) == ("contrastive_distill", 8, 2)
        assert (tc["lr"], tc["head_lr"]) == (ref.lr, ref.head_lr)  # the reference adapter's recipe
        assert (tc["warmup_ratio"], tc["seed"], tc["lora"]["alpha"], tc["lora"]["dropout"]) == (0.05, 42, 64, 0.1)
        assert tc["max_steps"] * tc["batch_queries"] * tc["grad_accum"] == 2000  # the same queries for every run
        assert len(tc["checkpoints"]["steps"]) == 4 and max(tc["checkpoints"]["steps"]) == tc["max_steps"]
        assert tc["eval"]["sets"] == ["dl19", "dl20"] and tc["eval"]["depth"] == 50
    abl = [s for s in plan.steps if s.kind == "ablate"]
    assert {s.payload["depth"] for s in abl} == {50}
    for name in ("dl19", "dl20"):  # every sweep on each set, in steps of ~1 h or less
        on = [s for s in abl if s.payload["eval"] == name]
        assert {"components", "projections", "layer-windows", "layers-leave-one-out", "rank-truncation"} <= {
            sw for s in on for sw in s.payload["sweeps"]}
        assert all(s.estimate_s < 1.2 * 3600 for s in on)
    for s in abl:
        assert s.run_id == "adapter:reference" and s.payload["window"] == 11 and not s.payload["max_queries"]
    kinds = sorted(s.payload["kind"] for s in plan.steps if s.kind == "analyze")
    assert kinds == ["compare", "compare", "patch", "probe", "weights"]
    assert plan.spec.report.findings_sets == ["dl19", "dl20"]
    # the reference adapter is not there: its steps are planned, priced and pending, the rest is not
    pending = [s for s in plan.steps if s.pending]
    assert {s.run_id for s in pending} == {"adapter:reference"} and len(pending) == 10
    assert all(s.estimate_s > 0 for s in plan.steps)
    assert any("adapter 'reference'" in n and "not found" in n and "pending" in n for n in plan.notes)


def test_cpu_preset_fits_about_15_cpu_hours_in_bf16(monkeypatch):
    # sized at ~13 h at session 10's rates (500 tokens/s, 13.5 pairs/s: its header); at the rates measured in
    # session 27 (2 threads, bf16 weights for ablations) the same plan prices at ~8 h
    plan = _plan(monkeypatch, "1")
    by = {k: sum(s.estimate_s for s in plan.steps if s.kind == k) / 3600 for k in ("train", "ablate", "analyze")}
    assert 6 < plan.estimate_s / 3600 < 15, by
    assert 4 < by["train"] < 9 and 2 < by["ablate"] < 6.5 and by["analyze"] < 0.5
    assert any("on cpu in bf16" in n for n in plan.notes)
    fp32 = _plan(monkeypatch, "0")
    assert any("on cpu in fp32" in n for n in fp32.notes) and fp32.estimate_s > 2.5 * plan.estimate_s


def test_findings_sets_must_be_evaluated_sets(monkeypatch):
    from lorank.errors import ConfigError
    from lorank.study.spec import ReportSpec

    with pytest.raises(ConfigError, match="report.findings_sets: 'dl21' is not in train.eval.sets"):
        _plan(monkeypatch, report=ReportSpec(findings_sets=["dl19", "dl21"]))


def test_sweep_sizes_count_every_configuration_scored():
    from lorank.study.cost import sweep_size, window_count

    axes = {"components": "all", "rank": 8}
    # full and LoRA off, plus: mha-only/mlp-only; 7 removed + 7 kept alone; 5 windows of 11 (5-15 among them);
    # ranks 1, 2, 4; and the cached leave-one-out (0.55 of 32)
    assert [sweep_size(s, 30, 11, axes) for s in ("components", "projections", "layer-windows", "rank-truncation")] \
        == [4, 16, 7, 5]
    assert sweep_size("layers-leave-one-out", 30, 11, axes) == pytest.approx(0.55 * 32)
    assert window_count(30, 10) == 6 and window_count(4, 11) == 1  # 6 = 5 windows + the added "only L5-15"
    assert sweep_size("projections", 30, 11, {}) == 16 and sweep_size("rank-truncation", 30, 11, {"rank": 1}) == 2


def test_window_count_matches_the_sweep_itself():
    from lorank.ablate.sweeps import build_sweep
    from lorank.lora import LoraSpec, apply_lora
    from lorank.models.random_init import random_reranker
    from lorank.study.cost import window_count

    pm = apply_lora(random_reranker("tiny-llama", num_hidden_layers=30, hidden_size=32, intermediate_size=64),
                    LoraSpec(rank=2, alpha=4, dropout=0.0))
    for w in (6, 10, 11, 12, 30):
        assert window_count(30, w) == len(build_sweep("layer-windows", pm, window=w)), w


def test_gemma3_270m_is_priced_offline_from_its_known_shape():
    """Without its packages converted, the plan still knows Gemma 3 270M's shape (18 layers, ~100M body
    parameters: its 168M-parameter embedding table costs no FLOPs), so a Gemma study's dry-run prices every step."""
    cfg = model_config("gemma3-270m")
    assert cfg is not None and cfg.model_type == "gemma3_text" and cfg.num_hidden_layers == 18
    assert 0.9 * N < count_params(cfg) < 1.1 * N  # close to SmolLM2-135M's body, as the issue says


def test_docs_quote_the_cpu_rates_priced():
    text = " ".join((Path(__file__).resolve().parents[2] / "docs" / "studies.md").read_text().split())
    m = CPU_MEASURED["bf16"]
    assert (f"bf16 (AVX512-BF16/AMX CPUs) {m.train_tokens_s:.0f} training tokens/s, {m.eval_pairs_s:.0f} pairs/s in a "
            f"run's own evaluations and {m.score_pairs_s:.0f} configuration-pairs/s in ablations") in text


def test_gemma_is_priced_at_the_training_rate_its_own_run_measured():
    """Gemma 3 270M is priced at the rates its reference run measured in each precision (the committed log, over
    the window each source names: bf16 on the AMX Xeon, fp32 on an AVX2 EPYC), not SmolLM2's scaled by FLOPs; its
    scoring (not measured) stays SmolLM2's, scaled."""
    import json

    from lorank.study.cost import CPU_MODEL_EVAL, CPU_MODEL_TRAIN

    n = count_params(model_config("gemma3-270m"))
    rows = {}
    for line in (SEEDED.parent / "resume" / "msmarco12k-gemma" / "train_log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "tokens" in r:
            rows[r["step"]] = r
    for prec, window in (("bf16", (3101, 4400)), ("fp32", (5002, 5200))):
        tok_s, src = CPU_MODEL_TRAIN[(prec, "gemma3-270m")]
        gemma = model_rates("cpu", "gemma3-270m", n, RATES["cpu"], prec)
        other = model_rates("cpu", "x-270m", n, RATES["cpu"], prec)
        assert gemma.train / (4 * n) == pytest.approx(tok_s) and "its own measured" in gemma.note
        assert gemma.train != other.train and gemma.score == other.score
        assert (gemma.eval_rate == other.eval_rate) == ((prec, "gemma3-270m") not in CPU_MODEL_EVAL)
        assert f"steps {window[0]}-{window[1]}" in src
        a, b = rows[window[0] - 1], rows[window[1]]
        assert b["elapsed_s"] > a["elapsed_s"]  # one call
        assert tok_s == pytest.approx((b["tokens"] - a["tokens"]) / (b["elapsed_s"] - a["elapsed_s"]), abs=0.5)


def test_gemma_evaluations_are_priced_at_the_rate_its_dev_curve_measured():
    """Gemma's own evaluations in fp32 are priced at the mean pairs/s of its reference run's committed dev curve rows
    (all scored in fp32 on one AVX2 CPU), not at SmolLM2's stale fp32 evaluation basis, scaled."""
    import json

    from lorank.study.cost import AVG_TOKENS, CPU_MODEL_EVAL

    curve = json.loads((SEEDED.parent / "train_msmarco12k_gemma.json").read_text())
    rows = [ck[s] for ck in curve["checkpoints"] for s in ("dl19", "dl20") if s in ck]
    assert len(rows) >= 10 and {r["precision"] for r in rows} == {"fp32"}
    pairs_s, src = CPU_MODEL_EVAL[("fp32", "gemma3-270m")]
    assert pairs_s == pytest.approx(sum(r["pairs_per_s"] for r in rows) / len(rows), abs=0.05)
    n = count_params(model_config("gemma3-270m"))
    gemma = model_rates("cpu", "gemma3-270m", n, RATES["cpu"], "fp32")
    assert gemma.eval_rate == pytest.approx(pairs_s * AVG_TOKENS * 2 * n) and f"{pairs_s:g} pairs/s" in gemma.note
    assert score_s(1000, n, gemma, in_training=True) == pytest.approx(1000 / pairs_s)
