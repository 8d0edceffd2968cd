"""Studies: one YAML spec -> a grid of training runs, ablations and analyses -> a report.

Python twins of the CLI: ``lorank.study.run_study(spec, out)`` then ``lorank.report.build_report(out)``
(``lorank study``; the report is built a stage above, by the caller), ``lorank.study.load_results(dir)``,
``lorank.report.build_report(dir)`` (``lorank report``),
``lorank.study.snapshot_study(dir, out)`` (``lorank snapshot STUDY_DIR``), ``lorank.study.study_time(dir)``
(``lorank study-time STUDY_DIR``: the time each step's calls took, :mod:`lorank.study.timing`).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_text
import lorank.layout.snapshot as snapshots
from lorank.errors import ConfigError
from lorank.layout.study import spec_file
from lorank.study.executor import execute, marker_ok
from lorank.study.plan import Plan, Step, build_plan
from lorank.study.store import load_results, write_results
from lorank.study.spec import RunSpec, StudySpec, expand, load_spec
from lorank.study.timing import study_time

PRESETS_ENV = "LORANK_STUDIES"


def presets_dir() -> Path | None:
    """Where the preset study specs live: $LORANK_STUDIES, else the repository's studies/ folder."""
    env = os.environ.get(PRESETS_ENV)
    for cand in ([Path(env)] if env else []) + [Path(__file__).resolve().parents[3] / "studies",
                                                 Path.cwd() / "studies"]:
        if cand.is_dir():
            return cand
    return None


def find_spec(name_or_path: str | Path) -> Path:
    """A spec file by path, or a preset by name (`demo`, `paper-cpu`, `paper-7b`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    d = presets_dir()
    if d is not None:
        for cand in (d / f"{name_or_path}.yaml", d / str(name_or_path)):
            if cand.is_file():
                return cand
    known = sorted(x.stem for x in d.glob("*.yaml")) if d else []
    raise ConfigError(f"study spec {str(name_or_path)!r} not found: not a file, and not a preset"
                      + (f" (presets in {d}: {', '.join(known)})" if d else f" (no presets folder; set ${PRESETS_ENV})"))


@dataclass
class StudyResult:
    study_dir: Path
    plan: Plan
    outcomes: dict[str, Any]
    #: the report page, where the caller built one (``lorank study`` and the demo call build_report themselves)
    report: Path | None = None

    @property
    def failed(self) -> list[str]:
        return [k for k, v in self.outcomes.items() if v.status in ("failed", "skipped")]

    @property
    def pending(self) -> list[str]:
        """Steps waiting for an external adapter that is not there yet (not failures)."""
        return [k for k, v in self.outcomes.items() if v.status == "pending"]


def prepare(spec_path: str | Path, out: str | Path, data_root: str | Path | None = None) -> tuple[Plan, Path]:
    """Validate the spec fully (every problem at once) and lay out the study directory."""
    spec_path = find_spec(spec_path)
    spec = load_spec(spec_path)
    if data_root is not None:
        spec = spec.model_copy(update={"data_root": str(data_root)})
    plan = build_plan(spec, spec_path)
    if plan.data_problems:
        raise ConfigError(plan.data_problems, spec_path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text = spec_path.read_text(encoding="utf-8")
    if data_root is not None:
        text += f"\n# set by --data\ndata_root: {str(data_root)!r}\n" if "data_root:" not in text else ""
    old = spec_file(out)
    if old.is_file() and old.read_text(encoding="utf-8") != text:
        shutil.copyfile(old, out / "study.previous.yaml")
    atomic_write_text(old, text)
    return plan, out


def snapshot_study(study_dir: str | Path, out: str | Path, force: bool = False) -> snapshots.StudySnapshot:
    """What ``study_dir`` needs to go on, copied to ``out`` (:func:`lorank.layout.snapshot.snapshot_study`): a
    finished run keeps its last checkpoint's adapter while a step its plan has not finished yet reads it."""
    return snapshots.snapshot_study(study_dir, out, needed_runs=_runs_needed, force=force)


def _runs_needed(study_dir: Path, finished: dict[str, Any]) -> set[str]:
    spec_path = spec_file(study_dir)
    return build_plan(load_spec(spec_path), spec_path).runs_needed(finished)


def run_study(spec_path: str | Path, out: str | Path, data_root: str | Path | None = None, dry_run: bool = False,
              only: list[str] | None = None, console: Any = None, device: str | None = None) -> StudyResult:
    """Run (or, with dry_run, only plan) a study; resumable: finished steps are skipped. Ends by writing the results
    table (results.csv / .parquet: :func:`lorank.study.load_results`). The report is not built
    here (report/ reads a study, a stage above): ``lorank.report.build_report(result.study_dir)``."""
    from rich.console import Console

    console = console or Console()
    if dry_run:
        spec_path = find_spec(spec_path)
        spec = load_spec(spec_path)
        if data_root is not None:
            spec = spec.model_copy(update={"data_root": str(data_root)})
        plan = build_plan(spec, spec_path, device=device)
        print_plan(plan, Path(out), console)
        return StudyResult(Path(out), plan, {})
    plan, out = prepare(spec_path, out, data_root)
    print_plan(plan, out, console, brief=True)
    outcomes = execute(plan, out, console, only)
    waiting = [s for s in plan.steps if s.pending and s.step_id in outcomes]
    if waiting:
        console.print(f"[yellow]{len(waiting)} step(s) pending[/] ({', '.join(s.step_id for s in waiting)}): "
                      + "; ".join(dict.fromkeys(s.pending for s in waiting)))
    write_results(plan, out, include_first_stage=False)  # results.csv / .parquet, as the report writes them
    return StudyResult(out, plan, outcomes)


def print_plan(plan: Plan, out: Path, console: Any, brief: bool = False) -> None:
    from rich.table import Table

    total = plan.estimate_s
    console.print(f"[bold]study {plan.spec.name}[/]: {len(plan.runs)} runs, {len(plan.steps)} steps, "
                  f"estimated {_dur(total)} on {plan.device} -> {out}")
    for n in plan.notes:
        console.print(f"  [dim]note: {n}[/]")
    for n in plan.data_problems:
        console.print(f"  [yellow]warning: {n} (a real run here would stop at validation)[/]")
    if brief:
        return
    t = Table(title="plan (estimates from model size x tokens at this device's measured FLOP/s)")
    for c in ("#", "step", "estimate", "state"):
        t.add_column(c)
    state = {}
    for i, s in enumerate(plan.steps, 1):
        state[s.step_id] = "pending" if s.pending else "done" if out.exists() and marker_ok(out, s) else "todo"
        t.add_row(str(i), s.step_id, _dur(s.estimate_s) if s.estimate_s else "?", state[s.step_id])
    console.print(t)
    console.print(by_kind_table(plan, state))


def by_kind_table(plan: Plan, state: dict[str, str] | None = None) -> Any:
    """The estimate per step kind (train / ablate / analyze) and in total, with what is left to do."""
    from rich.table import Table

    state = state or {}
    t = Table(title=f"estimate by step kind on {plan.device}")
    for c in ("kind", "steps", "estimate", "left (todo + pending)"):
        t.add_column(c)
    kinds = list(dict.fromkeys(s.kind for s in plan.steps))
    for kind in [*kinds, "total"]:
        steps = [s for s in plan.steps if kind in ("total", s.kind)]
        left = sum(s.estimate_s for s in steps if state.get(s.step_id, "todo") != "done")
        t.add_row(kind, str(len(steps)), _dur(sum(s.estimate_s for s in steps)), _dur(left))
    return t


def _dur(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    return f"{s / 60:.0f} min" if s >= 120 else f"{s:.0f} s"


__all__ = ["Plan", "RunSpec", "Step", "StudyResult", "StudySpec", "build_plan", "expand", "find_spec", "load_results",
           "load_spec", "prepare", "run_study", "snapshot_study", "study_time"]
