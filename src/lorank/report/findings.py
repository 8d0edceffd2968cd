"""The paper's five findings tested on a study's numbers: holds / does not hold / inconclusive, with the deciding
figures and paired t-test p-values (Holm) over queries.

Pure functions over the study's results table (``lorank.study.load_results``: which runs exist, their axes and
checkpoint steps) and per-query nDCG@10 on the main evaluation set (:class:`PerQuery`, read from the TREC runs the
study writes by :mod:`lorank.report.findings_data`). Nothing here reads files. This module holds the gate, the
five findings together and their Markdown; the thresholds, claims and the paired test are in
:mod:`lorank.report.findings_model`, the five rules in :mod:`lorank.report.findings_rules`.

Decision rules (alpha = 0.05; every test is a two-sided paired t-test over the queries both sides share,
``lorank.score.significance.paired_ttest``; the tests of one finding form one Holm family; "significantly above"
means Holm-adjusted p <= alpha with the difference in that direction):

0. **Gate** (applies to every finding). The reference run's final checkpoint must be significantly above BM25 on
   the main eval set (one test, no correction). If it is not, the adapter has not learnt to rank beyond its first
   stage, so differences between runs, checkpoints and ablations (and every "% recovered") are noise: every
   verdict is *inconclusive* with that reason (the verdict the numbers would give is kept as ``verdict_ignoring_gate``).
   When the ablations dissect another adapter (an external one, ``adapters:`` in the spec), they have their own
   gate: that adapter's ``full`` configuration significantly above BM25. A finding is then decided on the evidence
   whose gate passed (the trained runs' checkpoints, the ablations, or both); evidence behind a failed gate is
   left out, and what the finding would say with it is kept as ``verdict_ignoring_gate``.
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
from typing import Any

from lorank.report.findings_model import (ALPHA, CLAIMS, DEFAULT_RULES, FAILS, HOLDS, INCONCLUSIVE, MEASURE, RULES,
                                          VERDICTS, PerQuery, Scores, Test, VerdictRules, paired, pooled)
from lorank.report.findings_rules import (Ctx, finding_1, finding_2, finding_3, finding_4, finding_5, final_side,
                                          final_scores, study_runs, _condition)
from lorank.report.findings_stats import adjust, as_side


def noise_gate(pq: PerQuery, ref_final: Any, who: str = "", ctx: Ctx = Ctx()) -> tuple[bool, str, Test | None]:
    """(passed, reason, test): the reference condition (or the dissected adapter `who`, by its ablations' full
    configuration) significantly above BM25 on the view's sets. A precondition, not one of the paper's claims: it is
    tested alone at alpha, outside the study-wide family (so whether differences are read at all does not depend on
    how many tests the study declares)."""
    if not ref_final or not pq.bm25:
        return False, ((f"the ablations of {who} have no full configuration" if who else
                        "the reference run's final checkpoint") + " or BM25 has no per-query data"), None
    name = who or "reference"
    t = ctx.test(f"gate: {name} {'full' if who else 'final'} vs BM25 ({pq.eval_set})", name, ref_final, "BM25",
                 as_side(pq.bm25, "bm25"))
    t.p_adj, t.family, t.alpha = t.p, "precondition (tested alone)", ctx.rules.alpha  # not a claim: no correction
    fig = (f"{name} {t.mean_a:.4f} vs BM25 {t.mean_b:.4f} nDCG@10 on {pq.eval_set} ({pq.role}), "
           f"p_adj={t.p_adj:.3g}")
    if t.above():
        return True, fig, t
    if who:
        return False, (f"the dissected adapter {who} is not significantly above BM25 ({fig}): its ablations' "
                       "differences and percentages are noise"), t
    return False, (f"the trained reference adapter is not significantly above BM25 ({fig}): differences between "
                   "runs, checkpoints and ablations, and the ablation percentages, are noise"), t


def _view_findings(results: Any, pq: PerQuery, reference: str, ctx: Ctx) -> list[dict[str, Any]]:
    """The five findings on one view (a set of queries with one role), with the corrections of `ctx`."""
    runs = study_runs(results, pq.labels)
    if reference not in runs:  # the reference must be a trained run of the table
        runs[reference] = {}
    ref_side = final_side(pq, runs, _condition(runs, reference)) if runs[reference] else as_side(
        final_scores(pq, reference) or {}, reference)
    ok, why, gate = noise_gate(pq, ref_side, ctx=ctx)
    own = not pq.ablations_of or pq.ablations_of == reference  # the ablations dissect the reference run itself
    ab_ok, ab_why, ab_gate = (ok, why, gate) if own or not pq.ablations else noise_gate(
        pq, pq.ablations.get("full"), pq.ablations_of, ctx=ctx)
    # the evidence whose gate passed: checkpoints when the reference passed, ablations when their adapter did
    view = pq if (ok and ab_ok) or (not ok and not ab_ok) else PerQuery(
        pq.eval_set, pq.bm25, pq.checkpoints if ok else {}, pq.ablations if ab_ok else {}, pq.ablations_of, pq.sets,
        pq.curve if ok else {}, pq.role)
    failed = "; ".join(dict.fromkeys(w for passed, w in ((ok, why), (ab_ok, ab_why)) if not passed))
    out = []
    for fn in (finding_1, finding_2, finding_3, finding_4, finding_5):
        f = fn(runs, pq, reference, ctx)
        if view is not pq:  # one gate failed: decide on the other's evidence only
            g = fn(runs, view, reference, ctx)
            if (g["verdict"], g["reason"]) != (f["verdict"], f["reason"]):
                g["evidence"]["verdict_ignoring_gate"] = f["verdict"]
                g["evidence"]["reason_ignoring_gate"] = f["reason"]
                if g["verdict"] == INCONCLUSIVE:
                    g["reason"] = f"{failed}; without that evidence: {g['reason']}"
            f = g
        for t in (gate, ab_gate if ab_gate is not gate else None):
            if t is not None:
                f["p_values"] = {t.name: t.to_dict(), **f["p_values"]}
                f["_tests"] = [t, *f["_tests"]]
        f["evidence"]["gate"] = {"passed": ok, "detail": why}
        if not own and pq.ablations:
            f["evidence"]["ablations_of"] = pq.ablations_of
            f["evidence"]["ablation_gate"] = {"passed": ab_ok, "detail": ab_why}
        if not ok and not ab_ok:
            f["evidence"]["verdict_ignoring_gate"] = f["verdict"]
            f["evidence"]["reason_ignoring_gate"] = f["reason"]
            f["verdict"], f["reason"] = INCONCLUSIVE, failed
        out.append(f)
    return out


def evaluate_view(results: Any, pq: PerQuery, reference: str, rules: VerdictRules = DEFAULT_RULES
                  ) -> list[dict[str, Any]]:
    """The five findings on one view, the confirmatory tests corrected together (``rules.correction`` over every
    confirmatory test of every finding and the gates), the exploratory ones within their finding. Two passes: the
    first collects the tests, the second decides on the study-wide adjusted p-values."""
    first = _view_findings(results, pq, reference, Ctx(rules))
    family: dict[str, float] = {}
    for f in first:
        for t in f["_tests"]:
            if t.confirmatory:
                family[f"{f['finding']}:{t.name}"] = t.p
    keys = list(family)
    adjusted = dict(zip(keys, adjust([family[k] for k in keys], rules.correction)))
    out = _view_findings(results, pq, reference, Ctx(rules, adjusted))
    for f in out:
        tests = f.pop("_tests")
        for t in tests:  # every figure says which queries, which role
            f["p_values"][t.name].update(role=pq.role, sets="+".join(pq.labels))
        f.update(role=pq.role, sets=list(pq.labels), n_queries=len(pq.bm25),
                 n_seeds=max([t.seeds_a for t in tests] + [t.seeds_b for t in tests] + [1]),
                 confirmatory=f["finding"] in rules.confirmatory, family_size=len(keys),
                 correction=rules.correction, alpha=rules.alpha)
        if f["finding"] == 2:
            f["declared_margin"] = rules.equivalence_margin
        if f["finding"] == 5:
            f["declared_line"] = rules.recover_line
    return out


def evaluate_findings(results: Any, pq: PerQuery, reference: str, test: PerQuery | None = None,
                      rules: VerdictRules | None = None) -> list[dict[str, Any]]:
    """The five findings as ``{finding, claim, verdict, reason, rule, evidence, p_values, role, sets, dev, ...}``.

    `pq` holds the dev queries (they chose the recipe), `test` the test queries (reported, never used to choose).
    With ``rules.decide_on == "test"`` the verdict is the test view's; with ``pooled`` it is decided on dev + test
    together. Either way the dev view's verdict is reported beside it (``dev``) and ``agree`` flags a disagreement.
    Without test-set evidence no verdict is given: it is inconclusive, and says what dev alone would give, since a
    verdict may not rest only on the queries that chose the recipe."""
    rules = rules or DEFAULT_RULES
    dev = evaluate_view(results, pq, reference, rules)
    has_test = test is not None and bool(test.bm25)
    if not has_test:
        out = []
        for f in dev:
            g = dict(f, verdict=INCONCLUSIVE, verdict_dev=f["verdict"], agree=None,
                     reason=f"no test-set evidence (dev only: the queries that chose the recipe). On dev "
                            f"({'+'.join(pq.labels)}) it would be '{f['verdict']}': {f['reason']}")
            g["dev"] = {"verdict": f["verdict"], "reason": f["reason"], "sets": f["sets"]}
            out.append(g)
        return out
    decide = test if rules.decide_on == "test" else pooled([pq, test])
    main = evaluate_view(results, decide, reference, rules)
    test_only = main if decide is test else evaluate_view(results, test, reference, rules)
    for f, d, t in zip(main, dev, test_only):
        f["dev"] = {"verdict": d["verdict"], "reason": d["reason"], "sets": d["sets"], "p_values": d["p_values"]}
        f["verdict_dev"] = d["verdict"]
        f["verdict_test"] = t["verdict"]
        f["agree"] = d["verdict"] == t["verdict"]
        if not f["agree"]:
            f["reason"] += f" [dev and test disagree: dev '{d['verdict']}', test '{t['verdict']}']"
    return main


def figures_text(f: dict[str, Any]) -> str:
    """The deciding figures of one finding, one line."""
    ignoring = f["evidence"].get("reason_ignoring_gate")
    return f"{f['reason']} [numbers: {ignoring}]" if ignoring else f["reason"]


def p_text(f: dict[str, Any]) -> str:
    """Each confirmatory test's adjusted p-value and the queries it was paired over (older findings.json files:
    every test's Holm p-value)."""
    vals = f["p_values"].items()
    if any("confirmatory" in v for _, v in vals):
        vals = [(k, v) for k, v in vals if v.get("confirmatory")]
    return "; ".join(f"{k}: p_adj={fmt_p(v.get('p_adj', v.get('p_holm')))} (n={v.get('n_queries', '?')})"
                     for k, v in vals) or "-"


def fmt_p(p: float | None) -> str:
    """A p-value as a reader wants it: 3 significant digits, scientific below 1e-3."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p < 1e-3 else f"{p:.3g}"


_fmt_p = fmt_p


def _sets(f: dict[str, Any], role: str) -> str:
    """The sets a finding's `role` view was computed on ("" when it has none)."""
    if role == "test":
        return "+".join(f.get("sets") or []) if f.get("role") in ("test", "dev+test") else ""
    return "+".join((f.get("dev") or {}).get("sets") or (f.get("sets") if f.get("role") == "dev" else []) or [])


def findings_markdown(findings: list[dict[str, Any]], title: str | None = None) -> str:
    """The findings as a Markdown table: the paper's claim, the verdict (decided on the test set), what dev alone
    gives (the sets that chose the recipe), the deciding figures, the confirmatory tests' adjusted p-values."""
    lines = [f"### {title}", ""] if title else []
    lines += ["| # | the paper's claim | verdict (test) | on dev | deciding figures | p-values (study-wide adjusted) |",
              "|---|---|---|---|---|---|"]
    for f in findings:
        dev = f.get("verdict_dev") or (f.get("dev") or {}).get("verdict") or "-"
        test_sets = _sets(f, "test") or ("no test set" if "role" in f else "")
        cells = [str(f["finding"]), f["claim"], f"**{f['verdict']}** ({test_sets})" if test_sets else
                 f"**{f['verdict']}**", f"{dev} ({_sets(f, 'dev')})" if dev != "-" else "-", figures_text(f), p_text(f)]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


__all__ = ["ALPHA", "CLAIMS", "FAILS", "HOLDS", "INCONCLUSIVE", "MEASURE", "RULES", "VERDICTS", "PerQuery", "Test",
           "VerdictRules", "evaluate_findings", "evaluate_view", "figures_text", "findings_markdown", "fmt_p",
           "noise_gate", "p_text", "pooled"]
