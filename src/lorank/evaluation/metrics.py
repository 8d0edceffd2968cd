"""Evaluation with ir_measures, under stable measure names.

Conventions (the TREC ones, stated so nobody has to guess):

* **Which queries count.** Metrics are averaged over the *judged* queries, i.e. every query in
  the qrels. A judged query with no run entries scores 0 on every measure (trec_eval `-c`);
  run queries without judgements are ignored. Both sets are reported on the result
  (`missing_queries`, `ignored_queries`). A judged query with no document at or above the
  relevance threshold still counts (it scores 0 on the binary measures).
* **Ranking.** Documents are ranked by score (the run's rank column is not used, as in
  trec_eval), ties broken by docid in decreasing order, trec_eval's rule. ir_measures hands
  different measures to different back-ends that break ties differently, so lorank ranks
  each query itself and passes strictly decreasing pseudo-scores: every measure sees the same
  ranking, and the result does not depend on the order of the input.
* **Relevance.** nDCG uses the graded judgements as gains; the binary measures (MRR, recall,
  MAP, P, success) count a document relevant when its grade >= `rel_threshold` (2 for TREC DL).
  Unjudged documents are non-relevant.

Measure names: `ndcg_cut_K`, `ndcg`, `recip_rank_K`, `recip_rank`, `recall_K`, `P_K`, `map`,
`map_cut_K`, `success_K`; anything else is handed to ir_measures as written (e.g. `"nDCG@20"`,
`"RR(rel=1)@10"`) and reported under that name.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import ir_measures

from lorank.errors import ConfigError, DataError
from lorank.evaluation.significance import holm, paired_ttest
from lorank.evaluation.trec_io import normalise_run, trec_order

__all__ = [
    "DEFAULT_MEASURES",
    "Comparison",
    "ComparisonResult",
    "EvalResult",
    "compare",
    "evaluate",
    "resolve_measure",
]

DEFAULT_MEASURES: tuple[str, ...] = ("ndcg_cut_10", "recip_rank_10", "recall_100", "map")

# stable name pattern -> (ir_measures template, uses the binary relevance threshold)
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"ndcg_cut_(\d+)"), "nDCG@{k}"),
    (re.compile(r"ndcg"), "nDCG"),
    (re.compile(r"recip_rank_(\d+)"), "RR(rel={t})@{k}"),
    (re.compile(r"recip_rank"), "RR(rel={t})"),
    (re.compile(r"recall_(\d+)"), "R(rel={t})@{k}"),
    (re.compile(r"P_(\d+)"), "P(rel={t})@{k}"),
    (re.compile(r"map_cut_(\d+)"), "AP(rel={t})@{k}"),
    (re.compile(r"map"), "AP(rel={t})"),
    (re.compile(r"success_(\d+)"), "Success(rel={t})@{k}"),
]


def resolve_measure(name: str, rel_threshold: int = 2) -> Any:
    """The ir_measures measure behind a stable name (or an ir_measures expression)."""
    for pat, template in _PATTERNS:
        m = pat.fullmatch(name)
        if m:
            k = m.group(1) if m.groups() else None
            if k is not None and int(k) <= 0:
                raise ConfigError(f"measure {name!r}: the cutoff must be positive")
            return ir_measures.parse_measure(template.format(k=k, t=int(rel_threshold)))
    try:
        return ir_measures.parse_measure(name)
    except Exception as e:  # ir_measures raises assorted exception types for bad syntax
        raise ConfigError(
            f"unknown measure {name!r} ({e}); use ndcg_cut_K, recip_rank_K, recall_K, P_K, map, "
            f"map_cut_K, success_K or an ir_measures expression such as 'nDCG@20'") from None


@dataclass
class EvalResult:
    """Metrics of one run against one set of qrels.

    `aggregate[measure]` is the mean over the judged queries; `per_query[measure][qid]` holds
    every judged query (always filled; `include_per_query` only decides whether `to_dict`
    writes it out).
    """

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    measures: dict[str, str]  # stable name -> ir_measures expression
    rel_threshold: int
    num_queries: int
    missing_queries: list[str] = field(default_factory=list)
    ignored_queries: list[str] = field(default_factory=list)
    include_per_query: bool = False

    def to_dict(self, per_query: bool | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "aggregate": dict(self.aggregate),
            "measures": dict(self.measures),
            "rel_threshold": self.rel_threshold,
            "num_queries": self.num_queries,
            "missing_queries": list(self.missing_queries),
            "ignored_queries": list(self.ignored_queries),
        }
        if self.include_per_query if per_query is None else per_query:
            d["per_query"] = {m: dict(v) for m, v in self.per_query.items()}
        return d


def _qrels_dict(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        judged = {str(d): int(g) for d, g in docs.items()}
        if judged:
            out[str(qid)] = judged
    if not out:
        raise DataError(None, None, "the qrels are empty: there is no judged query to evaluate")
    return out


def _measure_names(measures: Sequence[str] | None) -> list[str]:
    if isinstance(measures, str):
        measures = [measures]
    names = list(DEFAULT_MEASURES if measures is None else measures)
    if not names:
        raise ConfigError("no measures requested")
    if len(set(names)) != len(names):
        raise ConfigError(f"a measure is requested twice: {names}")
    return names


def evaluate(
    qrels: Mapping[str, Mapping[str, int]],
    run: Mapping[str, Any],
    rel_threshold: int = 2,
    measures: Sequence[str] | None = None,
    per_query: bool = False,
) -> EvalResult:
    """Evaluate `run` against `qrels` (see the module docstring for the conventions).

    `qrels`: `{qid: {docid: grade}}`. `run`: `{qid: [RunEntry, ...]}`, `{qid: {docid: score}}`
    or `{qid: [(docid, score), ...]}`. Default measures: nDCG@10 (`ndcg_cut_10`),
    MRR@10 (`recip_rank_10`), Recall@100 (`recall_100`) and MAP (`map`).
    """
    names = _measure_names(measures)
    resolved = {n: resolve_measure(n, rel_threshold) for n in names}
    qrels_d = _qrels_dict(qrels)
    run_d = normalise_run(run)

    judged = list(qrels_d)
    missing = [q for q in judged if not run_d.get(q)]
    ignored = sorted(q for q in run_d if q not in qrels_d)

    ir_qrels = [ir_measures.Qrel(q, d, g) for q, docs in qrels_d.items() for d, g in docs.items()]
    ir_run = []
    for q in judged:
        docs = run_d.get(q)
        if not docs:
            continue
        order = trec_order(docs)
        n = len(order)
        ir_run.extend(ir_measures.ScoredDoc(q, d, float(n - i)) for i, d in enumerate(order))

    by_measure: dict[Any, list[str]] = {}
    for name, m in resolved.items():
        by_measure.setdefault(m, []).append(name)
    values: dict[str, dict[str, float]] = {name: {q: 0.0 for q in judged} for name in names}
    if ir_run:
        for metric in ir_measures.iter_calc(list(by_measure), ir_qrels, ir_run):
            if metric.query_id in qrels_d:
                for name in by_measure.get(metric.measure, ()):
                    values[name][metric.query_id] = float(metric.value)

    # fsum is exactly rounded, so the mean does not depend on the order of the queries (bit-identical metrics)
    aggregate = {name: math.fsum(v.values()) / len(judged) for name, v in values.items()}
    return EvalResult(
        aggregate=aggregate,
        per_query=values,
        measures={name: str(m) for name, m in resolved.items()},
        rel_threshold=int(rel_threshold),
        num_queries=len(judged),
        missing_queries=missing,
        ignored_queries=ignored,
        include_per_query=per_query,
    )


@dataclass
class Comparison:
    """One run vs the baseline on one measure."""

    run: str
    baseline: str
    measure: str
    value: float
    baseline_value: float
    delta: float
    p_value: float
    p_adjusted: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        def clean(x: float) -> float | None:
            return None if x != x else x  # NaN -> null in JSON

        return {"run": self.run, "baseline": self.baseline, "measure": self.measure, "value": self.value,
                "baseline_value": self.baseline_value, "delta": self.delta,
                "p_value": clean(self.p_value), "p_adjusted": clean(self.p_adjusted),
                "significant": self.significant}


@dataclass
class ComparisonResult:
    """Evaluation of several runs plus paired tests of each against the baseline."""

    results: dict[str, EvalResult]
    baseline: str
    comparisons: list[Comparison]
    measures: list[str]
    alpha: float = 0.05
    test: str = "paired two-sided t-test over judged queries, Holm-Bonferroni per measure"

    def get(self, run: str, measure: str) -> Comparison:
        for c in self.comparisons:
            if c.run == run and c.measure == measure:
                return c
        raise KeyError((run, measure))

    def to_dict(self, per_query: bool | None = None) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "alpha": self.alpha,
            "test": self.test,
            "measures": list(self.measures),
            "runs": {name: r.to_dict(per_query) for name, r in self.results.items()},
            "comparisons": [c.to_dict() for c in self.comparisons],
        }


def compare(
    qrels: Mapping[str, Mapping[str, int]],
    runs: Mapping[str, Mapping[str, Any]],
    baseline: str | None = None,
    rel_threshold: int = 2,
    measures: Sequence[str] | None = None,
    alpha: float = 0.05,
    per_query: bool = False,
) -> ComparisonResult:
    """Evaluate every run; test each non-baseline run against `baseline` (default: the first).

    Per measure, a two-sided paired t-test (scipy.stats.ttest_rel) over the judged queries'
    per-query values for each run vs the baseline, then Holm-Bonferroni across those
    comparisons (one family per measure). `significant` means Holm-adjusted p <= alpha.
    """
    if not runs:
        raise ConfigError("compare needs at least one run")
    names = _measure_names(measures)
    if baseline is None:
        baseline = next(iter(runs))
    if baseline not in runs:
        raise ConfigError(f"baseline {baseline!r} is not one of the runs: {list(runs)}")
    results = {name: evaluate(qrels, run, rel_threshold, names, per_query) for name, run in runs.items()}
    base = results[baseline]
    others = [n for n in runs if n != baseline]
    comparisons: list[Comparison] = []
    for m in names:
        qids = list(base.per_query[m])
        b = [base.per_query[m][q] for q in qids]
        raw = [paired_ttest([results[o].per_query[m][q] for q in qids], b) for o in others]
        adjusted, reject = holm(raw, alpha)
        for o, p, pa, sig in zip(others, raw, adjusted, reject):
            v, bv = results[o].aggregate[m], base.aggregate[m]
            comparisons.append(Comparison(o, baseline, m, v, bv, v - bv, p, pa, sig))
    return ComparisonResult(results, baseline, comparisons, names, alpha)


def pool_sets(parts: Mapping[str, tuple[Mapping[str, Mapping[str, int]], Mapping[str, Mapping[str, Any]]]],
              ) -> tuple[dict[str, Mapping[str, int]], dict[str, dict[str, Any]]]:
    """Several evaluation sets as one (the protocol's dev set: DL19 + DL20, 97 queries): ``parts`` maps a set's label
    to (its qrels, its runs by name); every query id becomes ``LABEL:QID``, so that two sets' queries never merge and
    a mean over the pooled queries weighs each query once. Every part must hold the same run names."""
    qrels: dict[str, Mapping[str, int]] = {}
    runs: dict[str, dict[str, Any]] = {}
    names = None
    for label, (part_qrels, part_runs) in parts.items():
        if names is not None and set(part_runs) != names:
            raise ConfigError(f"pooling: set {label!r} has runs {sorted(part_runs)}, the others {sorted(names)}")
        names = set(part_runs)
        for q, grades in part_qrels.items():
            qrels[f"{label}:{q}"] = grades
        for name, run in part_runs.items():
            pooled = runs.setdefault(name, {})
            for q, entries in run.items():
                pooled[f"{label}:{q}"] = entries
    return qrels, runs
