"""A study's folder (``lorank study SPEC --out DIR``): the names the executor, the report and the snapshot share.

::

    study.yaml           the spec it runs (a copy of the one given)
    findings.json        the findings' verdicts (``lorank findings``), beside results.csv
    runs/<run id>/       each training run's folder (lorank.layout.run)
    time.json            the time the study took: each step's calls summed (lorank.study.timing)
    <step out dir>/.lorank-step.json
                         the marker of a finished step: its id, hash and status, written last
    <step out dir>/.lorank-calls.jsonl
                         the step's call ledger: a line per call of it (ok, failed, interrupted), appended at its
                         end; never rewritten, and kept when the step's outputs are cleared for a redo
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorank.atomic import append_line, read_jsonl
from lorank.errors import DataError

SPEC = "study.yaml"
FINDINGS_FILE = "findings.json"  # the findings (lorank.report.findings_section), at the top level
RUNS_DIR = "runs"
#: a step's marker, written last into its folder once it has succeeded
STEP_MARKER = ".lorank-step.json"
#: a step's call ledger, in its folder beside the marker
CALLS = ".lorank-calls.jsonl"
TIME_FILE = "time.json"


def spec_file(study_dir: str | Path) -> Path:
    return Path(study_dir) / SPEC


def is_study_dir(p: str | Path) -> bool:
    return spec_file(p).is_file()


def run_out_dir(run_id: str) -> str:
    """A training run's folder, relative to the study's (a step's ``out_dir``)."""
    return f"{RUNS_DIR}/{run_id}"


def run_dir(study_dir: str | Path, run_id: str) -> Path:
    """A training run's folder in the study."""
    return Path(study_dir) / RUNS_DIR / run_id


def finished_steps(study_dir: Path) -> dict[str, dict[str, Any]]:
    """step id -> marker, for every finished step under the study folder."""
    out = {}
    for m in Path(study_dir).rglob(STEP_MARKER):
        try:
            data = json.loads(m.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(m, None, f"unreadable step marker ({e})") from e
        if data.get("status") == "ok" and data.get("step_id"):
            out[data["step_id"]] = data
    return out


def train_step_id(run_id: str) -> str:
    """The id of the step that trains the study's run ``run_id`` (its marker lies in the run's folder)."""
    return f"train/{run_id}"


def calls_file(step_dir: str | Path) -> Path:
    """A step's call ledger (its folder is the step's ``out_dir`` in the study)."""
    return Path(step_dir) / CALLS


def append_call(step_dir: str | Path, row: dict[str, Any]) -> None:
    """Add one call's line to the step's ledger: one write of the whole line, then fsync (a crash can cut only
    that line, which the reader skips with a warning)."""
    append_line(calls_file(step_dir), json.dumps(row), fsync=True)


def read_calls(step_dir: str | Path) -> list[Any]:
    """The lines of the step's ledger (none when it has none); a damaged line is a DataError naming the file and
    line (:func:`lorank.atomic.read_jsonl`)."""
    return read_jsonl(calls_file(step_dir), missing_ok=True)[0]


def time_file(study_dir: str | Path) -> Path:
    return Path(study_dir) / TIME_FILE
