"""Verdicts a reviewer accepts, on synthetic studies whose truth is known by construction: equivalence (TOST) for
"comparable", non-inferiority for "recovers", seeds as replicates, the study-wide correction, dev vs test roles, and
the statistics underneath (TOST, bootstrap, detectable effect, BH)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lorank.report.findings import FAILS, HOLDS, INCONCLUSIVE, PerQuery, VerdictRules, evaluate_findings
from lorank.report.findings_model import noninferior, paired
from lorank.evaluation.stats import adjust, boot_means, detectable_effect, tost

REF = "r8-all-s42"


def qids(n: int) -> list[str]:
    return [f"q{i:03d}" for i in range(n)]


def noisy(base: dict[str, float], shift: float, sd: float, seed: int, center: bool = False) -> dict[str, float]:
    """base + shift + query noise (``center``: noise of mean exactly 0, so the mean shift is exactly `shift`)."""
    e = np.random.default_rng(seed).normal(0, sd, len(base))
    if center:
        e -= e.mean()
    return {q: base[q] + shift + float(x) for q, x in zip(base, e)}


def bm25(n: int) -> dict[str, float]:
    rng = np.random.default_rng(1)
    return {q: float(v) for q, v in zip(qids(n), rng.uniform(0.2, 0.7, n))}


def table(runs: dict[str, dict]) -> pd.DataFrame:
    rows = []
    for rid, ax in runs.items():
        rows.append({"source": "checkpoint", "run_id": rid, "model": "m", "rank": ax["rank"],
                     "components": ax.get("components", "all"), "projections": "all", "layers": "all",
                     "variant": "lora", "seed": ax.get("seed", 42), "alpha": 64, "dropout": 0.1, "step": 100,
                     "eval_set": "dl19", "ndcg_cut_10": 0.5})
    return pd.DataFrame(rows)


def rank_study(n: int, sd: float = 0.03) -> tuple[pd.DataFrame, PerQuery]:
    """Four ranks that are truly the same model (the same per-query gain over BM25) up to independent noise."""
    b = bm25(n)
    gain = noisy(b, 0.12, 0.05, seed=2)
    runs = {f"r{r}-all-s42": {"rank": r} for r in (1, 2, 8, 32)}
    ck = {rid: {100: noisy(gain, 0.0, sd, seed=10 + i, center=True)} for i, rid in enumerate(runs)}
    return table(runs), PerQuery("dl22", b, ck, role="test")


def verdicts(df: pd.DataFrame, pq: PerQuery, **kw) -> dict[int, dict]:
    dev = dataclasses.replace(pq, role="dev")
    return {f["finding"]: f for f in evaluate_findings(df, dev, REF, test=pq, **kw)}


def test_identical_ranks_are_shown_equivalent_with_enough_queries_and_inconclusive_with_few():
    df, pq = rank_study(400)
    f2 = verdicts(df, pq)[2]
    assert f2["verdict"] == HOLDS, f2["reason"]
    assert f2["declared_margin"] == 0.02 and f2["role"] == "test"
    tost_tests = [v for v in f2["p_values"].values() if v["kind"] == "equivalence"]
    assert len(tost_tests) == 6 and all(v["significant"] and v["margin"] == 0.02 for v in tost_tests)
    # the same truth on 8 queries: no pair differs, the spread is small, but nothing is shown equivalent
    df, pq = rank_study(8, sd=0.03)
    f2 = verdicts(df, pq)[2]
    assert f2["verdict"] == INCONCLUSIVE, f2["reason"]
    assert "not every pair shown equivalent" in f2["reason"] and "only within +-" in f2["reason"]
    assert f2["evidence"]["smallest_margin_all_equivalent"] > 0.02
    assert not f2["evidence"]["significant_pairs"]


def test_a_truly_different_rank_does_not_hold():
    df, pq = rank_study(200)
    pq.checkpoints["r32-all-s42"][100] = noisy(pq.checkpoints["r32-all-s42"][100], 0.06, 0.01, seed=5)
    f2 = verdicts(df, pq)[2]
    assert f2["verdict"] == FAILS and "r=32" in f2["reason"]


def mlp_study(n: int, frac: float, sd: float) -> tuple[pd.DataFrame, PerQuery]:
    b = bm25(n)
    full = noisy(b, 0.15, 0.04, seed=3)
    mlp = {q: b[q] + frac * (full[q] - b[q]) for q in b}
    mlp = noisy(mlp, 0.0, sd, seed=4, center=True)
    runs = {REF: {"rank": 8}, "r8-mlp-s42": {"rank": 8, "components": "mlp"}}
    return table(runs), PerQuery("dl22", b, {REF: {100: full}, "r8-mlp-s42": {100: mlp}}, role="test")


def test_a_fraction_truly_above_the_line_holds_by_non_inferiority_and_a_noisy_104pct_is_inconclusive():
    df, pq = mlp_study(300, 0.98, 0.01)
    f5 = verdicts(df, pq)[5]
    assert f5["verdict"] == HOLDS, f5["reason"]
    ev = f5["evidence"]["trained"]
    assert 0.9 < ev["recovered_fraction"] < 1.05 and ev["fraction_ci95"][0] > 0.9
    ni = next(v for k, v in f5["p_values"].items() if "non-inferiority" in k)
    assert ni["kind"] == "noninferiority" and ni["line"] == 0.9 and ni["p_adj"] <= 0.05
    # 104% of a gain measured with large query noise: the old rule said "holds" (not significantly below 90%)
    df, pq = mlp_study(40, 1.04, 0.25)
    f5 = verdicts(df, pq)[5]
    assert f5["verdict"] == INCONCLUSIVE, f5["reason"]
    ev = f5["evidence"]["trained"]
    assert ev["recovered_fraction"] > 0.9 and ev["fraction_ci95"][0] < 0.9 < ev["fraction_ci95"][1]
    assert "not shown >= 90%" in f5["reason"] and "could show at most" in f5["reason"]


def test_a_three_seed_grid_reports_n_seeds_and_the_seed_spread():
    n = 60
    b = bm25(n)
    gain = noisy(b, 0.12, 0.05, seed=2)
    runs, ck = {}, {}
    for comp, shift in (("all", 0.0), ("mha", -0.01), ("mlp", -0.03)):
        for s in (42, 43, 44):
            rid = f"r8-{comp}-s{s}"
            runs[rid] = {"rank": 8, "components": comp, "seed": s}
            ck[rid] = {100: noisy(gain, shift + 0.01 * (s - 43), 0.02, seed=s + len(comp))}
    pq = PerQuery("dl22", b, ck, role="test")
    f = verdicts(table(runs), pq)
    f3 = f[3]
    assert f3["n_seeds"] == 3
    cond = f3["evidence"]["conditions"]
    assert set(cond) == {"all", "mha", "mlp"}
    for c in cond.values():
        assert c["n_seeds"] == 3 and not c["single_run"] and set(c["seed_means"]) == {"s42", "s43", "s44"}
        assert c["sd"] > 0 and c["range"] == pytest.approx(max(c["seed_means"].values()) - min(c["seed_means"].values()),
                                                            abs=2e-4)
    t = f3["p_values"]["mha vs mlp"]
    assert t["n_seeds"] == [3, 3] and not t["single_run"]
    # a single-seed comparison says so
    one = {k: v for k, v in runs.items() if k.endswith("s42")}
    f3 = verdicts(table(one), PerQuery("dl22", b, {k: ck[k] for k in one}, role="test"))[3]
    assert f3["p_values"]["mha vs mlp"]["single_run"] and f3["n_seeds"] == 1


def test_seeds_widen_the_bootstrap_ci_when_the_seeds_disagree():
    b = bm25(50)
    a_same = {f"s{s}": noisy(b, 0.05, 0.02, seed=1) for s in range(3)}  # three identical seeds
    a_spread = {f"s{s}": noisy(b, 0.05 + 0.04 * (s - 1), 0.02, seed=1) for s in range(3)}
    narrow = paired("x", "a", a_same, "b", b)
    wide = paired("x", "a", a_spread, "b", b)
    assert narrow.delta == pytest.approx(wide.delta)
    assert (wide.ci95[1] - wide.ci95[0]) > 1.5 * (narrow.ci95[1] - narrow.ci95[0])


def test_without_a_test_set_no_verdict_rests_on_dev_and_disagreement_is_flagged():
    df, pq = rank_study(400)
    dev = dataclasses.replace(pq, role="dev")
    (f2,) = [f for f in evaluate_findings(df, dev, REF) if f["finding"] == 2]
    assert f2["verdict"] == INCONCLUSIVE and f2["verdict_dev"] == HOLDS and f2["role"] == "dev"
    assert "no test-set evidence" in f2["reason"]
    # dev says holds, test (a different truth) says does not hold: reported with a flag
    _, test = rank_study(200)
    test.checkpoints["r32-all-s42"][100] = noisy(test.checkpoints["r32-all-s42"][100], 0.06, 0.01, seed=5)
    (f2,) = [f for f in evaluate_findings(df, dev, REF, test=test) if f["finding"] == 2]
    assert f2["verdict"] == FAILS and f2["verdict_dev"] == HOLDS and f2["agree"] is False
    assert "dev and test disagree" in f2["reason"]
    # pooled: decided on dev + test queries together
    renamed = dataclasses.replace(test, bm25={f"t{q}": v for q, v in test.bm25.items()}, checkpoints={
        r: {st: {f"t{q}": v for q, v in sc.items()} for st, sc in c.items()} for r, c in test.checkpoints.items()})
    (f2,) = [f for f in evaluate_findings(df, dev, REF, test=renamed, rules=VerdictRules(decide_on="pooled"))
             if f["finding"] == 2]
    assert f2["role"] == "dev+test" and f2["n_queries"] == 600


def test_exploratory_findings_are_left_out_of_the_study_wide_family():
    df, pq = rank_study(400)
    all_conf = verdicts(df, pq)
    assert all_conf[2]["family_size"] == 12 and all_conf[2]["p_values"]["[fixed] r=1 vs r=2"]["confirmatory"]
    only5 = verdicts(df, pq, rules=VerdictRules(confirmatory=(5,)))
    assert only5[5]["family_size"] == 0 and not only5[2]["confirmatory"]
    f2 = {k: v for k, v in only5[2]["p_values"].items() if not k.startswith("gate")}
    assert len(f2) == 12 and all(not v["confirmatory"] and v["family"].startswith("exploratory") for v in f2.values())
    assert only5[2]["verdict"] == HOLDS  # an exploratory verdict, labelled so


# ------------------------------------------------------------------------------------------- the statistics
def test_tost_is_the_larger_one_sided_p_and_matches_the_90pct_interval():
    rng = np.random.default_rng(0)
    d = rng.normal(0.005, 0.03, 80)
    p, lo, hi = tost(d, 0.02)
    p1 = stats.ttest_1samp(d, -0.02, alternative="greater").pvalue
    p2 = stats.ttest_1samp(d, 0.02, alternative="less").pvalue
    assert p == pytest.approx(max(p1, p2))
    assert (p <= 0.05) == (-0.02 < lo and hi < 0.02)


def test_detectable_effect_has_80pct_power_and_the_normal_limit():
    sd, n = 0.1, 97
    delta = detectable_effect(sd, n)
    df, crit, nc = n - 1, stats.t.ppf(0.975, n - 1), delta / (sd / math.sqrt(n))
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.80, abs=1e-4)
    big = detectable_effect(sd, 100_000)
    assert big == pytest.approx((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / math.sqrt(100_000), rel=1e-3)


def test_bootstrap_is_deterministic_and_paired():
    b = bm25(30)
    a = noisy(b, 0.05, 0.0001, seed=3)
    m1 = boot_means([{"x": a}, {"y": b}], sorted(b), 500, "k")
    m2 = boot_means([{"x": a}, {"y": b}], sorted(b), 500, "k")
    assert np.array_equal(m1, m2)
    d = m1[:, 0] - m1[:, 1]  # the same queries drawn for both sides: the difference barely moves
    assert d.std() < 0.001 and abs(d.mean() - 0.05) < 0.001


def test_noninferiority_of_a_fraction_known_by_construction():
    b = bm25(200)
    full = noisy(b, 0.2, 0.02, seed=1)
    part = {q: b[q] + 0.95 * (full[q] - b[q]) for q in b}
    t = noninferior("f", part, full, b)
    assert t.extra["fraction"] == pytest.approx(0.95) and t.p < 1e-6 and t.ci95[0] < 0.95 < t.ci95[1]
    t = noninferior("f", {q: b[q] + 0.5 * (full[q] - b[q]) for q in b}, full, b)
    assert t.p > 0.99


def test_benjamini_hochberg_matches_scipy_and_holm_is_the_default():
    p = [0.001, 0.02, 0.03, 0.2, math.nan]
    bh = adjust(p, "bh")
    assert bh[:4] == pytest.approx(list(stats.false_discovery_control(p[:4])))
    assert math.isnan(bh[4])
    with pytest.raises(ValueError):
        adjust(p, "bonferroni-ish")


def test_finding_1_on_the_test_set_rises_between_saved_checkpoints_with_the_trend_from_the_dev_curve():
    """Test sets score only frozen, saved checkpoints (eval.test_steps); the dense curve is scored during training
    on dev. Finding 1 is decided by the rise on test, its trend read from the dev curve and labelled so."""
    n = 80
    b = bm25(n)
    runs = {REF: {"rank": 8}}
    test = PerQuery("dl22", b, {REF: {250: noisy(b, 0.02, 0.03, 1), 1000: noisy(b, 0.10, 0.03, 2)}}, role="test")
    dev_b = {f"d{q}": v for q, v in bm25(60).items()}
    dev = PerQuery("dl19", dev_b, {REF: {250: noisy(dev_b, 0.02, 0.03, 3), 1000: noisy(dev_b, 0.1, 0.03, 4)}},
                   curve={REF: {s: noisy(dev_b, 0.01 * i, 0.03, 10 + i) for i, s in enumerate(range(100, 1001, 100))}})
    f1 = {f["finding"]: f for f in evaluate_findings(table(runs), dev, REF, test=test)}[1]
    assert f1["verdict"] == HOLDS and f1["role"] == "test", f1["reason"]
    assert "dev sets' dense curve (10 points)" in f1["reason"]
    assert f1["evidence"]["trend_points"] == 10 and f1["evidence"]["checkpoints"] == 2


def test_the_curve_figure_names_the_depth_each_point_was_reranked_at(tmp_path, monkeypatch):
    """The dense curve (top-20) and the checkpoints (top-50) are scored at different depths: the legend says which,
    read from the reference run's eval config (defaults where silent); pooled sets keep a depth only if shared."""
    import lorank.report.conditions as conditions
    from lorank.report.findings_data import eval_depths
    from lorank.report.findings_model import pooled

    class Ref:
        train_config = {"eval": {"sets": ["dl19"], "depth": 50, "curve": {"every": 125, "depth": 20}}}

    assert eval_depths(Ref) == {"depth": 50, "curve_depth": 20}
    Ref.train_config = {"eval": {"sets": ["dl19"], "curve": {"every": 125}}}
    assert eval_depths(Ref) == {"depth": 100, "curve_depth": 20}  # EvalSpec's and CurveSpec's defaults
    Ref.train_config = {}
    assert eval_depths(Ref) == {"depth": 100, "curve_depth": None}

    b = bm25(40)
    runs = {REF: {"rank": 8, "components": "all", "seed": 42}}
    dev = PerQuery("dl19", b, {REF: {250: noisy(b, 0.02, 0.03, 3), 1000: noisy(b, 0.1, 0.03, 4)}},
                   curve={REF: {s: noisy(b, 0.01 * i, 0.03, 10 + i) for i, s in enumerate(range(125, 1001, 125))}},
                   depth=50, curve_depth=20)
    other = PerQuery("dl20", {f"x{q}": v for q, v in b.items()}, role="dev", depth=50, curve_depth=30)
    both = pooled([dev, other])
    assert (both.depth, both.curve_depth) == (50, None)
    unjudged = PerQuery("dl21", {}, role="dev")  # a set without qrels knows no depth: it does not erase the others'
    assert (pooled([dev, unjudged]).depth, pooled([dev, unjudged]).curve_depth) == (50, 20)
    labels = []
    monkeypatch.setattr(conditions, "save_figure",
                        lambda fig, out: labels.extend(t.get_text() for t in fig.axes[0].get_legend().get_texts()))
    conditions.curve_figure(runs, REF, [dev], tmp_path / "c.png")
    assert any(t.startswith("dev curve (BM25 top-20, 1 seeds") for t in labels), labels
    assert "dev checkpoint (dl19, BM25 top-50), 95% CI" in labels, labels
    # the conditions' panels too (finding 3 here: the components trained separately)
    # and each panel's BM25 value on its own line (dev and test differ; the legend once held the last panel's only)
    panels = {}
    monkeypatch.setattr(conditions, "save_figure", lambda fig, out: panels.update(
        {a.get_title(): [x.get_text() for x in a.texts] for a in fig.axes}))
    runs_3 = {f"r8-{c}-s42": {"rank": 8, "components": c, "seed": 42} for c in ("all", "mha", "mlp")}
    dev_3 = PerQuery("dl19", b, {rid: {1000: noisy(b, 0.05, 0.03, i)} for i, rid in enumerate(runs_3)}, depth=50)
    b22 = {f"t{q}": v - 0.2 for q, v in b.items()}
    test_3 = PerQuery("dl22", b22, {rid: {1000: noisy(b22, 0.05, 0.03, i)} for i, rid in enumerate(runs_3)},
                      role="test", depth=50)
    conditions.write_condition_figures(runs_3, "r8-all-s42", [dev_3, test_3], tmp_path)
    assert {"dev: dl19, BM25 top-50", "test: dl22, BM25 top-50"} <= set(panels), panels
    for title, pq in (("dev: dl19, BM25 top-50", dev_3), ("test: dl22, BM25 top-50", test_3)):
        assert f"BM25 {np.mean(list(pq.bm25.values())):.3f}" in panels[title], panels[title]
