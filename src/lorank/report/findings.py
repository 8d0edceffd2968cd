"""The paper's five findings tested on a study's numbers: holds / does not hold / inconclusive, each resting on
positive evidence (docs/protocol.md is the researcher's version of this text).

Pure functions over the study's results table (``lorank.study.load_results``: which runs exist, their axes) and
per-query nDCG@10 (:class:`PerQuery`, read from the TREC runs the study writes by
:mod:`lorank.report.findings_data`), one view per role: **dev** (the sets that chose the recipe and checkpoint) and
**test** (reported only). Nothing here reads files. The statistics are in :mod:`lorank.evaluation.stats`, the tests and
rules' vocabulary in :mod:`lorank.report.findings_model`, the five rules in :mod:`lorank.report.findings_rules`.

How a verdict is reached (the rules a study declares under ``verdicts:`` before any run; defaults in brackets):

- **Units.** A condition is a run's settings without its seed; its seeds are replicates. Every test pairs queries:
  the per-query mean over a condition's seeds, a paired t-test over queries; every difference carries a 95% CI from
  a hierarchical bootstrap (queries resampled, and seeds within each condition). A comparison with one seed a side
  is labelled ``single_run``: its p-value covers query variation only.
- **Which queries decide** (``decide_on``, [test]). The verdict is the test view's; the same rules on dev are
  reported beside it (``dev``, ``verdict_dev``) and ``agree`` flags a disagreement. Without test-set evidence a
  finding is *inconclusive*, with what dev alone would give: no verdict rests only on the queries that chose the
  recipe. ``pooled`` decides on dev + test queries together, still with the flag.
- **One correction.** The deciding tests of the confirmatory findings ([1-5]) form one family across the study,
  corrected by Holm [holm] or Benjamini-Hochberg (``p_adj``); the tests of other findings, and figures reported
  beside the decision, are exploratory (Holm within their finding, labelled so).
- **Gate** (a precondition, tested alone at alpha). The reference condition's final checkpoint must be
  significantly above BM25; if not, the adapter has not learnt to rank beyond its first stage and every verdict
  is *inconclusive* (what the numbers would say is kept as ``verdict_ignoring_gate``). An external adapter whose
  ablations are read has its own gate (its ``full`` configuration above BM25); a finding is decided on the evidence
  whose gate passed.

1. **Quality rises steadily across checkpoints.** The reference condition's last checkpoint significantly above
   its first (seeds paired), and Spearman rho(step, mean nDCG@10) >= 0.5 over the dense curve (``eval.curve``,
   else the checkpoints; >= 3 points). Does not hold: significantly below, rho < 0, or a significant rise with
   rho < 0.5. Other conditions' rises are exploratory.
2. **Ranks 1, 2, 8, 32 reach comparable quality.** Holds only when every pair of ranks is shown equivalent within
   the declared margin [0.02 nDCG@10] by TOST (two one-sided tests). Does not hold: a pair significantly different.
   Otherwise inconclusive, naming the smallest margin the data could have shown equivalent. With an arm whose LoRA
   scale alpha/r is held fixed (``alpha_policy: scale``) that arm decides (rank alone varies); the fixed-alpha arm,
   where alpha/r falls as rank grows, is reported as exploratory.
3. **MHA-only and MLP-only both improve ranking, MHA more, both together best.** Five difference tests, mha > base,
   mlp > base, mha > mlp, all > mha, all > mlp (trained runs: base BM25; else the reference adapter's inference-time
   ablation, base LoRA off). Holds: all five significant as claimed; does not hold: any significantly the other
   way; else inconclusive, with the effect each test could have detected at 80% power.
4. **Layers 5-15 contribute most; up and gate matter more than down.** (a) "only L5-15" (or the window the study
   declares for it, ``target_window`` [5-15]: the same depth on a model of other than 32 layers) against every other
   window of its width: holds when it is the top window and significantly above every window disjoint from it; fails
   when another window is significantly above it. (b) only up/gate > only down, or without up/gate < without down, both
   of a pair significant. Holds when (a) and (b) hold, fails when either fails.
5. **MLP-only updates recover up to 98%.** The recovered fraction (MLP-only - base) / (full - base), trained (base
   BM25) or inference-time (base LoRA off, whose own gain must be significant). A source holds only by a one-sided
   non-inferiority test that the fraction is above the declared line [90%] (per query: (mlp - base) - line x
   (full - base) > 0), with MLP-only significantly above base; it does not hold when MLP-only is significantly
   below the line. The fraction carries a bootstrap CI and the line the data could have shown (its one-sided 95%
   lower bound). "Up to": holds when one source holds, does not hold when every source does not.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from lorank.ablate.windows import window_config, window_label
from lorank.report.findings_model import (ALPHA, CLAIMS, DEFAULT_RULES, FAILS, HOLDS, INCONCLUSIVE, MEASURE, RULES,
                                          VERDICTS, PerQuery, Test, VerdictRules, pooled)
from lorank.report.findings_rules import (Ctx, finding_1, finding_2, finding_3, finding_4, finding_5, final_side,
                                          final_scores, study_runs, _condition)
from lorank.evaluation.stats import adjust, as_side, fmt_p


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
           f"p={t.p:.3g}, tested alone")
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
    view = pq if (ok and ab_ok) or (not ok and not ab_ok) else dataclasses.replace(
        pq, checkpoints=pq.checkpoints if ok else {}, ablations=pq.ablations if ab_ok else {},
        curve=pq.curve if ok else {})
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
    if pq.role != "dev":  # the first view is the dev view, whatever it was labelled
        pq = dataclasses.replace(pq, role="dev")
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
    if not test.curve and pq.curve:  # finding 1's trend on a test view: the dev sets' dense curve, labelled so
        test = dataclasses.replace(test, curve=pq.curve, curve_role=pq.role)
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




def _sets(f: dict[str, Any], role: str) -> str:
    """The sets a finding's `role` view was computed on ("" when it has none)."""
    if role == "test":
        return "+".join(f.get("sets") or []) if f.get("role") in ("test", "dev+test") else ""
    return "+".join((f.get("dev") or {}).get("sets") or (f.get("sets") if f.get("role") == "dev" else []) or [])


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{x:.0%}"


def summary(f: dict[str, Any]) -> str:
    """The figures behind a verdict in one short line (nDCG@10 means, CIs, adjusted p), from findings.json alone."""
    ev, n = f.get("evidence") or {}, f["finding"]
    sig = [k for k, v in f["p_values"].items() if v.get("confirmatory") and v.get("significant")]
    tests = f["p_values"]
    if n == 1 and "ndcg_first" in ev:
        t = tests.get(ev.get("test", ""), {})
        ci = t.get("ci95") or [None, None]
        return (f"{_num(ev['ndcg_first'])} at step {ev['first_step']} -> {_num(ev['ndcg_last'])} at {ev['last_step']} "
                f"(95% CI of the rise {_num(ci[0])} to {_num(ci[1])}, p_adj {fmt_p(t.get('p_adj'))}); Spearman rho "
                f"{ev.get('spearman_rho')} over the {ev.get('trend_source')}; {ev.get('runs_rising_significantly')} of "
                f"{ev.get('runs_total')} conditions rise significantly")
    if n == 2 and ev.get("means"):
        arm = ev.get("tested_alpha_policy", "fixed")
        pairs = [k for k, v in tests.items() if v.get("kind") == "equivalence" and k.startswith(f"[{arm}]")]
        diff = [k.split("] ")[-1] for k in ev.get("significant_pairs", []) if k.startswith(f"[{arm}]")]
        return (f"alpha {arm}: " + ", ".join(f"{k} {_num(v)}" for k, v in ev["means"].items())
                + "; significantly different: " + (", ".join(diff) or "none")
                + f"; shown equivalent within +-{ev.get('margin')}: {len(ev.get('equivalent_pairs', []))} of "
                  f"{len(pairs)} pairs (the data could show +-{_num(ev.get('smallest_margin_all_equivalent'))})")
    if n == 3 and "source" in ev:
        base = ev.get("baseline")
        return (f"{ev['source']}: all {_num(ev.get('all'))}, MHA {_num(ev.get('mha'))}, MLP {_num(ev.get('mlp'))}, "
                f"{base} {_num(ev.get(base))}; significant as claimed: " + (", ".join(
                    k for k in sig if tests[k].get("delta", 0) > 0 and not k.startswith("gate")) or "none"))
    if n == 4 and "windows" in ev:
        w, target = ev["windows"], VerdictRules.from_dict(f.get("verdict_rules")).target_window
        return (f"top window {ev.get('top_window', '-')} ({_num(w.get(ev.get('top_window')))}), "
                f"{window_label(target)} {_num(w.get(window_config(target)))}; layers {ev.get('layers_verdict')}, "
                f"up/gate vs down {ev.get('projections_verdict')}")
    if n == 5:
        parts = []
        for src in ("trained", "inference-time"):
            e = ev.get(src)
            if e:
                ci = e.get("fraction_ci95") or [None, None]
                parts.append(f"{src}: {_pct(e.get('recovered_fraction'))} of the gain over {e.get('baseline')} "
                             f"(95% CI {_pct(ci[0])} to {_pct(ci[1])}) against the {_pct(ev.get('line'))} line")
        if parts:
            return "; ".join(parts)
    return f["reason"]


def findings_markdown(findings: list[dict[str, Any]], title: str | None = None, compact: bool = False) -> str:
    """The findings as a Markdown table: the paper's claim, the verdict (decided on the test set), what dev alone
    gives (the sets that chose the recipe), the deciding figures, the confirmatory tests' adjusted p-values.
    ``compact`` (a README's table): the figures in one short line (:func:`summary`), no p-value column."""
    if compact:
        lines = [f"### {title}", ""] if title else []
        lines += ["| # | the paper's claim | verdict (test) | on dev | the figures behind it |", "|---|---|---|---|---|"]
        for f in findings:
            dev = f.get("verdict_dev") or (f.get("dev") or {}).get("verdict") or "-"
            view = "dev" if f.get("role") == "dev" else "test"
            cells = [str(f["finding"]), f["claim"], f"**{f['verdict']}** ({_sets(f, 'test') or 'no test set'})",
                     f"{dev} ({_sets(f, 'dev')})", f"on {view}: {summary(f)}"]
            lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        return "\n".join(lines) + "\n"
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
