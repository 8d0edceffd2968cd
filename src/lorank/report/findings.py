"""The paper's five findings tested on a study's numbers: holds / does not hold / inconclusive, with the deciding
figures and paired t-test p-values (Holm) over queries.

Pure functions over the study's results table (``lorank.study.load_results``: which runs exist, their axes and
checkpoint steps) and per-query nDCG@10 on the main evaluation set (:class:`PerQuery`, read from the TREC runs the
study writes by :mod:`lorank.report.findings_data`). Nothing here reads files.

Decision rules (alpha = 0.05; every test is a two-sided paired t-test over the queries both sides share,
``lorank.score.significance.paired_ttest``; the tests of one finding form one Holm family; "significantly above"
means Holm-adjusted p <= alpha with the difference in that direction):

0. **Gate** (applies to every finding). The reference run's final checkpoint must be significantly above BM25 on
   the main eval set (one test, no correction). If it is not, the adapter has not learnt to rank beyond its first
   stage, so differences between runs, checkpoints and ablations (and every "% recovered") are noise: every
   verdict is *inconclusive* with that reason (the verdict the numbers would give is kept as ``verdict_ignoring_gate``).
1. **Quality rises steadily across checkpoints.** On the reference run: the last checkpoint significantly above
   the first (Holm over the last-vs-first tests of every run) and Spearman rho(step, mean nDCG@10) >= 0.5 (needs
   >= 3 checkpoints). Does not hold: the last checkpoint significantly below the first, rho < 0, or a significant
   rise with rho < 0.5 (it rises, but not steadily). Otherwise inconclusive.
2. **Ranks 1, 2, 8, 32 reach comparable quality.** Final checkpoints of the runs that differ from the reference only
   in rank, every pair tested (Holm over the pairs). Holds: no pair significant and the spread (max - min mean
   nDCG@10) <= 0.02. Does not hold: some pair significant. Inconclusive: no pair significant but the spread is
   larger than 0.02 (too few queries to tell), or fewer than two ranks.
3. **MHA-only and MLP-only both improve ranking, MHA more than MLP, both together best.** The runs trained with
   components mha / mlp / all (otherwise like the reference), against BM25: five tests, mha > BM25, mlp > BM25,
   mha > mlp, all > mha, all > mlp. Without trained mha/mlp runs, the same five tests on the reference adapter's
   inference-time ablation (mha-only, mlp-only, full) with the LoRA-off configuration ("none") as the baseline.
   Holds: all five significant in the claimed direction. Does not hold: any of them significant in the opposite
   direction. Otherwise inconclusive.
4. **Layers 5-15 contribute most; up and gate projections matter more than down.** (a) Layer windows of the
   reference adapter kept alone: "only L5-15" against every other window of the same width (11 layers). Holds:
   5-15 has the highest mean and is significantly above every equal-width window that shares no layer with it
   (above at least one window when all overlap). Fails: another window significantly above 5-15. (b) Projections:
   kept alone (only up > only down, only gate > only down) and removed (without up < without down, without
   gate < without down). Holds: both of the kept-alone pair or both of the removed pair significant in the claimed
   direction. Fails: any of the four significant the other way. Finding 4 holds when (a) and (b) hold, does not
   hold when either fails, else inconclusive. Leave-one-layer-out drops inside and outside 5-15 are reported as
   figures only.
5. **MLP-only updates recover up to 98% of the full adapter's performance.** Fraction of the full adapter's gain
   recovered: (MLP-only - baseline) / (full - baseline), for the trained MLP-only run (baseline BM25) and for the
   inference-time "mlp-only" ablation (baseline LoRA off, whose own gain, full vs none, must be significant).
   Per query, the 90% line is base + 0.90 x (full - base). A source holds when the fraction is >= 0.90 and
   MLP-only is significantly above its baseline; it does not hold when MLP-only is significantly below the 90%
   line; otherwise inconclusive. (MLP-only may be significantly below the full adapter and still hold: finding 3
   says both together are best.) "Up to": the finding holds when one source holds, does not hold when every
   available source does not, else inconclusive.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from lorank.score.significance import holm, paired_ttest

ALPHA = 0.05
RHO_MIN = 0.5  # finding 1: Spearman rho(step, nDCG@10) for a "steady" rise
SPREAD_MAX = 0.02  # finding 2: max - min mean nDCG@10 across ranks for "comparable"
RECOVER_MIN = 0.90  # finding 5: fraction of the full adapter's gain recovered
TARGET_WINDOW = (5, 15)  # finding 4
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
MEASURE = "ndcg_cut_10"

CLAIMS = {
    1: "Quality rises steadily across checkpoints (reported every 50 steps).",
    2: "LoRA ranks 1, 2, 8 and 32 reach comparable quality.",
    3: "MHA-only and MLP-only updates both improve ranking, MHA more than MLP, and both together are best.",
    4: "Layers 5-15 contribute most; the up and gate projections matter more than down.",
    5: "MLP-only updates recover up to 98% of the full adapter's performance.",
}
RULES = {
    1: "reference run: last checkpoint significantly above the first (Holm over runs) and Spearman "
       f"rho(step, nDCG@10) >= {RHO_MIN}",
    2: f"no pair of ranks significantly different (Holm over pairs) and spread <= {SPREAD_MAX} nDCG@10",
    3: "mha > base, mlp > base, mha > mlp, all > mha, all > mlp, each significant (Holm over the five); base = BM25 "
       "for trained runs, LoRA off for inference-time ablations",
    4: "only L5-15 top among equal-width windows and significantly above the non-overlapping ones; up and gate "
       "significantly more important than down (kept alone or removed); Holm over the finding's tests",
    5: f"(MLP-only - base) / (full - base) >= {RECOVER_MIN:.0%} with MLP-only significantly above base; does not "
       f"hold when significantly below the {RECOVER_MIN:.0%} line (trained vs BM25 or inference-time vs LoRA off)",
}

Scores = dict[str, float]  # qid -> nDCG@10


@dataclass
class PerQuery:
    """Per-query nDCG@10 on the study's main evaluation set."""

    eval_set: str
    bm25: Scores
    checkpoints: dict[str, dict[int, Scores]] = field(default_factory=dict)  # run_id -> step -> qid -> value
    ablations: dict[str, Scores] = field(default_factory=dict)  # the reference adapter's ablation configs


@dataclass
class Test:
    name: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    n: int
    p: float
    p_holm: float = math.nan

    @property
    def delta(self) -> float:
        return self.mean_a - self.mean_b

    def above(self) -> bool:
        """`a` significantly above `b` (Holm-adjusted)."""
        return not math.isnan(self.p_holm) and self.p_holm <= ALPHA and self.delta > 0

    def below(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm <= ALPHA and self.delta < 0

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "mean_a": _r(self.mean_a), "mean_b": _r(self.mean_b),
                "delta": _r(self.delta), "n_queries": self.n, "p": _sig(self.p), "p_holm": _sig(self.p_holm),
                "significant": self.above() or self.below()}


def _r(x: float, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def _sig(x: float) -> float | None:
    """A p-value to 4 significant digits (tiny p-values stay distinguishable from 0)."""
    return None if x is None or math.isnan(x) else float(f"{x:.4g}")


def _mean(s: Scores) -> float:
    return math.fsum(s.values()) / len(s) if s else math.nan


def paired(name: str, a_name: str, a: Scores, b_name: str, b: Scores) -> Test:
    """An uncorrected paired test of `a` vs `b` over the queries both have."""
    qids = sorted(set(a) & set(b))
    xa, xb = [a[q] for q in qids], [b[q] for q in qids]
    mean_a = math.fsum(xa) / len(qids) if qids else math.nan
    mean_b = math.fsum(xb) / len(qids) if qids else math.nan
    return Test(name, a_name, b_name, mean_a, mean_b, len(qids), paired_ttest(xa, xb) if qids else math.nan)


def holm_family(tests: Iterable[Test]) -> list[Test]:
    """Fill `p_holm` of every test: one Holm-Bonferroni family."""
    tests = list(tests)
    adjusted, _ = holm([t.p for t in tests], ALPHA)
    for t, a in zip(tests, adjusted):
        t.p_holm = a
    return tests


# --------------------------------------------------------------------------------------------- the study's runs
_AXES = ("model", "rank", "components", "projections", "layers", "variant", "seed", "alpha", "dropout")


def _runs(results: Any, eval_set: str) -> dict[str, dict[str, Any]]:
    """run_id -> axes, from the checkpoint rows of the results table on the main eval set."""
    if results is None or not len(results):
        return {}
    ck = results[(results["source"] == "checkpoint") & (results["eval_set"] == eval_set)]
    out: dict[str, dict[str, Any]] = {}
    for _, row in ck.iterrows():
        out.setdefault(str(row["run_id"]), {k: _norm(row.get(k)) for k in _AXES if k in row.index})
    return out


def _norm(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.generic):
        return _norm(v.item())
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return str(v) if not isinstance(v, (int, float)) else v


def _siblings(runs: dict[str, dict[str, Any]], ref: str, vary: str) -> dict[str, str]:
    """value of `vary` -> run_id, for the runs equal to the reference in every other axis."""
    base = runs[ref]
    out = {}
    for rid, ax in runs.items():
        if all(ax.get(k) == base.get(k) for k in _AXES if k != vary):
            out.setdefault(str(ax.get(vary)), rid)
    return out


def _final(pq: PerQuery, rid: str) -> Scores | None:
    steps = pq.checkpoints.get(rid) or {}
    return steps[max(steps)] if steps else None


# --------------------------------------------------------------------------------------------- findings
def _result(n: int, verdict: str, reason: str, evidence: dict[str, Any], tests: list[Test]) -> dict[str, Any]:
    assert verdict in VERDICTS, verdict
    return {"finding": n, "claim": CLAIMS[n], "verdict": verdict, "reason": reason, "rule": RULES[n],
            "evidence": evidence, "p_values": {t.name: t.to_dict() for t in tests}}


def finding_1(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    tests, per_run = [], {}
    for rid in runs:
        steps = pq.checkpoints.get(rid) or {}
        if len(steps) < 2:
            continue
        first, last = min(steps), max(steps)
        tests.append(paired(f"{rid}: step {last} vs step {first}", f"step {last}", steps[last], f"step {first}",
                            steps[first]))
        xs = sorted(steps)
        rho = _spearman(xs, [_mean(steps[s]) for s in xs]) if len(xs) >= 3 else math.nan
        per_run[rid] = {"first_step": first, "last_step": last, "ndcg_first": _r(_mean(steps[first])),
                        "ndcg_last": _r(_mean(steps[last])), "checkpoints": len(xs), "spearman_rho": _r(rho)}
    holm_family(tests)
    if ref not in per_run:
        return _result(1, INCONCLUSIVE, "the reference run has fewer than two evaluated checkpoints",
                       {"runs": per_run}, tests)
    t = next(x for x in tests if x.name.startswith(f"{ref}:"))
    rho = per_run[ref]["spearman_rho"]
    for rid, info in per_run.items():
        tt = next(x for x in tests if x.name.startswith(f"{rid}:"))
        info["rises_significantly"] = tt.above()
    ev = {"reference": ref, **{k: per_run[ref][k] for k in per_run[ref]}, "runs": per_run,
          "runs_rising_significantly": sum(i["rises_significantly"] for i in per_run.values()), "runs_total": len(per_run)}
    fig = (f"nDCG@10 {per_run[ref]['ndcg_first']} (step {per_run[ref]['first_step']}) -> {per_run[ref]['ndcg_last']} "
           f"(step {per_run[ref]['last_step']}), Spearman rho {rho}")
    if t.below():
        return _result(1, FAILS, f"{fig}: the last checkpoint is significantly below the first", ev, tests)
    if rho is None:
        return _result(1, INCONCLUSIVE, f"{fig}: fewer than 3 checkpoints, no trend can be measured", ev, tests)
    if rho < 0:
        return _result(1, FAILS, f"{fig}: quality falls across checkpoints", ev, tests)
    if t.above() and rho >= RHO_MIN:
        return _result(1, HOLDS, f"{fig}: significant rise, monotone trend", ev, tests)
    if t.above():
        return _result(1, FAILS, f"{fig}: it rises, but not steadily (rho < {RHO_MIN})", ev, tests)
    return _result(1, INCONCLUSIVE, f"{fig}: the rise from first to last checkpoint is not significant", ev, tests)


def finding_2(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    by_rank = {int(k): v for k, v in _siblings(runs, ref, "rank").items() if k.lstrip("-").isdigit()}
    finals = {k: _final(pq, rid) for k, rid in sorted(by_rank.items())}
    finals = {k: v for k, v in finals.items() if v}
    tests = [paired(f"r={a} vs r={b}", f"r={a}", finals[a], f"r={b}", finals[b])
             for i, a in enumerate(finals) for b in list(finals)[i + 1:]]
    holm_family(tests)
    means = {f"r={k}": _r(_mean(v)) for k, v in finals.items()}
    if len(finals) < 2:
        return _result(2, INCONCLUSIVE, "fewer than two ranks trained like the reference", {"means": means}, tests)
    spread = max(means.values()) - min(means.values())
    ev = {"means": means, "spread": _r(spread), "spread_max": SPREAD_MAX,
          "significant_pairs": [t.name for t in tests if t.above() or t.below()]}
    fig = "final nDCG@10 " + ", ".join(f"{k} {v}" for k, v in means.items()) + f"; spread {spread:.4f}"
    if ev["significant_pairs"]:
        return _result(2, FAILS, f"{fig}; significantly different: {', '.join(ev['significant_pairs'])}", ev, tests)
    if spread <= SPREAD_MAX:
        return _result(2, HOLDS, f"{fig}: no pair significantly different, spread <= {SPREAD_MAX}", ev, tests)
    return _result(2, INCONCLUSIVE, f"{fig}: no pair significant, but the spread exceeds {SPREAD_MAX} (too few "
                   "queries to call them comparable)", ev, tests)


def finding_3(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    comp = _siblings(runs, ref, "components")
    trained = {c: _final(pq, comp[c]) for c in ("all", "mha", "mlp") if c in comp}
    if all(trained.get(c) for c in ("all", "mha", "mlp")):
        source, base_name, base = "trained separately", "BM25", pq.bm25
        s = trained
    elif all(k in pq.ablations for k in ("full", "none", "mha-only", "mlp-only")):
        source, base_name, base = "inference-time ablation of the reference adapter", "LoRA off", pq.ablations["none"]
        s = {"all": pq.ablations["full"], "mha": pq.ablations["mha-only"], "mlp": pq.ablations["mlp-only"]}
    else:
        return _result(3, INCONCLUSIVE, "neither trained MHA-only/MLP-only runs nor a components ablation", {}, [])
    tests = holm_family([paired(f"mha vs {base_name}", "mha", s["mha"], base_name, base),
                         paired(f"mlp vs {base_name}", "mlp", s["mlp"], base_name, base),
                         paired("mha vs mlp", "mha", s["mha"], "mlp", s["mlp"]),
                         paired("all vs mha", "all", s["all"], "mha", s["mha"]),
                         paired("all vs mlp", "all", s["all"], "mlp", s["mlp"])])
    ev = {"source": source, "baseline": base_name, **{k: _r(_mean(v)) for k, v in s.items()},
          base_name: _r(_mean(base))}
    if source.startswith("trained") and all(k in pq.ablations for k in ("full", "none", "mha-only", "mlp-only")):
        ev["inference_time"] = {k: _r(_mean(pq.ablations[k])) for k in ("full", "none", "mha-only", "mlp-only")}
    fig = (f"{source}: all {ev['all']}, mha {ev['mha']}, mlp {ev['mlp']}, {base_name} {ev[base_name]}")
    wrong = [t.name for t in tests if t.below()]
    if wrong:
        return _result(3, FAILS, f"{fig}; significantly the other way: {', '.join(wrong)}", ev, tests)
    if all(t.above() for t in tests):
        return _result(3, HOLDS, f"{fig}; all five comparisons significant as claimed", ev, tests)
    weak = [t.name for t in tests if not t.above()]
    return _result(3, INCONCLUSIVE, f"{fig}; not significant: {', '.join(weak)}", ev, tests)


_WINDOW = re.compile(r"^only L(\d+)-(\d+)$")
_PROJ = re.compile(r"^(only|without) (\S+)$")


def _proj_kind(name: str) -> str | None:
    short = name.split(".")[-1].replace("_proj", "")
    return short if short in ("up", "gate", "down") else None


def finding_4(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    ab = pq.ablations
    windows = {(int(m[1]), int(m[2])): k for k in ab if (m := _WINDOW.match(k))}
    target = windows.get(TARGET_WINDOW)
    width = TARGET_WINDOW[1] - TARGET_WINDOW[0]
    same = {w: k for w, k in windows.items() if w != TARGET_WINDOW and w[1] - w[0] == width}
    wtests = [paired(f"L5-15 vs L{a}-{b}", "only L5-15", ab[target], k, ab[k]) for (a, b), k in sorted(same.items())] \
        if target else []
    proj: dict[tuple[str, str], str] = {}
    for k in ab:
        m = _PROJ.match(k)
        if m and _proj_kind(m[2]):
            proj[(m[1], _proj_kind(m[2]))] = k
    ptests = []
    for p in ("up", "gate"):
        if ("only", p) in proj and ("only", "down") in proj:
            ptests.append(paired(f"only {p} vs only down", proj[("only", p)], ab[proj[("only", p)]],
                                 proj[("only", "down")], ab[proj[("only", "down")]]))
    for p in ("up", "gate"):  # removing p hurts more than removing down: (without down) - (without p) > 0
        if ("without", p) in proj and ("without", "down") in proj:
            ptests.append(paired(f"without down vs without {p}", proj[("without", "down")],
                                 ab[proj[("without", "down")]], proj[("without", p)], ab[proj[("without", p)]]))
    tests = holm_family(wtests + ptests)
    ev: dict[str, Any] = {"windows": {k: _r(_mean(ab[k])) for k in sorted(windows.values())},
                          "projections": {k: _r(_mean(ab[k])) for k in sorted(proj.values())}}
    # (a) layers
    if not target or not wtests:
        a_verdict, a_why = INCONCLUSIVE, ("no 'only L5-15' window" if not target else
                                          "no other window of the same width (11 layers)")
    else:
        top = max((k for k in windows.values() if ab[k]), key=lambda k: _mean(ab[k]))
        ev["top_window"] = top
        disjoint = [t for t, ((a, b), _) in zip(wtests, sorted(same.items())) if b < TARGET_WINDOW[0] or
                    a > TARGET_WINDOW[1]]
        must = disjoint or wtests
        if any(t.below() for t in wtests):
            a_verdict, a_why = FAILS, "a window of equal width is significantly above L5-15"
        elif top == target and (all(t.above() for t in must) if disjoint else any(t.above() for t in must)):
            a_verdict, a_why = HOLDS, "L5-15 is the best equal-width window and significantly above " + (
                "every window disjoint from it" if disjoint else "at least one other window")
        else:
            a_verdict, a_why = INCONCLUSIVE, (f"the best window is {top}" if top != target else
                                              "L5-15 is best but not significantly above the windows it must beat")
    loo = {int(k.split("L")[1]): _mean(ab["full"]) - _mean(v) for k, v in ab.items()
           if k.startswith("without L") and k[9:].isdigit() and "full" in ab}
    if loo:
        inside = [d for layer, d in loo.items() if TARGET_WINDOW[0] <= layer <= TARGET_WINDOW[1]]
        outside = [d for layer, d in loo.items() if not TARGET_WINDOW[0] <= layer <= TARGET_WINDOW[1]]
        ev["leave_one_out_mean_drop"] = {"layers 5-15": _r(sum(inside) / len(inside)) if inside else None,
                                         "other layers": _r(sum(outside) / len(outside)) if outside else None}
    # (b) projections
    kept = [t for t in ptests if t.name.startswith("only")]
    removed = [t for t in ptests if t.name.startswith("without")]
    if not ptests:
        b_verdict, b_why = INCONCLUSIVE, "no up/gate/down projection ablations (needs a gated MLP and the projections sweep)"
    elif any(t.below() for t in ptests):
        b_verdict, b_why = FAILS, "down is significantly more important than up or gate: " + ", ".join(
            t.name for t in ptests if t.below())
    elif (len(kept) == 2 and all(t.above() for t in kept)) or (len(removed) == 2 and all(t.above() for t in removed)):
        b_verdict, b_why = HOLDS, "up and gate both significantly more important than down"
    else:
        b_verdict, b_why = INCONCLUSIVE, "up/gate vs down not significant in both comparisons"
    ev.update(layers_verdict=a_verdict, projections_verdict=b_verdict)
    reason = f"layers: {a_verdict} ({a_why}); projections: {b_verdict} ({b_why})"
    verdict = HOLDS if a_verdict == b_verdict == HOLDS else FAILS if FAILS in (a_verdict, b_verdict) else INCONCLUSIVE
    return _result(4, verdict, reason, ev, tests)


def finding_5(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    comp = _siblings(runs, ref, "components")
    sources: list[tuple[str, Scores, Scores, Scores, str]] = []  # name, mlp, full, base, base name
    full_t, mlp_t = _final(pq, ref), (_final(pq, comp["mlp"]) if "mlp" in comp else None)
    if full_t and mlp_t:
        sources.append(("trained", mlp_t, full_t, pq.bm25, "BM25"))
    ab = pq.ablations
    if all(k in ab for k in ("full", "none", "mlp-only")):
        sources.append(("inference-time", ab["mlp-only"], ab["full"], ab["none"], "LoRA off"))
    if not sources:
        return _result(5, INCONCLUSIVE, "neither a trained MLP-only run nor an mlp-only ablation", {}, [])
    tests = []
    for name, mlp, full, base, bname in sources:
        line = {q: base[q] + RECOVER_MIN * (full[q] - base[q]) for q in set(full) & set(base)}
        tests.append(paired(f"{name}: mlp vs {RECOVER_MIN:.0%} of the way from {bname} to full", "mlp", mlp,
                            f"{RECOVER_MIN:.0%} line", line))
        tests.append(paired(f"{name}: mlp vs {bname}", "mlp", mlp, bname, base))
        if name == "inference-time":
            tests.append(paired(f"{name}: full vs {bname}", "full", full, bname, base))
    holm_family(tests)
    ev, verdicts, parts = {}, [], []
    for name, mlp, full, base, bname in sources:
        m, f, b = _mean(mlp), _mean(full), _mean(base)
        frac = (m - b) / (f - b) if abs(f - b) > 1e-12 else math.nan
        vs_line = next(t for t in tests if t.name.startswith(f"{name}: mlp vs {RECOVER_MIN:.0%}"))
        vs_base = next(t for t in tests if t.name == f"{name}: mlp vs {bname}")
        gain = next((t for t in tests if t.name == f"{name}: full vs {bname}"), None)
        ev[name] = {"mlp": _r(m), "full": _r(f), "baseline": bname, "baseline_ndcg": _r(b),
                    "recovered_fraction": _r(frac)}
        if gain is not None and not gain.above():
            v, why = INCONCLUSIVE, f"the full adapter is not significantly above {bname}"
        elif math.isnan(frac) or f <= b:
            v, why = INCONCLUSIVE, "no gain over the baseline to recover"
        elif vs_line.below():
            v, why = FAILS, f"recovers {frac:.0%}, significantly below {RECOVER_MIN:.0%}"
        elif frac >= RECOVER_MIN and vs_base.above():
            v, why = HOLDS, f"recovers {frac:.0%} (MLP-only significantly above {bname})"
        else:
            v, why = INCONCLUSIVE, f"recovers {frac:.0%}, not significantly below {RECOVER_MIN:.0%}" + (
                "" if vs_base.above() else f", MLP-only not significantly above {bname}")
        verdicts.append(v)
        parts.append(f"{name} (vs {bname}): {why}")
    verdict = HOLDS if HOLDS in verdicts else FAILS if all(v == FAILS for v in verdicts) else INCONCLUSIVE
    return _result(5, verdict, "; ".join(parts), ev, tests)


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy import stats

    if len(set(y)) < 2:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------- all five
def noise_gate(pq: PerQuery, ref_final: Scores | None) -> tuple[bool, str, Test | None]:
    """(passed, reason, test): the reference adapter significantly above BM25 on the main eval set."""
    if not ref_final or not pq.bm25:
        return False, "the reference run's final checkpoint or BM25 has no per-query data", None
    t = paired(f"gate: reference final vs BM25 ({pq.eval_set})", "reference", ref_final, "BM25", pq.bm25)
    t.p_holm = t.p  # a family of one
    fig = f"reference {t.mean_a:.4f} vs BM25 {t.mean_b:.4f} nDCG@10 on {pq.eval_set}, p={t.p:.3g}"
    if t.above():
        return True, fig, t
    return False, (f"the trained reference adapter is not significantly above BM25 ({fig}): differences between "
                   "runs, checkpoints and ablations, and the ablation percentages, are noise"), t


def evaluate_findings(results: Any, pq: PerQuery, reference: str) -> list[dict[str, Any]]:
    """The five findings as ``{finding, claim, verdict, reason, rule, evidence, p_values}`` dicts."""
    runs = _runs(results, pq.eval_set)
    if reference not in runs:  # the reference must be a trained run of the table
        runs[reference] = {}
    ok, why, gate = noise_gate(pq, _final(pq, reference))
    out = []
    for fn in (finding_1, finding_2, finding_3, finding_4, finding_5):
        f = fn(runs, pq, reference)
        if gate is not None:
            f["p_values"] = {gate.name: gate.to_dict(), **f["p_values"]}
        f["evidence"]["gate"] = {"passed": ok, "detail": why}
        if not ok:
            f["evidence"]["verdict_ignoring_gate"] = f["verdict"]
            f["evidence"]["reason_ignoring_gate"] = f["reason"]
            f["verdict"], f["reason"] = INCONCLUSIVE, why
        out.append(f)
    return out


def figures_text(f: dict[str, Any]) -> str:
    """The deciding figures of one finding, one line."""
    return f["reason"] if f["evidence"].get("gate", {}).get("passed", True) else (
        f"{f['reason']} [numbers: {f['evidence'].get('reason_ignoring_gate', '')}]")


def p_text(f: dict[str, Any]) -> str:
    return "; ".join(f"{k}: p={_fmt_p(v['p_holm'])}" for k, v in f["p_values"].items()) or "-"


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:.3g}"


def findings_markdown(findings: list[dict[str, Any]], title: str | None = None) -> str:
    """The findings as a Markdown table: finding, the paper's claim, verdict, deciding figures, p-values (Holm)."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| # | the paper's claim | this study | deciding figures | p-values (Holm) |", "|---|---|---|---|---|"]
    for f in findings:
        cells = [str(f["finding"]), f["claim"], f"**{f['verdict']}**", figures_text(f), p_text(f)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"
