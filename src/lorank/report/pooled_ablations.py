"""Ablation sweeps pooled over eval sets. A study that ablates one adapter with the same sweep on several sets
(DL19 and DL20: 43 + 54 queries) gets one table over all their queries, the view its findings test
(``report.findings_sets``), beside each set's own: nDCG@10 / MRR@10 of every configuration over the pooled queries,
paired t-tests against the full adapter with Holm, read from the TREC runs each ablation step wrote."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.ablate.run import comparison_table, MEASURES, run_file_stem

from lorank.data import load_run, resolve_eval_set

from lorank.data.roles import role_of

from lorank.data.sources import eval_label

from lorank.evaluation import compare

from lorank.study.store import finished_ablations

log = logging.getLogger("lorank.report")


@dataclass
class PooledSweep:
    subject: str  # the run id, or adapter:<name>
    sweep: str
    sets: list[str]  # eval labels, in plan order
    queries: int  # judged queries pooled
    depths: list[int]
    rows: list[dict[str, Any]]  # as an ablations.json sweep's rows (lorank.ablate.run.comparison_table)
    left_out: list[str] = field(default_factory=list)  # configurations missing from some set (not pooled)

    @property
    def where(self) -> str:
        sets = " + ".join(s.upper() if s.startswith("dl") else s for s in self.sets)
        depth = "/".join(str(d) for d in self.depths)
        roles = "/".join(dict.fromkeys(role_of(s) for s in self.sets))
        return f"{sets} pooled ({roles}), {self.queries} queries x top-{depth}"


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    return {q: {e.docid: float(e.score) for e in entries} for q, entries in load_run(path).items()}


def pooled_sweeps(plan: Any, study_dir: str | Path) -> list[PooledSweep]:
    """Every (subject, sweep) ablated on two or more eval sets, pooled. A configuration whose TREC run is missing
    on some set is left out of the pooled table and named in ``left_out`` (a warning too)."""
    found: dict[tuple[str, str], list[tuple[Any, Path, dict[str, Any]]]] = {}
    for step, d, data in finished_ablations(plan, study_dir):
        for sweep, entry in data.get("sweeps", {}).items():
            found.setdefault((step.run_id, sweep), []).append((step, d, {**entry, **{
                "eval_set": data.get("eval_set", step.payload["eval"]), "depth": data.get("depth")}}))
    out = []
    for (subject, sweep), items in found.items():
        by_set = {eval_label(e["eval_set"]): (step, d, e) for step, d, e in items}  # one step per set: the last
        if len(by_set) < 2:
            continue
        order = [r["config"] for r in items[0][2]["rows"]]
        groups = {r["config"]: r.get("group", "reference") for r in items[0][2]["rows"]}
        runs_dir = {label: d / "runs" / sweep.replace("/", "_") for label, (_, d, _) in by_set.items()}
        left_out = [n for n in order if any(not (runs_dir[s] / f"{run_file_stem(n)}.run").is_file() for s in by_set)
                    or any(n not in {r["config"] for r in e["rows"]} for _, _, e in by_set.values())]
        if "full" in left_out or "none" in left_out:
            log.warning("report: %s on %s has no TREC run of the full adapter or of LoRA off on every set; "
                        "not pooled", sweep, subject)
            continue
        if left_out:
            log.warning("report: pooled %s on %s leaves out %s (no TREC run on every set)", sweep, subject, left_out)
        keep = [n for n in order if n not in left_out]
        qrels: dict[str, dict[str, int]] = {}
        runs: dict[str, dict[str, dict[str, float]]] = {n: {} for n in keep}
        for label, (step, _, entry) in by_set.items():
            rs = resolve_eval_set(step.payload["eval"], plan.spec.data_root).subset(step.payload.get("max_queries"))
            qrels.update({f"{label}:{q}": dict(v) for q, v in rs.qrels.items() if q in rs.run})
            for n in keep:
                for q, docs in _read_run(runs_dir[label] / f"{run_file_stem(n)}.run").items():
                    runs[n][f"{label}:{q}"] = docs
        cmp = compare(qrels, {n: runs[n] for n in keep}, baseline="full", measures=list(MEASURES))
        queries = len(cmp.results["full"].per_query[MEASURES[0]])
        out.append(PooledSweep(subject, sweep, list(by_set), queries,
                               sorted({int(e["depth"]) for _, _, e in by_set.values() if e.get("depth")}),
                               comparison_table(cmp, keep, groups), left_out))
    return out
