"""A training run's folder (``lorank train``'s ``output_dir``, a study's ``runs/<id>/``): the name of every file in
it, and its rows of metrics.

::

    config.json          the resolved config (what a resume checks, a report and an export read)
    train_log.jsonl      a row per logging step
    metrics.jsonl        a row per (checkpoint step, evaluation set)
    curve.jsonl          a row per (step, set) of the dense curve of the model in training (eval.curve)
    train_summary.json   the totals of the last call
    train_calls.jsonl    a row per `lorank train` call: the step it went on from, its precision, CPU and forward
    checkpoints.png      the evaluations by step
    runs_trec/           the reranked TREC runs: checkpoint-N.<set>.run, curve-N.<set>.run
    checkpoint-N/        the checkpoints (lorank.layout.checkpoints)

The JSONL row files are read with :func:`lorank.atomic.read_jsonl` (a torn last line is skipped with a warning, any
other bad line raises ``DataError``) and rewritten whole, atomically, one row per (step, set).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_text, read_jsonl

CONFIG = "config.json"
TRAIN_LOG = "train_log.jsonl"
METRICS = "metrics.jsonl"
CURVE = "curve.jsonl"
SUMMARY = "train_summary.json"
TRAIN_CALLS = "train_calls.jsonl"
PLOT = "checkpoints.png"
TREC_DIR = "runs_trec"
#: the kinds of reranked TREC runs in runs_trec/: a checkpoint's evaluation, a point of the dense curve
TREC_CHECKPOINT, TREC_CURVE = "checkpoint", "curve"

#: the run's own files a resume or a report reads (a snapshot copies each when present), and its folders
RUN_FILES = (CONFIG, TRAIN_LOG, METRICS, SUMMARY, CURVE, TRAIN_CALLS)
RUN_DIRS = (TREC_DIR,)
#: what a fresh start (``--no-resume``) in a used folder sets aside with the old checkpoints
PREVIOUS_OUTPUTS = (METRICS, TREC_DIR, TRAIN_LOG, SUMMARY, PLOT, CURVE, TRAIN_CALLS)


def config_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / CONFIG


def train_log_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / TRAIN_LOG


def metrics_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / METRICS


def curve_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / CURVE


def summary_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / SUMMARY


def train_calls_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / TRAIN_CALLS


def plot_file(run_dir: str | Path) -> Path:
    return Path(run_dir) / PLOT


def read_run_config(run_dir: str | Path) -> Any:
    """The run's resolved config (``config.json``); None when it is missing or unreadable."""
    f = config_file(run_dir)
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def trec_run_file(run_dir: str | Path, kind: str, step: int, label: str) -> Path:
    """The reranked TREC run of a checkpoint (``kind`` :data:`TREC_CHECKPOINT`) or a curve point
    (:data:`TREC_CURVE`) of ``step`` on the evaluation set labelled ``label``."""
    return Path(run_dir) / TREC_DIR / f"{kind}-{step}.{label}.run"


def trec_run_step(f: Path) -> int:
    """The step of a TREC run file of runs_trec/ (``checkpoint-N.<set>.run``, ``curve-N.<set>.run``)."""
    return int(f.name.split(".")[0].split("-")[-1])


def trec_runs(run_dir: str | Path, kind: str, label: str) -> dict[int, Path]:
    """step -> the run's TREC run of that ``kind`` on the set ``label``, by step."""
    files = sorted((Path(run_dir) / TREC_DIR).glob(f"{kind}-*.{label}.run"), key=trec_run_step)
    return {trec_run_step(f): f for f in files}


def _read_rows(f: Path) -> list[dict[str, Any]]:
    return read_jsonl(f, missing_ok=True)[0]


def _write_row(f: Path, rows: list[dict[str, Any]], row: dict[str, Any]) -> None:
    """Rewrite ``f`` atomically with ``row`` in place of the one of its (step, eval set), sorted by set and step."""
    rows = [r for r in rows if (r["step"], r["eval_set"]) != (row["step"], row["eval_set"])]
    rows.append(row)
    rows.sort(key=lambda r: (r["eval_set"], r["step"]))
    atomic_write_text(f, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/metrics.jsonl`` (none when it does not exist yet)."""
    return _read_rows(metrics_file(run_dir))


def append_metrics(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Rewrite ``metrics.jsonl`` atomically with the new row added (one row per (step, eval set))."""
    _write_row(metrics_file(run_dir), read_metrics(run_dir), row)


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``run_dir/curve.jsonl`` (none when the run has no curve)."""
    return _read_rows(curve_file(run_dir))


def append_curve(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Rewrite ``curve.jsonl`` atomically with the new row added (one row per (step, eval set))."""
    _write_row(curve_file(run_dir), read_curve(run_dir), row)


def read_train_calls(run_dir: str | Path) -> list[dict[str, Any]]:
    """The rows of ``train_calls.jsonl``, in the order the calls started (none for a run trained before lorank wrote
    it)."""
    return _read_rows(train_calls_file(run_dir))


def append_train_call(run_dir: str | Path, row: dict[str, Any]) -> None:
    """Add one ``lorank train`` call's row (``from_step``: the first step it trains; what it trained in and on):
    written when the call starts, so a call stopped before its first checkpoint is recorded too."""
    f = train_calls_file(run_dir)
    rows = _read_rows(f)
    atomic_write_text(f, "".join(json.dumps(r, sort_keys=False) + "\n" for r in [*rows, row]))


def _standing_calls(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls whose steps stand: a call that went on from an earlier (or the same) step than an earlier call
    retrained that call's steps from there (a resume from an older checkpoint, a crash before the first save), so
    the earlier call's row no longer describes any kept step."""
    kept: list[dict[str, Any]] = []
    for row in rows:
        start = row.get("from_step")
        if isinstance(start, int):
            kept = [r for r in kept if not (isinstance(r.get("from_step"), int) and r["from_step"] >= start)]
        kept.append(row)
    return kept


def trained_precisions(run_dir: str | Path) -> tuple[list[str], str]:
    """The precisions a run's steps trained in (``bf16``, ``fp32``; two where it was resumed on another kind of CPU)
    and where that is read: every call's row of ``train_calls.jsonl``, else ``config.json``'s ``precision`` (only
    the last call's: a run trained before lorank wrote train_calls.jsonl), else nothing known ([], "")."""
    rows = _standing_calls(read_train_calls(run_dir))
    if rows:
        return sorted({str(r["dtype"]) for r in rows if r.get("dtype")}), TRAIN_CALLS
    cfg = read_run_config(run_dir)
    dtype = ((cfg or {}).get("precision") or {}).get("dtype") if isinstance(cfg, dict) else None
    return ([str(dtype)], f"{CONFIG} (the last call)") if dtype else ([], "")


def training_calls(run_dir: str | Path) -> list[dict[str, Any]]:
    """One entry per ``lorank train`` call that built this run (a resume starts a new call), from train_log.jsonl:
    the steps it trained, its wall time and the tokens it trained, and what ``train_calls.jsonl`` recorded of it when
    it started (precision, CPU, forward, allocator: runs trained before lorank wrote that file have none).
    ``elapsed_s`` restarts at each call, and a resumed call's cumulative token count starts from the checkpoint it
    resumed (the last logged step before its first), so steps trained twice (after an interruption past the last
    checkpoint) count in both calls.

    ``s`` is the last ``elapsed_s`` of the call: the training loop's wall time (pauses included; loading before it
    and the test sets scored after it are not in it), and of an interrupted call only up to its last row that the
    next call kept (a resume drops the rows past the checkpoint it goes on from)."""
    calls: list[dict[str, Any]] = []
    seen: dict[int, int] = {}  # step -> cumulative tokens, as last logged
    first: dict[str, Any] | None = None
    prev: dict[str, Any] | None = None
    start = 0

    def close() -> None:
        assert first is not None and prev is not None
        calls.append({"steps": f"{first['step']}-{prev['step']}", "s": prev["elapsed_s"],
                      "tokens": prev["tokens"] - start})

    for r in _read_rows(train_log_file(run_dir)):
        if not isinstance(r, dict) or any(k not in r for k in ("step", "tokens", "elapsed_s")):
            continue
        if prev is not None and r["elapsed_s"] < prev["elapsed_s"]:  # the next call resumed here
            close()
            first = None
        if first is None:
            first = r
            earlier = [s for s in seen if s < r["step"]]
            start = seen[max(earlier)] if earlier else 0
        seen[r["step"]] = r["tokens"]
        prev = r
    if prev is not None:
        close()
    # from_step -> the latest call that started there (an earlier one that kept no row past its checkpoint is not
    # in the log: the resume dropped its rows); a call's first logged step is its from_step or, when it logs every
    # N steps (log_every, 10 on CUDA), a later one: the call is the row with the largest from_step up to it, above
    # the previous call's first logged step
    recorded: dict[int, dict[str, Any]] = {}
    for row in read_train_calls(run_dir):
        if isinstance(row.get("from_step"), int):
            recorded[row["from_step"]] = row
    before = 0
    for c in calls:
        c["tokens_per_s"] = round(c["tokens"] / c["s"], 1) if c["s"] else None
        first_step = int(c["steps"].split("-")[0])
        start = max((k for k in recorded if before < k <= first_step), default=None)
        if start is not None:
            c.update({k: v for k, v in recorded[start].items() if k != "from_step"})
        before = first_step
    return calls
