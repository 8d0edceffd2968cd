"""Per-query nDCG@10 for the findings (:class:`lorank.report.findings.PerQuery`), read from the TREC runs a study
writes: each run's checkpoints (``runs/<run>/runs_trec/checkpoint-N.<set>.run``), the reference adapter's ablations
(``ablations/<run>/<i>/runs/<sweep>/<config>.run``, or an external adapter's, ``ablations/adapter-<name>/...``)
and the first stage (BM25) of the main eval set(s)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lorank.ablate.run import run_file_stem
from lorank.data import load_run, resolve_eval_set
from lorank.data.sources import eval_label
from lorank.evaluation import evaluate
from lorank.layout.run import TREC_CHECKPOINT, TREC_CURVE, trec_runs
from lorank.layout.study import run_dir
from lorank.report.findings import MEASURE, PerQuery
from lorank.study.store import finished_ablations, finished_runs

log = logging.getLogger("lorank.report")


def per_query(qrels: dict[str, dict[str, int]], run: Any) -> dict[str, float]:
    return dict(evaluate(qrels, run, rel_threshold=2, measures=[MEASURE]).per_query[MEASURE])


def _read(path: Path) -> dict[str, dict[str, float]]:
    return {q: {e.docid: float(e.score) for e in entries} for q, entries in load_run(path).items()}


def ablation_subject(plan: Any, reference: Any) -> str:
    """Whose ablations the findings read: the reference run's when it is ablated, else the one external adapter
    (``adapter:<name>``) the spec's ablations dissect, else the reference run (none)."""
    ablated = list(dict.fromkeys(s.run_id for s in plan.steps if s.kind == "ablate"))
    if reference.run_id in ablated:
        return reference.run_id
    external = [r for r in ablated if r.startswith("adapter:")]
    return external[0] if len(external) == 1 else reference.run_id


def eval_depths(reference: Any) -> dict[str, int | None]:
    """The first-stage depths the reference run's checkpoints and dense curve were reranked at (its ``eval``
    config, the defaults of :class:`lorank.train.config.EvalSpec` where it is silent), for the figures' labels."""
    from lorank.train.config import CurveSpec, EvalSpec

    ev = reference.train_config.get("eval") or {}
    curve = ev.get("curve")
    return {"depth": int(ev.get("depth", EvalSpec.model_fields["depth"].default)),
            "curve_depth": (int(curve.get("depth", CurveSpec.model_fields["depth"].default))
                            if isinstance(curve, dict) else None)}


def load_per_query(plan: Any, study_dir: Path, reference: Any, set_name: str, subject: str | None = None,
                   role: str = "dev") -> PerQuery:
    """Per-query nDCG@10 of every checkpoint, of the ablations of `subject` (a run id or ``adapter:<name>``;
    default :func:`ablation_subject`) on the same set, and of BM25.

    `set_name` is the main eval set as the spec names it (dl19, or a folder); its label names the files. The dense
    curve's points (``runs_trec/curve-N.<set>.run``) are read beside the checkpoints'. `role`: the set's role. Only
    the runs whose training has finished count (:func:`lorank.study.store.finished_runs`)."""
    study_dir = Path(study_dir)
    subject = subject or ablation_subject(plan, reference)
    label = eval_label(set_name)
    mq = reference.train_config.get("eval", {}).get("max_queries")
    rs = resolve_eval_set(set_name, plan.spec.data_root).subset(mq)
    if not rs.qrels:  # nothing to test against: every finding is inconclusive ("no per-query data")
        log.warning("findings: %s has no qrels; no per-query metrics", set_name)
        return PerQuery(label, {}, ablations_of=subject, role=role, **eval_depths(reference))
    pq = PerQuery(label, per_query(rs.qrels, rs.run), ablations_of=subject, role=role, **eval_depths(reference))
    finished = finished_runs(plan, study_dir)
    training = [r.run_id for r in plan.runs if r.run_id not in finished and run_dir(study_dir, r.run_id).is_dir()]
    if training:  # its last checkpoint so far is not its final one: a condition's seeds would mix steps
        log.warning("findings: %d run(s) still in training left out: %s", len(training), ", ".join(training))
    for r in plan.runs:
        if r.run_id not in finished:
            continue
        for kind, into in ((TREC_CHECKPOINT, pq.checkpoints), (TREC_CURVE, pq.curve)):
            files = trec_runs(run_dir(study_dir, r.run_id), kind, label)
            if files:
                into[r.run_id] = {step: per_query(rs.qrels, _read(f)) for step, f in files.items()}
    for step, d, data in finished_ablations(plan, study_dir, subject):
        if eval_label(step.payload["eval"]) != label:
            continue
        ars = resolve_eval_set(step.payload["eval"], plan.spec.data_root).subset(step.payload.get("max_queries"))
        for sweep, entry in data.get("sweeps", {}).items():
            for row in entry["rows"]:
                name = row["config"]
                run_file = d / "runs" / sweep.replace("/", "_") / f"{run_file_stem(name)}.run"
                if name in pq.ablations:
                    continue
                if not run_file.is_file():
                    log.warning("findings: %s has no TREC run (ablate with write_runs); left out", run_file)
                    continue
                pq.ablations[name] = per_query(ars.qrels, _read(run_file))
    return pq
