"""The five decision rules of :mod:`lorank.report.findings`, one function each, and the selection of the runs
they compare (the reference's siblings that differ in one axis). The rules themselves are stated in the
docstring of :mod:`lorank.report.findings`. Pure: nothing here reads files."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lorank.ablate.windows import config_window, window_config, window_label
from lorank.report.findings_model import (DEFAULT_RULES, FAILS, HOLDS, INCONCLUSIVE, RHO_MIN, PerQuery, Scores, Test,
                                          VerdictRules, finding_4_rule, holm_family, noninferior, paired, result,
                                          rounded, side_mean, spearman)
from lorank.evaluation.stats import Side, as_side, common_queries, matrix

_AXES = ("model", "rank", "components", "projections", "layers", "variant", "seed", "alpha", "dropout",
         "alpha_policy")


@dataclass
class Ctx:
    """How one evaluation of the rules corrects its tests: on the first pass (``adjusted`` None) each finding's
    tests are Holm-corrected within the finding while the confirmatory ones are collected; on the second, a
    confirmatory test takes its p-value adjusted study-wide (``adjusted``: "finding:test name" -> p), an
    exploratory one keeps its finding's Holm family."""

    rules: VerdictRules = DEFAULT_RULES
    adjusted: dict[str, float] | None = None

    def family(self, n: int, tests: list[Test], confirmatory: bool = True) -> list[Test]:
        conf = confirmatory and n in self.rules.confirmatory
        own = []  # corrected within the finding: exploratory tests, the first pass, and figures behind a failed gate
        for t in tests:
            t.alpha, t.confirmatory = self.rules.alpha, conf
            key = f"{n}:{t.name}"
            if conf and self.adjusted is not None and key in self.adjusted:
                t.p_adj, t.family = self.adjusted[key], f"study-wide ({self.rules.correction})"
            else:
                own.append(t)
        holm_family(own)
        for t in own:
            if not conf:
                t.family = f"exploratory: finding {n} (Holm)"
            elif self.adjusted is not None:  # evidence the verdict was not decided on (behind a failed gate)
                t.confirmatory, t.family = False, f"not decided on: finding {n} (Holm)"
        return tests

    def test(self, *args: Any, **kw: Any) -> Test:
        return paired(*args, rules=self.rules, **kw)


def study_runs(results: Any, eval_set: str | tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """run_id -> axes, from the checkpoint (and curve) rows of the results table. A run's axes do not depend on the
    set: a view's rules find which runs it has per-query numbers for (a test view has only final checkpoints)."""
    if results is None or not len(results):
        return {}
    ck = results[results["source"].isin(["checkpoint", "curve"])]
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


def condition_key(ax: dict[str, Any], skip: tuple[str, ...] = ()) -> tuple:
    return tuple((k, ax.get(k)) for k in _AXES if k != "seed" and k not in skip)


def _condition(runs: dict[str, dict[str, Any]], rid: str) -> list[str]:
    """The runs of `rid`'s condition: equal in every axis but the seed (the run itself first)."""
    if rid not in runs:
        return [rid]
    key = condition_key(runs[rid])
    return [rid] + [r for r, ax in runs.items() if r != rid and condition_key(ax) == key]


def _siblings(runs: dict[str, dict[str, Any]], ref: str, vary: str, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """value of `vary` -> the run ids of that condition (its seeds), for the conditions equal to the reference's in
    every other axis (but the seed and the axes in `skip`)."""
    base = condition_key(runs[ref], (vary, *skip))
    out: dict[str, list[str]] = {}
    for rid, ax in runs.items():
        if condition_key(ax, (vary, *skip)) == base:
            out.setdefault(str(ax.get(vary)), []).append(rid)
    ref_value = str(runs[ref].get(vary))
    if ref_value in out:  # the reference run first
        out[ref_value] = _condition(runs, ref)
    return out


def _seed_label(runs: dict[str, dict[str, Any]], rid: str) -> str:
    seed = runs.get(rid, {}).get("seed")
    return f"s{seed}" if seed is not None else rid


def final_scores(pq: PerQuery, rid: str) -> Scores | None:
    steps = pq.checkpoints.get(rid) or {}
    return steps[max(steps)] if steps else None


def final_side(pq: PerQuery, runs: dict[str, dict[str, Any]], rids: list[str]) -> Side:
    """One replicate per run (seed) of the condition: its last evaluated checkpoint."""
    out: Side = {}
    for rid in rids:
        sc = final_scores(pq, rid)
        if sc:
            out[_seed_label(runs, rid) if _seed_label(runs, rid) not in out else rid] = sc
    return out


def spread(side: Side) -> dict[str, Any]:
    """The between-seed spread of a condition's mean (each seed's mean over the queries all seeds share)."""
    qids = common_queries(side)
    if not qids:
        return {"n_seeds": len(side)}
    per = {k: float(np.mean([sc[q] for q in qids])) for k, sc in side.items()}
    vals = list(per.values())
    return {"n_seeds": len(side), "mean": rounded(float(np.mean(vals))), "seed_means": {k: rounded(v) for k, v in per.items()},
            "sd": rounded(float(np.std(vals, ddof=1))) if len(vals) > 1 else None,
            "range": rounded(max(vals) - min(vals)) if len(vals) > 1 else None,
            "single_run": len(side) == 1}


def _power_note(tests: list[Test]) -> str:
    """What the non-significant difference tests could have detected at 80% power."""
    parts = [f"{t.name} (delta {t.delta:+.3f}, 95% CI [{t.ci95[0]:+.3f}, {t.ci95[1]:+.3f}], detectable at 80% power: "
             f"{t.extra['detectable_at_80pct_power']:.3f})" for t in tests
             if t.kind == "difference" and not (t.above() or t.below()) and "detectable_at_80pct_power" in t.extra]
    return "; ".join(parts)


def finding_1(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str, ctx: Ctx = Ctx()) -> dict[str, Any]:
    conds: dict[tuple, list[str]] = {}
    for rid, ax in runs.items():
        conds.setdefault(condition_key(ax), []).append(rid)
    ref_key = condition_key(runs[ref]) if ref in runs else None
    ref_tests, other_tests, per_cond = [], [], {}
    for key, rids in conds.items():
        if key == ref_key:
            rids = _condition(runs, ref)
        steps_by = [pq.checkpoints.get(r) or {} for r in rids]
        shared = sorted(set.intersection(*(set(s) for s in steps_by))) if steps_by and all(steps_by) else []
        if len(shared) < 2:
            continue
        side_at = {st: {_seed_label(runs, r): pq.checkpoints[r][st] for r in rids} for st in shared}
        first, last = shared[0], shared[-1]
        name = rids[0] if len(rids) == 1 else f"{rids[0]} (+{len(rids) - 1} seeds)"
        t = ctx.test(f"{name}: step {last} vs step {first}", f"step {last}", side_at[last], f"step {first}",
                     side_at[first], joint=True)
        (ref_tests if key == ref_key else other_tests).append(t)
        # the dense curve (cheap top-k evaluations), where every seed has it, for the trend
        curve_by = [pq.curve.get(r) or {} for r in rids]
        cshared = sorted(set.intersection(*(set(c) for c in curve_by))) if curve_by and all(curve_by) else []
        if len(cshared) >= 3:
            pts = {st: side_mean({_seed_label(runs, r): pq.curve[r][st] for r in rids}) for st in cshared}
            trend_source = (f"{pq.curve_role} sets' " if pq.curve_role else "") + f"dense curve ({len(cshared)} points)"
        else:
            pts = {st: side_mean(side_at[st]) for st in shared}
            trend_source = f"checkpoints ({len(shared)})"
        xs = sorted(pts)
        rho = spearman(xs, [pts[x] for x in xs]) if len(xs) >= 3 else math.nan
        per_cond[rids[0]] = {"first_step": first, "last_step": last, "ndcg_first": rounded(side_mean(side_at[first])),
                             "ndcg_last": rounded(side_mean(side_at[last])), "checkpoints": len(shared),
                             "trend_points": len(xs), "trend_source": trend_source, "spearman_rho": rounded(rho),
                             "n_seeds": len(rids), "test": t.name}
    ctx.family(1, ref_tests)
    ctx.family(1, other_tests, confirmatory=False)
    tests = ref_tests + other_tests
    if not ref_tests:
        return result(1, INCONCLUSIVE, "the reference run has fewer than two evaluated checkpoints",
                      {"runs": per_cond}, tests)
    t = ref_tests[0]
    info = next(v for v in per_cond.values() if v["test"] == t.name)
    rho = info["spearman_rho"]
    for v in per_cond.values():
        tt = next(x for x in tests if x.name == v["test"])
        v["rises_significantly"] = tt.above()
    ev = {"reference": ref, **info, "runs": per_cond,
          "runs_rising_significantly": sum(v["rises_significantly"] for v in per_cond.values()),
          "runs_total": len(per_cond)}
    fig = (f"nDCG@10 {info['ndcg_first']} (step {info['first_step']}) -> {info['ndcg_last']} (step {info['last_step']}; "
           f"delta {t.delta:+.3f}, 95% CI [{t.ci95[0]:+.3f}, {t.ci95[1]:+.3f}]), Spearman rho {rho} over the "
           f"{info['trend_source']}")
    if t.below():
        return result(1, FAILS, f"{fig}: the last checkpoint is significantly below the first", ev, tests)
    if rho is None:
        return result(1, INCONCLUSIVE, f"{fig}: fewer than 3 points, no trend can be measured", ev, tests)
    if rho < 0:
        return result(1, FAILS, f"{fig}: quality falls across checkpoints", ev, tests)
    if t.above() and rho >= RHO_MIN:
        return result(1, HOLDS, f"{fig}: significant rise, monotone trend", ev, tests)
    if t.above():
        return result(1, FAILS, f"{fig}: it rises, but not steadily (rho < {RHO_MIN})", ev, tests)
    return result(1, INCONCLUSIVE, f"{fig}: the rise is not significant; {_power_note([t])}", ev, tests)


def _rank_arms(runs: dict[str, dict[str, Any]], ref: str) -> dict[str, dict[int, list[str]]]:
    """alpha policy -> rank -> the runs (seeds) of that rank, among the conditions like the reference's but for rank
    and alpha: a fixed-alpha run must have the reference's alpha, a scale or rsLoRA run has the alpha its policy
    gives. The reference condition belongs to every arm (at its rank the policies give the same alpha)."""
    sib = _siblings(runs, ref, "rank", skip=("alpha", "alpha_policy"))
    ref_rank, ref_alpha = int(runs[ref]["rank"]), runs[ref].get("alpha")
    arms: dict[str, dict[int, list[str]]] = {}
    for value, rids in sib.items():
        if not value.lstrip("-").isdigit() or int(value) == ref_rank:
            continue
        for rid in rids:
            pol = str(runs[rid].get("alpha_policy") or "fixed")
            if pol == "fixed" and runs[rid].get("alpha") != ref_alpha:
                continue
            arms.setdefault(pol, {}).setdefault(int(value), []).append(rid)
    arms = arms or {"fixed": {}}
    for a in arms.values():
        a[ref_rank] = _condition(runs, ref)
    return {p: dict(sorted(a.items())) for p, a in arms.items()}


def finding_2(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str, ctx: Ctx = Ctx()) -> dict[str, Any]:
    arms = _rank_arms(runs, ref) if runs.get(ref, {}).get("rank") is not None else {}
    primary = "scale" if "scale" in arms and len(arms["scale"]) > 1 else "fixed"
    margin = ctx.rules.equivalence_margin
    all_tests: list[Test] = []
    arm_ev: dict[str, Any] = {}
    verdicts: dict[str, tuple[str, str]] = {}
    for pol, by_rank in arms.items():
        finals = {k: final_side(pq, runs, rids) for k, rids in by_rank.items()}
        finals = {k: v for k, v in finals.items() if v}
        names = list(finals)
        diff = [ctx.test(f"[{pol}] r={a} vs r={b}", f"r={a}", finals[a], f"r={b}", finals[b])
                for i, a in enumerate(names) for b in names[i + 1:]]
        eqv = [ctx.test(f"[{pol}] r={a} ~ r={b} (TOST +-{margin})", f"r={a}", finals[a], f"r={b}", finals[b],
                        kind="equivalence") for i, a in enumerate(names) for b in names[i + 1:]]
        ctx.family(2, diff + eqv, confirmatory=(pol == primary))
        all_tests += diff + eqv
        means = {f"r={k}": rounded(side_mean(v)) for k, v in finals.items()}
        ev = {"alpha_policy": pol, "means": means, "conditions": {f"r={k}": spread(v) for k, v in finals.items()},
              "margin": margin, "significant_pairs": [t.name for t in diff if t.above() or t.below()],
              "equivalent_pairs": [t.name for t in eqv if t.equivalent()]}
        arm_ev[pol] = ev
        if len(finals) < 2:
            verdicts[pol] = (INCONCLUSIVE, f"[{pol}] fewer than two ranks trained like the reference")
            continue
        need = max((t.extra.get("smallest_equivalent_margin") or math.nan) for t in eqv)
        ev["smallest_margin_all_equivalent"] = rounded(need)
        fig = f"[alpha {pol}] final nDCG@10 " + ", ".join(f"{k} {v}" for k, v in means.items())
        if ev["significant_pairs"]:
            verdicts[pol] = (FAILS, f"{fig}; significantly different: " + ", ".join(
                f"{t.name} ({t.delta:+.3f}, 95% CI [{t.ci95[0]:+.3f}, {t.ci95[1]:+.3f}])"
                for t in diff if t.above() or t.below()))
        elif len(ev["equivalent_pairs"]) == len(eqv):
            verdicts[pol] = (HOLDS, f"{fig}: every pair equivalent within +-{margin} (TOST)")
        else:
            verdicts[pol] = (INCONCLUSIVE, f"{fig}: no pair significantly different, but not every pair shown "
                             f"equivalent within +-{margin} (TOST); the data could show equivalence only within "
                             f"+-{need:.3f}")
    if not arms:
        return result(2, INCONCLUSIVE, "fewer than two ranks trained like the reference", {"means": {}}, [])
    v, why = verdicts[primary]
    others = "; ".join(f"{r} (exploratory)" for p, (_, r) in verdicts.items() if p != primary)
    ev = {**arm_ev[primary], "tested_alpha_policy": primary, "arms": arm_ev}
    return result(2, v, why + (f"; other arm: {others}" if others else ""), ev, all_tests)


def finding_3(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str, ctx: Ctx = Ctx()) -> dict[str, Any]:
    comp = _siblings(runs, ref, "components") if ref in runs else {}
    trained = {c: final_side(pq, runs, comp[c]) for c in ("all", "mha", "mlp") if c in comp}
    ab = pq.ablations
    if all(trained.get(c) for c in ("all", "mha", "mlp")):
        source, base_name, base = "trained separately", "BM25", as_side(pq.bm25, "bm25")
        s = trained
    elif all(k in ab for k in ("full", "none", "mha-only", "mlp-only")):
        who = pq.ablations_of if pq.ablations_of.startswith("adapter:") else "the reference adapter"
        source, base_name, base = f"inference-time ablation of {who}", "LoRA off", as_side(ab["none"], "none")
        s = {"all": as_side(ab["full"]), "mha": as_side(ab["mha-only"]), "mlp": as_side(ab["mlp-only"])}
    else:
        return result(3, INCONCLUSIVE, "neither trained MHA-only/MLP-only runs nor a components ablation", {}, [])
    tests = ctx.family(3, [ctx.test(f"mha vs {base_name}", "mha", s["mha"], base_name, base),
                           ctx.test(f"mlp vs {base_name}", "mlp", s["mlp"], base_name, base),
                           ctx.test("mha vs mlp", "mha", s["mha"], "mlp", s["mlp"]),
                           ctx.test("all vs mha", "all", s["all"], "mha", s["mha"]),
                           ctx.test("all vs mlp", "all", s["all"], "mlp", s["mlp"])])
    ev = {"source": source, "baseline": base_name, **{k: rounded(side_mean(v)) for k, v in s.items()},
          base_name: rounded(side_mean(base)), "conditions": {k: spread(v) for k, v in s.items()}}
    if source.startswith("trained") and all(k in ab for k in ("full", "none", "mha-only", "mlp-only")):
        ev["inference_time"] = {k: rounded(side_mean(ab[k])) for k in ("full", "none", "mha-only", "mlp-only")}
    fig = f"{source}: all {ev['all']}, mha {ev['mha']}, mlp {ev['mlp']}, {base_name} {ev[base_name]}"
    wrong = [t.name for t in tests if t.below()]
    if wrong:
        return result(3, FAILS, f"{fig}; significantly the other way: {', '.join(wrong)}", ev, tests)
    if all(t.above() for t in tests):
        return result(3, HOLDS, f"{fig}; all five comparisons significant as claimed", ev, tests)
    weak = [t.name for t in tests if not t.above()]
    return result(3, INCONCLUSIVE, f"{fig}; not significant: {', '.join(weak)}; {_power_note(tests)}", ev, tests)


_PROJ = re.compile(r"^(only|without) (\S+)$")


def _proj_kind(name: str) -> str | None:
    short = name.split(".")[-1].replace("_proj", "")
    return short if short in ("up", "gate", "down") else None


def finding_4(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str, ctx: Ctx = Ctx()) -> dict[str, Any]:
    ab = pq.ablations
    lo, hi = window = ctx.rules.target_window  # the paper's 5-15 unless the study declares another
    name = window_label(window)
    windows = {w: k for k in ab if (w := config_window(k))}
    target = windows.get(window)
    same = {w: k for w, k in windows.items() if w != window and w[1] - w[0] == hi - lo}
    wtests = [ctx.test(f"{name} vs L{a}-{b}", window_config(window), ab[target], k, ab[k])
              for (a, b), k in sorted(same.items())] if target else []
    proj: dict[tuple[str, str], str] = {}
    for k in ab:
        m = _PROJ.match(k)
        if m and _proj_kind(m[2]):
            proj[(m[1], _proj_kind(m[2]))] = k
    ptests = []
    for p in ("up", "gate"):
        if ("only", p) in proj and ("only", "down") in proj:
            ptests.append(ctx.test(f"only {p} vs only down", proj[("only", p)], ab[proj[("only", p)]],
                                 proj[("only", "down")], ab[proj[("only", "down")]]))
    for p in ("up", "gate"):  # removing p hurts more than removing down: (without down) - (without p) > 0
        if ("without", p) in proj and ("without", "down") in proj:
            ptests.append(ctx.test(f"without down vs without {p}", proj[("without", "down")],
                                 ab[proj[("without", "down")]], proj[("without", p)], ab[proj[("without", p)]]))
    tests = ctx.family(4, wtests + ptests)
    ev: dict[str, Any] = {"windows": {k: rounded(side_mean(ab[k])) for k in sorted(windows.values())},
                          "projections": {k: rounded(side_mean(ab[k])) for k in sorted(proj.values())}}
    # (a) layers
    if not target or not wtests:
        a_verdict, a_why = INCONCLUSIVE, (f"no '{window_config(window)}' window" if not target else
                                          f"no other window of the same width ({hi - lo + 1} layers)")
    else:
        top = max((k for k in windows.values() if ab[k]), key=lambda k: side_mean(ab[k]))
        ev["top_window"] = top
        disjoint = [t for t, ((a, b), _) in zip(wtests, sorted(same.items())) if b < lo or a > hi]
        must = disjoint or wtests
        if any(t.below() for t in wtests):
            a_verdict, a_why = FAILS, f"a window of equal width is significantly above {name}"
        elif top == target and (all(t.above() for t in must) if disjoint else any(t.above() for t in must)):
            a_verdict, a_why = HOLDS, f"{name} is the best equal-width window and significantly above " + (
                "every window disjoint from it" if disjoint else "at least one other window")
        else:
            a_verdict, a_why = INCONCLUSIVE, (f"the best window is {top}" if top != target else
                                              f"{name} is best but not significantly above the windows it must beat")
    loo = {int(k.split("L")[1]): side_mean(ab["full"]) - side_mean(v) for k, v in ab.items()
           if k.startswith("without L") and k[9:].isdigit() and "full" in ab}
    if loo:
        inside = [d for layer, d in loo.items() if lo <= layer <= hi]
        outside = [d for layer, d in loo.items() if not lo <= layer <= hi]
        ev["leave_one_out_mean_drop"] = {f"layers {lo}-{hi}": rounded(sum(inside) / len(inside)) if inside else None,
                                         "other layers": rounded(sum(outside) / len(outside)) if outside else None}
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
        b_verdict, b_why = INCONCLUSIVE, "up/gate vs down not significant in both comparisons: " + _power_note(ptests)
    ev.update(layers_verdict=a_verdict, projections_verdict=b_verdict)
    reason = f"layers: {a_verdict} ({a_why}); projections: {b_verdict} ({b_why})"
    verdict = HOLDS if a_verdict == b_verdict == HOLDS else FAILS if FAILS in (a_verdict, b_verdict) else INCONCLUSIVE
    return result(4, verdict, reason, ev, tests, rule=finding_4_rule(window))


def finding_5(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str, ctx: Ctx = Ctx()) -> dict[str, Any]:
    line = ctx.rules.recover_line
    comp = _siblings(runs, ref, "components") if ref in runs else {}
    sources: list[tuple[str, Side, Side, Side, str]] = []  # name, mlp, full, base, base name
    full_t = final_side(pq, runs, _condition(runs, ref))
    mlp_t = final_side(pq, runs, comp["mlp"]) if "mlp" in comp else {}
    if full_t and mlp_t:
        sources.append(("trained", mlp_t, full_t, as_side(pq.bm25, "bm25"), "BM25"))
    ab = pq.ablations
    if all(k in ab for k in ("full", "none", "mlp-only")):
        sources.append(("inference-time", as_side(ab["mlp-only"]), as_side(ab["full"]), as_side(ab["none"]), "LoRA off"))
    if not sources:
        return result(5, INCONCLUSIVE, "neither a trained MLP-only run nor an mlp-only ablation", {}, [])
    tests = []
    for name, mlp, full, base, bname in sources:
        qids = common_queries(full, base)
        fm, bm = matrix(full, qids).mean(axis=0), matrix(base, qids).mean(axis=0)
        line_sc = {q: float(b + line * (f - b)) for q, f, b in zip(qids, fm, bm)}
        tests.append(ctx.test(f"{name}: mlp vs the {line:.0%} line from {bname} to full", "mlp", mlp,
                              f"{line:.0%} line", line_sc))
        tests.append(noninferior(f"{name}: recovered fraction >= {line:.0%} (non-inferiority)", mlp, full, base,
                                 rules=ctx.rules, labels=("mlp", "full", bname)))
        tests.append(ctx.test(f"{name}: mlp vs {bname}", "mlp", mlp, bname, base))
        if name == "inference-time":
            tests.append(ctx.test(f"{name}: full vs {bname}", "full", full, bname, base))
    ctx.family(5, tests)
    ev: dict[str, Any] = {"line": line}
    verdicts, parts = [], []
    for name, mlp, full, base, bname in sources:
        vs_line = next(t for t in tests if t.name.startswith(f"{name}: mlp vs the"))
        ni = next(t for t in tests if t.name.startswith(f"{name}: recovered fraction"))
        vs_base = next(t for t in tests if t.name == f"{name}: mlp vs {bname}")
        gain = next((t for t in tests if t.name == f"{name}: full vs {bname}"), None)
        frac = ni.extra.get("fraction", math.nan)
        lo, hi = ni.ci95
        ev[name] = {"mlp": rounded(side_mean(mlp)), "full": rounded(side_mean(full)), "baseline": bname,
                    "baseline_ndcg": rounded(side_mean(base)), "recovered_fraction": rounded(frac),
                    "fraction_ci95": [rounded(lo), rounded(hi)],
                    "fraction_lower_95": rounded(ni.extra.get("fraction_lower_95", math.nan)),
                    "conditions": {"mlp": spread(mlp), "full": spread(full)}}
        ci = f"{frac:.0%} (95% CI {lo:.0%} to {hi:.0%})" if not math.isnan(frac) else "n/a"
        if gain is not None and not gain.above():
            v, why = INCONCLUSIVE, f"the full adapter is not significantly above {bname}"
        elif math.isnan(frac) or ni.extra.get("gain", 0) <= 0:
            v, why = INCONCLUSIVE, "no gain over the baseline to recover"
        elif vs_line.below():
            v, why = FAILS, f"recovers {ci}, significantly below {line:.0%}"
        elif ni.above() and vs_base.above():
            v, why = HOLDS, f"recovers {ci}, shown >= {line:.0%} by non-inferiority (p_adj {ni.p_adj:.2g})"
        else:
            v, why = INCONCLUSIVE, (f"recovers {ci}: not shown >= {line:.0%} (non-inferiority p_adj {ni.p_adj:.2g}); "
                                    f"the data could show at most >= {ni.extra.get('fraction_lower_95', math.nan):.0%}"
                                    + ("" if vs_base.above() else f"; MLP-only not significantly above {bname}"))
        verdicts.append(v)
        parts.append(f"{name} (vs {bname}): {why}")
    verdict = HOLDS if HOLDS in verdicts else FAILS if all(v == FAILS for v in verdicts) else INCONCLUSIVE
    return result(5, verdict, "; ".join(parts), ev, tests)
