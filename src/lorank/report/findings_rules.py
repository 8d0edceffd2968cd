"""The five decision rules of :mod:`lorank.report.findings`, one function each, and the selection of the runs
they compare (the reference's siblings that differ in one axis). The rules themselves are stated in the
docstring of :mod:`lorank.report.findings`. Pure: nothing here reads files."""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from lorank.report.findings_model import (FAILS, HOLDS, INCONCLUSIVE, RECOVER_MIN, RHO_MIN, SPREAD_MAX,
                                          TARGET_WINDOW, PerQuery, Scores, holm_family, mean_of, paired, result,
                                          rounded, spearman)

_AXES = ("model", "rank", "components", "projections", "layers", "variant", "seed", "alpha", "dropout")


def study_runs(results: Any, eval_set: str | tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """run_id -> axes, from the checkpoint rows of the results table on the main eval set(s)."""
    if results is None or not len(results):
        return {}
    sets = [eval_set] if isinstance(eval_set, str) else list(eval_set)
    ck = results[(results["source"] == "checkpoint") & (results["eval_set"].isin(sets))]
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


def final_scores(pq: PerQuery, rid: str) -> Scores | None:
    steps = pq.checkpoints.get(rid) or {}
    return steps[max(steps)] if steps else None


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
        rho = spearman(xs, [mean_of(steps[s]) for s in xs]) if len(xs) >= 3 else math.nan
        per_run[rid] = {"first_step": first, "last_step": last, "ndcg_first": rounded(mean_of(steps[first])),
                        "ndcg_last": rounded(mean_of(steps[last])), "checkpoints": len(xs), "spearman_rho": rounded(rho)}
    holm_family(tests)
    if ref not in per_run:
        return result(1, INCONCLUSIVE, "the reference run has fewer than two evaluated checkpoints",
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
        return result(1, FAILS, f"{fig}: the last checkpoint is significantly below the first", ev, tests)
    if rho is None:
        return result(1, INCONCLUSIVE, f"{fig}: fewer than 3 checkpoints, no trend can be measured", ev, tests)
    if rho < 0:
        return result(1, FAILS, f"{fig}: quality falls across checkpoints", ev, tests)
    if t.above() and rho >= RHO_MIN:
        return result(1, HOLDS, f"{fig}: significant rise, monotone trend", ev, tests)
    if t.above():
        return result(1, FAILS, f"{fig}: it rises, but not steadily (rho < {RHO_MIN})", ev, tests)
    return result(1, INCONCLUSIVE, f"{fig}: the rise from first to last checkpoint is not significant", ev, tests)


def finding_2(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    by_rank = {int(k): v for k, v in _siblings(runs, ref, "rank").items() if k.lstrip("-").isdigit()}
    finals = {k: final_scores(pq, rid) for k, rid in sorted(by_rank.items())}
    finals = {k: v for k, v in finals.items() if v}
    tests = [paired(f"r={a} vs r={b}", f"r={a}", finals[a], f"r={b}", finals[b])
             for i, a in enumerate(finals) for b in list(finals)[i + 1:]]
    holm_family(tests)
    means = {f"r={k}": rounded(mean_of(v)) for k, v in finals.items()}
    if len(finals) < 2:
        return result(2, INCONCLUSIVE, "fewer than two ranks trained like the reference", {"means": means}, tests)
    spread = max(means.values()) - min(means.values())
    ev = {"means": means, "spread": rounded(spread), "spread_max": SPREAD_MAX,
          "significant_pairs": [t.name for t in tests if t.above() or t.below()]}
    fig = "final nDCG@10 " + ", ".join(f"{k} {v}" for k, v in means.items()) + f"; spread {spread:.4f}"
    if ev["significant_pairs"]:
        return result(2, FAILS, f"{fig}; significantly different: {', '.join(ev['significant_pairs'])}", ev, tests)
    if spread <= SPREAD_MAX:
        return result(2, HOLDS, f"{fig}: no pair significantly different, spread <= {SPREAD_MAX}", ev, tests)
    return result(2, INCONCLUSIVE, f"{fig}: no pair significant, but the spread exceeds {SPREAD_MAX} (too few "
                   "queries to call them comparable)", ev, tests)


def finding_3(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    comp = _siblings(runs, ref, "components")
    trained = {c: final_scores(pq, comp[c]) for c in ("all", "mha", "mlp") if c in comp}
    if all(trained.get(c) for c in ("all", "mha", "mlp")):
        source, base_name, base = "trained separately", "BM25", pq.bm25
        s = trained
    elif all(k in pq.ablations for k in ("full", "none", "mha-only", "mlp-only")):
        who = pq.ablations_of if pq.ablations_of.startswith("adapter:") else "the reference adapter"
        source, base_name, base = f"inference-time ablation of {who}", "LoRA off", pq.ablations["none"]
        s = {"all": pq.ablations["full"], "mha": pq.ablations["mha-only"], "mlp": pq.ablations["mlp-only"]}
    else:
        return result(3, INCONCLUSIVE, "neither trained MHA-only/MLP-only runs nor a components ablation", {}, [])
    tests = holm_family([paired(f"mha vs {base_name}", "mha", s["mha"], base_name, base),
                         paired(f"mlp vs {base_name}", "mlp", s["mlp"], base_name, base),
                         paired("mha vs mlp", "mha", s["mha"], "mlp", s["mlp"]),
                         paired("all vs mha", "all", s["all"], "mha", s["mha"]),
                         paired("all vs mlp", "all", s["all"], "mlp", s["mlp"])])
    ev = {"source": source, "baseline": base_name, **{k: rounded(mean_of(v)) for k, v in s.items()},
          base_name: rounded(mean_of(base))}
    if source.startswith("trained") and all(k in pq.ablations for k in ("full", "none", "mha-only", "mlp-only")):
        ev["inference_time"] = {k: rounded(mean_of(pq.ablations[k])) for k in ("full", "none", "mha-only", "mlp-only")}
    fig = (f"{source}: all {ev['all']}, mha {ev['mha']}, mlp {ev['mlp']}, {base_name} {ev[base_name]}")
    wrong = [t.name for t in tests if t.below()]
    if wrong:
        return result(3, FAILS, f"{fig}; significantly the other way: {', '.join(wrong)}", ev, tests)
    if all(t.above() for t in tests):
        return result(3, HOLDS, f"{fig}; all five comparisons significant as claimed", ev, tests)
    weak = [t.name for t in tests if not t.above()]
    return result(3, INCONCLUSIVE, f"{fig}; not significant: {', '.join(weak)}", ev, tests)


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
    ev: dict[str, Any] = {"windows": {k: rounded(mean_of(ab[k])) for k in sorted(windows.values())},
                          "projections": {k: rounded(mean_of(ab[k])) for k in sorted(proj.values())}}
    # (a) layers
    if not target or not wtests:
        a_verdict, a_why = INCONCLUSIVE, ("no 'only L5-15' window" if not target else
                                          "no other window of the same width (11 layers)")
    else:
        top = max((k for k in windows.values() if ab[k]), key=lambda k: mean_of(ab[k]))
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
    loo = {int(k.split("L")[1]): mean_of(ab["full"]) - mean_of(v) for k, v in ab.items()
           if k.startswith("without L") and k[9:].isdigit() and "full" in ab}
    if loo:
        inside = [d for layer, d in loo.items() if TARGET_WINDOW[0] <= layer <= TARGET_WINDOW[1]]
        outside = [d for layer, d in loo.items() if not TARGET_WINDOW[0] <= layer <= TARGET_WINDOW[1]]
        ev["leave_one_out_mean_drop"] = {"layers 5-15": rounded(sum(inside) / len(inside)) if inside else None,
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
        b_verdict, b_why = INCONCLUSIVE, "up/gate vs down not significant in both comparisons"
    ev.update(layers_verdict=a_verdict, projections_verdict=b_verdict)
    reason = f"layers: {a_verdict} ({a_why}); projections: {b_verdict} ({b_why})"
    verdict = HOLDS if a_verdict == b_verdict == HOLDS else FAILS if FAILS in (a_verdict, b_verdict) else INCONCLUSIVE
    return result(4, verdict, reason, ev, tests)


def finding_5(runs: dict[str, dict[str, Any]], pq: PerQuery, ref: str) -> dict[str, Any]:
    comp = _siblings(runs, ref, "components")
    sources: list[tuple[str, Scores, Scores, Scores, str]] = []  # name, mlp, full, base, base name
    full_t, mlp_t = final_scores(pq, ref), (final_scores(pq, comp["mlp"]) if "mlp" in comp else None)
    if full_t and mlp_t:
        sources.append(("trained", mlp_t, full_t, pq.bm25, "BM25"))
    ab = pq.ablations
    if all(k in ab for k in ("full", "none", "mlp-only")):
        sources.append(("inference-time", ab["mlp-only"], ab["full"], ab["none"], "LoRA off"))
    if not sources:
        return result(5, INCONCLUSIVE, "neither a trained MLP-only run nor an mlp-only ablation", {}, [])
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
        m, f, b = mean_of(mlp), mean_of(full), mean_of(base)
        frac = (m - b) / (f - b) if abs(f - b) > 1e-12 else math.nan
        vs_line = next(t for t in tests if t.name.startswith(f"{name}: mlp vs {RECOVER_MIN:.0%}"))
        vs_base = next(t for t in tests if t.name == f"{name}: mlp vs {bname}")
        gain = next((t for t in tests if t.name == f"{name}: full vs {bname}"), None)
        ev[name] = {"mlp": rounded(m), "full": rounded(f), "baseline": bname, "baseline_ndcg": rounded(b),
                    "recovered_fraction": rounded(frac)}
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
    return result(5, verdict, "; ".join(parts), ev, tests)
