"""Evaluating runs: metrics (ir_measures), significance tests, the statistics of paired comparisons, TREC run
writing and its ranking rule. Running the model over pairs to make a run is :mod:`lorank.inference`'s job.

Python twin of `lorank evaluate`: `evaluate`, `compare`, `evaluate_files`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lorank.atomic import atomic_write_json
from lorank.data import load_qrels, load_run
from lorank.errors import ConfigError
from lorank.evaluation.metrics import (
    DEFAULT_MEASURES,
    Comparison,
    ComparisonResult,
    EvalResult,
    compare,
    evaluate,
    pool_sets,
    resolve_measure,
)
from lorank.evaluation.significance import holm, holm_adjust, paired_ttest
from lorank.evaluation.trec_io import trec_order, write_run

__all__ = [
    "DEFAULT_MEASURES",
    "Comparison",
    "ComparisonResult",
    "EvalResult",
    "compare",
    "evaluate",
    "evaluate_files",
    "holm",
    "holm_adjust",
    "paired_ttest",
    "pool_sets",
    "resolve_measure",
    "run_names",
    "trec_order",
    "write_run",
]


def run_names(paths: Sequence[str | Path]) -> list[str]:
    """Display names for run files: the file name, or the shortest unique path suffix
    (`trec-dl-2019/bm25.run`) where file names clash."""
    parts = [Path(p).parts for p in paths]
    if len({tuple(p) for p in parts}) != len(parts):
        raise ConfigError(f"the same run file is given twice: {[str(p) for p in paths]}")
    for n in range(1, max(len(p) for p in parts) + 1):
        names = [str(Path(*p[-n:])) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def evaluate_files(
    qrels_path: str | Path,
    run_paths: Sequence[str | Path] | str | Path,
    rel_threshold: int = 2,
    per_query: bool = False,
    json_out: str | Path | None = None,
    measures: Sequence[str] | None = None,
    baseline: str | None = None,
) -> ComparisonResult:
    """Read a TREC qrels file and one or more TREC runs, evaluate, and compare them.

    Runs are named by file name (full path where two share a name); the first is the
    baseline unless `baseline` names another. With one run there are no comparisons.
    With `json_out`, the result (`ComparisonResult.to_dict`) is written there atomically.
    """
    if isinstance(run_paths, (str, Path)):
        run_paths = [run_paths]
    if not run_paths:
        raise ConfigError("no run file given")
    qrels = load_qrels(qrels_path)
    names = run_names(run_paths)
    runs = {name: load_run(p) for name, p in zip(names, run_paths)}
    result = compare(qrels, runs, baseline=baseline, rel_threshold=rel_threshold,
                     measures=measures, per_query=per_query)
    if json_out is not None:
        d = result.to_dict()
        d["qrels"] = str(qrels_path)
        d["run_files"] = {name: str(p) for name, p in zip(names, run_paths)}
        atomic_write_json(json_out, d)
    return result
