"""The time a study took, measured: each call of each step in the step's call ledger, and the study's time table.

A step runs in one or more calls, a worker process each: the first, then a re-run after a failure or a signal (a
long study is stopped with SIGTERM at the end of each session and resumed in the next). The executor appends one
line per call to the step's ledger (``<step folder>/.lorank-calls.jsonl``, :mod:`lorank.layout.study`) however the
call ends (``ok``, ``failed``, ``interrupted``): when it started and ended, its wall seconds, its CPU seconds (user
+ system of the worker and the children it waited for: unlike the wall, not stretched while the machine is shared
or the process is paused by SIGSTOP), the exit code, the code's commit, the machine and the threads.

:func:`time_table` sums a study folder's ledgers: CPU and wall hours per step, per kind (train / ablate / analyze)
and in total, and the calls by status. Calls made before the ledger existed are recovered from the run files, as
wall time only (pauses included), and summed in columns of their own, never with the ledger's figures:

- a training run: a call per segment of its ``train_log.jsonl`` (``elapsed_s`` restarts at each call:
  :func:`lorank.layout.run.training_calls`), the training loop's wall time; the last call's whole wall time (the
  loading before the loop and the test sets scored after it included) from the step marker where the step
  finished, with that call's scoring times from ``train_summary.json``;
- another step: its marker's wall time, the last (ok) call's; its earlier calls were recorded nowhere.

When a step's first ledger line is written, what its folder recovers goes in first (status ``before-ledger``), so a
study resumed across the change keeps both. :func:`study_time` writes the table as the study's ``time.json``
(``lorank study-time STUDY_DIR``); the report shows it by kind.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from lorank.precision import cpu_model
from lorank.atomic import atomic_write_json
from lorank.errors import DataError
from lorank.layout.run import summary_file, train_log_file, training_calls
from lorank.layout.study import (CALLS, RUNS_DIR, STEP_MARKER, append_call, calls_file, is_study_dir, read_calls,
                                 time_file, train_step_id)

#: the status of a call recovered from the run files, made before the ledger existed
BEFORE = "before-ledger"
KINDS = ("train", "ablate", "analyze")
_LOOP = ("train_log.jsonl: the training loop's wall time, pauses included (the loading before it, the scoring after "
         "it, and an interrupted call's steps past the checkpoint the next call went on from are not in it)")
_LAST = ".lorank-step.json: the last call's whole wall time, pauses included"
_MARKED = ".lorank-step.json: the last (ok) call's wall time, pauses included; earlier calls were recorded nowhere"
#: the scoring times train_summary.json gives of the last call (parts of its wall time, not added to it)
_SUMMARY_PARTS = ("eval_in_training_s", "curve_s", "test_eval_s")


@functools.cache
def code_commit() -> str | None:
    """The commit of the lorank source that runs (``git rev-parse HEAD``); None where it is not a git checkout's
    tracked file (an installed package). Cached: its git children run once, before any call is timed."""
    pkg = Path(__file__).resolve().parents[1]
    try:
        tracked = subprocess.run(["git", "-C", str(pkg), "ls-files", "--error-unmatch", "__init__.py"],
                                 capture_output=True, text=True, timeout=10)
        head = subprocess.run(["git", "-C", str(pkg), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (head.stdout.strip() or None) if tracked.returncode == 0 and head.returncode == 0 else None


@functools.cache
def machine() -> dict[str, Any]:
    """The CPU's model name (:func:`lorank.precision.cpu_model`), its CPU count and the CPUs this process may run
    on."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "cpus_allowed": allowed}


def now() -> datetime:
    return datetime.now().astimezone()


def call_line(step: Any, started: datetime, wall_s: float, cpu_s: float, status: str, exit_code: int | None,
              facts: dict[str, Any]) -> dict[str, Any]:
    """One call's ledger line. ``facts``: what the worker reported of itself (:func:`lorank.study.worker.call_facts`;
    {} when it could not)."""
    return {"step_id": step.step_id, "hash": step.hash, "status": status,
            "started": started.isoformat(timespec="seconds"), "ended": now().isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 2), "cpu_s": round(cpu_s, 2), "exit_code": exit_code, "commit": code_commit(),
            "machine": machine(),
            "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": facts.get("torch_threads")}}


def _read_json(f: Path) -> dict[str, Any]:
    """A JSON object file ({} when it is not there); an unreadable one is a DataError naming it."""
    if not f.is_file():
        return {}
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f, None, f"unreadable ({e})") from e
    return data if isinstance(data, dict) else {}


def _before(step_id: str, marker: dict[str, Any], wall_s: float, source: str, **extra: Any) -> dict[str, Any]:
    return {"step_id": step_id, "hash": marker.get("hash"), "status": BEFORE, "wall_s": round(float(wall_s), 2),
            "cpu_s": None, "source": source, **extra}


def recovered_calls(step_dir: Path, step_id: str) -> list[dict[str, Any]]:
    """What the step's folder says of its calls without a ledger (see the module's docstring): wall time only,
    pauses included, status ``before-ledger``; ``cpu_s`` only where the marker measured it (the last call)."""
    marker = _read_json(Path(step_dir) / STEP_MARKER)
    done = marker.get("status") == "ok" and marker.get("wall_s") is not None
    last = (_before(step_id, marker, marker["wall_s"], _LAST if step_id.startswith("train/") else _MARKED,
                    ended=marker.get("finished")) | {"cpu_s": marker.get("cpu_s")}) if done else None
    if not step_id.startswith("train/"):
        return [last] if last else []
    lines = [_before(step_id, marker, c["s"], _LOOP, steps=c["steps"]) for c in training_calls(step_dir)]
    summary = _read_json(summary_file(step_dir))
    if last is not None:
        if lines and summary.get("steps_this_call") != 0:  # the marker's call trained: it is the log's last segment
            last["steps"] = lines.pop()["steps"]
        lines.append(last)
    if lines and summary and (last is not None or lines[-1]["steps"].split("-")[-1] == str(summary.get("steps"))):
        lines[-1]["summary"] = {k: summary[k] for k in _SUMMARY_PARTS if k in summary}  # the last call wrote it
    return lines


def open_ledger(step_dir: Path, step_id: str) -> None:
    """Before a step's first ledger line: write what its folder recovers of its earlier calls (none for a step
    never run, or run only since the ledger exists)."""
    if calls_file(step_dir).exists():
        return
    for line in recovered_calls(step_dir, step_id):
        append_call(step_dir, line)


def _step_folders(study_dir: Path) -> dict[str, Path]:
    """step id -> its folder, for every folder of the study with a call ledger, a step marker, or (a training run)
    a train_log.jsonl."""
    found: dict[str, Path] = {}
    for f in sorted(study_dir.rglob(CALLS)):
        sid = next((r["step_id"] for r in read_calls(f.parent) if isinstance(r, dict) and r.get("step_id")), None)
        if not sid:
            raise DataError(f, None, "no line names its step (step_id): not a call ledger the executor wrote")
        found[sid] = f.parent
    for m in sorted(study_dir.rglob(STEP_MARKER)):
        sid = _read_json(m).get("step_id")
        if sid:
            found.setdefault(sid, m.parent)
    for run in sorted(p for p in (study_dir / RUNS_DIR).glob("*") if train_log_file(p).is_file()):
        found.setdefault(train_step_id(run.name), run)
    return found


def _checked(f: Path, lines: list[Any]) -> list[dict[str, Any]]:
    """The ledger's lines, each with a status and its seconds as numbers; else a DataError naming file and call."""
    for i, r in enumerate(lines, 1):
        if not isinstance(r, dict) or not isinstance(r.get("status"), str):
            raise DataError(f, None, f"call {i}: not a ledger line (no status)")
        for k in ("wall_s",) + (("cpu_s",) if r["status"] != BEFORE else ()):
            if not isinstance(r.get(k), (int, float)) or isinstance(r.get(k), bool) or r[k] < 0:
                raise DataError(f, None, f"call {i}: {k} is {r.get(k)!r}, not a number of seconds")
    return lines


def _h(seconds: float) -> float:
    return round(seconds / 3600, 4)


def _sums(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Calls, CPU and wall hours of the ledger's lines, and apart from them the calls recovered from before it."""
    led = [r for r in lines if r["status"] != BEFORE]
    old = [r for r in lines if r["status"] == BEFORE]
    return {"calls": len(led), "by_status": dict(Counter(r["status"] for r in led)),
            "cpu_h": _h(sum(r["cpu_s"] for r in led)), "wall_h": _h(sum(r["wall_s"] for r in led)),
            "calls_before_ledger": len(old), "wall_h_before_ledger": _h(sum(r["wall_s"] for r in old))}


def time_table(study_dir: str | Path) -> dict[str, Any]:
    """The study's time table (see the module's docstring): ``steps`` (each with its folder, kind, sums and call
    lines), ``kinds`` and ``total``."""
    study_dir = Path(study_dir)
    if not is_study_dir(study_dir):
        raise DataError(study_dir, None, "not a study folder (no study.yaml): run `lorank study` first")
    steps: dict[str, dict[str, Any]] = {}
    for sid, d in _step_folders(study_dir).items():
        f = calls_file(d)
        lines = _checked(f, read_calls(d)) if f.is_file() else recovered_calls(d, sid)
        steps[sid] = {"folder": str(d.relative_to(study_dir)), "kind": sid.split("/")[0], **_sums(lines),
                      "ledger": f.is_file(), "call_lines": lines}
    order = {k: i for i, k in enumerate(KINDS)}
    steps = dict(sorted(steps.items(), key=lambda kv: (order.get(kv[1]["kind"], len(order)), kv[0])))

    def group(kind: str | None) -> dict[str, Any]:
        chosen = [s for s in steps.values() if kind in (None, s["kind"])]
        return {"steps": len(chosen), **_sums([r for s in chosen for r in s["call_lines"]])}

    kinds = list(dict.fromkeys(s["kind"] for s in steps.values()))
    return {"study": study_dir.name, "written": now().isoformat(timespec="seconds"),
            "note": ("cpu_h: CPU hours (user + system) each call's process measured, recorded by the call ledger; "
                     "wall_h: its wall hours, pauses and a shared machine's waits included; *_before_ledger: calls "
                     "made before the ledger existed, recovered from the run files (wall only, pauses included, a "
                     "lower bound where a source says so), never added to cpu_h or wall_h"),
            "total": group(None), "kinds": {k: group(k) for k in kinds}, "steps": steps}


def study_time(study_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """:func:`time_table` of ``study_dir``, written to ``out`` (default: the study's ``time.json``); returned."""
    table = time_table(study_dir)
    atomic_write_json(Path(out) if out is not None else time_file(study_dir), table)
    return table


def time_rows(table: dict[str, Any], by: str = "kind") -> tuple[list[str], list[list[str]]]:
    """The table's header and rows by step kind and in total (``by="kind"``) or by step (``"step"``), as the report
    and ``lorank study-time`` show them."""
    header = ["step" if by == "step" else "kind", "calls (ok / failed / interrupted)", "CPU h", "wall h",
              "before the ledger: calls, wall h (pauses included)"]
    groups = (list(table["steps"].items()) if by == "step"
              else [*table["kinds"].items(), ("total", table["total"])])
    rows = []
    for name, g in groups:
        st = g["by_status"]
        rows.append([name, f"{g['calls']} ({st.get('ok', 0)} / {st.get('failed', 0)} / {st.get('interrupted', 0)})",
                     f"{g['cpu_h']:.2f}", f"{g['wall_h']:.2f}",
                     f"{g['calls_before_ledger']}, {g['wall_h_before_ledger']:.2f}" if g["calls_before_ledger"]
                     else "-"])
    return header, rows
