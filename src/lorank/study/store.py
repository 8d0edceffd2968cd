"""The results store: one tidy table of every evaluation in a study (checkpoints, first stage, ablations, and the
``source: curve`` points of ``eval.curve``, which never choose anything), plus the paired comparisons of each run's
final checkpoint against the reference run. ``alpha`` is the alpha PEFT trained with (its ``alpha_policy`` applied).

Query it from Python with ``lorank.study.load_results(STUDY_DIR)`` (a pandas DataFrame); it is also
exported as ``results.csv`` and ``results.parquet``.
"""
from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any, Iterator

from lorank.atomic import atomic_write_bytes, atomic_write_text
from lorank.data import resolve_eval_set
from lorank.data.roles import role_of
from lorank.data.sources import eval_label
from lorank.evaluation import evaluate
from lorank.layout.run import read_curve, read_metrics
from lorank.layout.study import finished_steps, run_dir, train_step_id
from lorank.study.external import adapter_axes
from lorank.study.plan import Plan

MEASURES = ("ndcg_cut_10", "recip_rank_10", "recall_100", "map")
COLUMNS = ["source", "run_id", "model", "rank", "alpha", "dropout", "components", "projections", "layers", "variant",
           "seed", "step", "final", "eval_set", "sweep", "config", "group", *MEASURES, "delta_ndcg_cut_10",
           "recovered_ndcg_cut_10", "p_ndcg_cut_10", "significant_ndcg_cut_10", "delta_recip_rank_10",
           "recovered_recip_rank_10", "p_recip_rank_10", "significant_recip_rank_10", "alpha_policy", "role"]
#: ``role`` (last, so readers by position keep working): dev / test / ood of the row's eval set
#: (lorank.data.roles); a checkpoint row's is its metrics row's, or role_of(eval_set) for rows from before roles


log = logging.getLogger("lorank.study")


def _axes(run: Any) -> dict[str, Any]:
    a = dict(run.axes)
    p = a.get("projections")
    a["projections"] = "+".join(p) if isinstance(p, list) else (p or "all")
    lay = a.get("layers")
    a["layers"] = ",".join(map(str, lay)) if isinstance(lay, list) else str(lay)
    return {"run_id": run.run_id, "model": run.model, **{k: a.get(k) for k in
            ("rank", "alpha", "dropout", "components", "projections", "layers", "variant", "seed")},
            "alpha_policy": a.get("alpha_policy") or "fixed"}  # alpha: the effective one (lorank.lora.spec)


def finished_runs(plan: Plan, study_dir: str | Path) -> set[str]:
    """The study's runs whose training step has finished (its marker says ok, whatever code version wrote it): only
    their last checkpoint is a final one. A run still in training (stopped between sessions, resumed later) has
    checkpoints evaluated along the way, and its last one so far is not its final checkpoint."""
    done = finished_steps(Path(study_dir))
    return {r.run_id for r in plan.runs if train_step_id(r.run_id) in done}


def collect_rows(plan: Plan, study_dir: Path) -> list[dict[str, Any]]:
    study_dir = Path(study_dir)
    rows: list[dict[str, Any]] = []
    finished = finished_runs(plan, study_dir)
    for run in plan.runs:
        rdir = run_dir(study_dir, run.run_id)
        metrics = read_metrics(rdir)  # a torn last line skipped with a warning, any other bad line an error
        # a run in training has no final checkpoint yet: its rows are kept, none of them final
        last = max((m["step"] for m in metrics), default=None) if run.run_id in finished else None
        tests = run.train_config.get("eval", {}).get("test_sets", [])
        for m in metrics:
            rows.append({"source": "checkpoint", **_axes(run), "step": m["step"], "final": m["step"] == last,
                         "eval_set": m["eval_set"], **{k: m.get(k) for k in MEASURES},
                         "role": m.get("role") or role_of(m["eval_set"], tests)})
        for c in read_curve(rdir):  # eval.curve: the model in training, every N steps; never a checkpoint to choose
            rows.append({"source": "curve", **_axes(run), "step": c["step"], "final": False,
                         "eval_set": c["eval_set"], "role": c.get("role", "dev"), "depth": c.get("depth"),
                         **{k: c.get(k) for k in MEASURES}})
        rows += _ablation_rows(plan, study_dir, run.run_id, _axes(run), last)
    for ext in plan.adapters.values():  # external adapters: run_id adapter:<name>, columns from their metadata

        rows += _ablation_rows(plan, study_dir, ext.run_id, adapter_axes(ext), ext.step)
    return rows


def finished_ablations(plan: Plan, study_dir: str | Path, run_id: str | None = None) -> Iterator[tuple[Any, Path, dict]]:
    """(step, its folder, its ``ablations.json``) of every ablation step that has written its results, in plan
    order; only the steps on `run_id` (a study run or adapter:<name>) when given."""
    for step in plan.steps:
        if step.kind != "ablate" or (run_id is not None and step.run_id != run_id):
            continue
        d = Path(study_dir) / step.out_dir
        f = d / "ablations.json"
        if f.is_file():
            yield step, d, json.loads(f.read_text(encoding="utf-8"))


def _ablation_rows(plan: Plan, study_dir: Path, run_id: str, axes: dict[str, Any], step_no: Any) -> list[dict[str, Any]]:
    """The rows of every finished ablation step on `run_id` (a study run or adapter:<name>)."""
    rows = []
    for _, _, data in finished_ablations(plan, study_dir, run_id):
        for sweep, entry in data.get("sweeps", {}).items():
            for r in entry["rows"]:
                rows.append({"source": "ablation", **axes, "step": step_no, "final": True,
                             "eval_set": eval_label(data.get("eval_set", "")), "sweep": sweep,
                             **{k: v for k, v in r.items()}, "role": role_of(data.get("eval_set", ""))})
    return rows


def first_stage_rows(plan: Plan) -> list[dict[str, Any]]:
    """The first-stage (BM25) metrics of each eval set the study uses, on the same query subsets."""
    seen: set[tuple[str, Any]] = set()
    rows = []
    specs = [(s, r.train_config.get("eval", {}).get("max_queries")) for r in plan.runs
             for key in ("sets", "test_sets") for s in r.train_config.get("eval", {}).get(key, [])]
    specs += [(a.eval, a.max_queries) for a in plan.spec.ablations]
    for name, mq in specs:
        if (name, mq) in seen:
            continue
        seen.add((name, mq))
        rs = resolve_eval_set(name, plan.spec.data_root).subset(mq)  # a missing set fails the plan before this
        if not rs.qrels:
            log.warning("first stage of %s not evaluated: the set has no qrels", name)
            continue
        agg = evaluate(rs.qrels, rs.run, rel_threshold=2).aggregate

        rows.append({"source": "first-stage", "run_id": "bm25", "model": "BM25", "eval_set": eval_label(name),
                     "config": f"first {mq} queries" if mq else "all queries", "max_queries": mq,
                     **{k: round(float(agg[k]), 6) for k in MEASURES if k in agg}, "role": role_of(name)})
    return rows


def write_results(plan: Plan, study_dir: Path, include_first_stage: bool = True) -> Any:
    """Collect every evaluation into results.csv / results.parquet; returns the DataFrame."""
    import pandas as pd

    rows = collect_rows(plan, study_dir)
    if include_first_stage:
        rows += first_stage_rows(plan)
    df = pd.DataFrame(rows)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = None
    df = df[COLUMNS + [c for c in df.columns if c not in COLUMNS]]
    atomic_write_text(Path(study_dir) / "results.csv", df.to_csv(index=False))
    buf = io.BytesIO()  # pyarrow is a dependency: results.parquet is always written beside results.csv
    typed = df.convert_dtypes()  # nullable int/float/bool/string columns; a column of mixed kinds stays object
    typed = typed.astype({c: "string" for c in typed.columns
                          if typed[c].dtype == object or c in ("projections", "layers", "config", "group", "sweep",
                                                                "alpha")})
    typed.to_parquet(buf, index=False)
    atomic_write_bytes(Path(study_dir) / "results.parquet", buf.getvalue())
    return df


def load_results(study_dir: str | Path) -> Any:
    """The study's tidy results table (pandas DataFrame): one row per evaluation."""
    import pandas as pd

    study_dir = Path(study_dir)
    df = None
    if (study_dir / "results.parquet").is_file():
        df = pd.read_parquet(study_dir / "results.parquet")
    elif (study_dir / "results.csv").is_file():
        df = pd.read_csv(study_dir / "results.csv")
    if df is not None:
        if "alpha_policy" not in df.columns:  # a table written before the policy existed: every alpha was fixed
            df["alpha_policy"] = df["source"].map(lambda s: None if s == "first-stage" else "fixed")
        return df
    raise FileNotFoundError(f"{study_dir}: no results.csv; run `lorank study` or `lorank report` first")
