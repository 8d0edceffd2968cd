"""Run a study's plan: each step in its own process, resumably, atomically, with progress for the whole study.

A step is skipped when its output folder holds a completion marker with the step's hash. A killed study
re-run with the same command continues where it stopped (a killed training run resumes from its last
complete checkpoint; a killed ablation step from its sweeps' last saved chunks, :mod:`lorank.ablate.resume`). A failing step is recorded with the tail of its log; steps that need it are
skipped; the rest of the study goes on. A pending step (its external adapter's folder is not there yet) is
recorded as pending, not failed: a re-run once the folder exists runs it. Every call of a step, ok, failed or
interrupted, adds a line to the step's call ledger (:mod:`lorank.study.timing`: its wall and CPU seconds, the
commit, the machine).
"""
from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lorank.atomic import atomic_write_json, atomic_write_text
from lorank.errors import DataError
from lorank.layout.run import train_log_file
from lorank.safety import safe_join
from lorank.layout.study import CALLS, STEP_MARKER, append_call
from lorank.study.plan import Plan, Step
from lorank.study.timing import call_line, code_commit, now, open_ledger

PARTIAL = ".lorank-partial.json"  # an ablation step in progress: its hash (what a re-run may go on from)
STATE = "study_state.json"


@dataclass
class StepOutcome:
    step_id: str
    status: str  # ok | cached | failed | skipped | pending | interrupted (by a signal: re-run to resume)
    wall_s: float = 0.0
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    #: CPU seconds (user + system) of the step's process, all its threads: unlike wall_s, not stretched when the
    #: machine is shared or the study is paused (SIGSTOP)
    cpu_s: float = 0.0


def _children_cpu_s() -> float:
    """User + system CPU seconds of this process's waited-for children so far."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def marker_ok(study_dir: Path, step: Step) -> bool:
    m = study_dir / step.out_dir / STEP_MARKER
    if not m.is_file():
        return False
    try:
        data = json.loads(m.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("hash") == step.hash and data.get("status") == "ok"


def _inside(root: Path, rel: str) -> Path:
    """`root/rel`, refusing any path that would land outside the study directory."""
    return Path(safe_join(root, rel))


def _resumable(out: Path, step: Step) -> bool:
    """An interrupted ablation step of this very hash: its sweeps' partial scores are kept and go on."""
    try:
        data = json.loads((out / PARTIAL).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return step.kind == "ablate" and data.get("hash") == step.hash


def _log_path(study_dir: Path, step: Step) -> Path:
    return study_dir / "logs" / (step.step_id.replace("/", "__") + ".log")


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])
    except OSError:
        return ""


def _train_progress(study_dir: Path, step: Step) -> int:
    f = train_log_file(study_dir / step.out_dir)
    try:
        with f.open("rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return 0


def _clear_outputs(out: Path) -> None:
    """Remove a step folder's outputs, all but its call ledger (the time its earlier calls took stays counted)."""
    for p in out.iterdir():
        if p.name == CALLS:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _end_call(out: Path, step: Step, started: Any, t0: float, cpu0: float, status: str, exit_code: int | None,
              facts_file: Path) -> tuple[float, float]:
    """The call's wall and CPU seconds, once its worker was waited for; its line appended to the step's ledger."""
    wall, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    try:
        facts = json.loads(facts_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # a worker killed before it could say
        facts = {}
    append_call(out, call_line(step, started, wall, cpu, status, exit_code, facts))
    return wall, cpu


def run_step_process(study_dir: Path, step: Step, on_poll: Any = None) -> StepOutcome:
    """Run one step in a child process; its output goes to logs/<step>.log. Every call, however it ends, adds a
    line to the step's call ledger (:mod:`lorank.study.timing`)."""
    out = _inside(study_dir, step.out_dir)
    open_ledger(out, step.step_id)  # a step's first ledger line: what its folder recovers of earlier calls first
    if step.kind != "train" and out.exists() and not marker_ok(study_dir, step) and not _resumable(out, step):
        _clear_outputs(out)  # stale or half-written outputs of an older hash: redo from scratch
    out.mkdir(parents=True, exist_ok=True)
    if step.kind == "ablate":  # its sweeps keep their finished chunks (lorank.ablate.resume): a re-run goes on
        atomic_write_json(out / PARTIAL, {"step_id": step.step_id, "hash": step.hash})
    job_dir = study_dir / "logs" / "jobs"
    job_dir.mkdir(parents=True, exist_ok=True)
    job = job_dir / (step.step_id.replace("/", "__") + ".json")
    result_file, facts_file = job.with_suffix(".result.json"), job.with_suffix(".call.json")
    result_file.unlink(missing_ok=True)
    facts_file.unlink(missing_ok=True)
    atomic_write_json(job, {"kind": step.kind, "run_id": step.run_id, "payload": step.payload,
                            "out_dir": step.out_dir, "study_dir": str(study_dir.resolve())})
    log = _log_path(study_dir, step)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    code_commit()  # its git children run now (once), not inside the call's CPU seconds
    started, t0, cpu0 = now(), time.perf_counter(), _children_cpu_s()
    with log.open("a", encoding="utf-8") as fh:
        fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {step.step_id} (hash {step.hash})\n")
        fh.flush()
        proc = subprocess.Popen([sys.executable, "-m", "lorank.study.worker", str(job), str(result_file),
                                 str(facts_file)], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            with terminate_as_interrupt():
                while proc.poll() is None:
                    if on_poll:
                        on_poll()
                    time.sleep(0.5)
        except KeyboardInterrupt:
            # the child gets its own SIGINT (training saves a checkpoint and stops; an ablation keeps its saved
            # chunks); wait for it, then re-raise. It runs in its own session, so nothing else reaches it.
            try:
                os.killpg(proc.pid, signal.SIGINT)
                proc.wait(timeout=120)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                proc.kill()
                proc.wait()
            _end_call(out, step, started, t0, cpu0, "interrupted", proc.returncode, facts_file)
            raise
    wall, cpu = _end_call(out, step, started, t0, cpu0, "ok" if proc.returncode == 0 else "failed", proc.returncode,
                          facts_file)
    if proc.returncode != 0:
        sig = f" (killed by signal {-proc.returncode})" if proc.returncode < 0 else ""
        return StepOutcome(step.step_id, "failed", wall, f"exit code {proc.returncode}{sig}; log {log}\n"
                           + _tail(log), cpu_s=cpu)
    result = {}
    if result_file.is_file():
        result = json.loads(result_file.read_text(encoding="utf-8"))
    (out / PARTIAL).unlink(missing_ok=True)
    atomic_write_json(out / STEP_MARKER, {"step_id": step.step_id, "hash": step.hash, "status": "ok",
                                     "wall_s": round(wall, 2), "cpu_s": round(cpu, 1),
                                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "result": result})
    return StepOutcome(step.step_id, "ok", wall, result=result, cpu_s=cpu)


class StepInterrupted(KeyboardInterrupt):
    """A step stopped by a signal (SIGINT or SIGTERM); `signum` says which. It is a KeyboardInterrupt, so whatever
    stops on Ctrl-C stops on it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interruption(e: BaseException) -> str:
    """What the study records of a step a signal stopped: the signal named, and how to go on."""
    name = signal.Signals(getattr(e, "signum", signal.SIGINT)).name
    return f"stopped by {name}; re-run the same command to resume (training goes on from its last checkpoint)"


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While a step's worker runs, SIGTERM (and SIGINT, even where the study started with it ignored, as a
    background job of a non-interactive shell does) raise KeyboardInterrupt, so the worker is stopped with the
    study and never left running on its own. Main thread only (elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def stop(signum: int, frame: Any) -> None:
        raise StepInterrupted(signum)

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _read_state(path: Path) -> dict[str, Any]:
    """The state an earlier run wrote ({} when there is none); an unreadable one is an error naming the file."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(path, None, f"unreadable study state ({e}); remove it and run the study again") from e
    return data if isinstance(data, dict) else {}


def _earlier_outcomes(plan: Plan, state_file: Path, todo: list[Step]) -> dict[str, Any]:
    """What earlier runs recorded of the plan's steps this run does not do (a run with --only keeps them: the report
    counts them)."""
    todo_ids = {s.step_id for s in todo}
    return {k: v for k, v in _read_state(state_file).get("steps", {}).items()
            if k not in todo_ids and k in {s.step_id for s in plan.steps}}


def _save_state(state_file: Path, plan: Plan, earlier: dict[str, Any], outcomes: dict[str, StepOutcome],
                status: str) -> None:
    """Write the study's state: its status and every step's record (this run's outcomes over the earlier ones), in
    the plan's order."""
    steps = {**earlier, **{k: {"status": v.status, "wall_s": round(v.wall_s, 2), "detail": v.detail,
                               **({"cpu_s": round(v.cpu_s, 1)} if v.cpu_s else {})}
                           for k, v in outcomes.items()}}
    atomic_write_json(state_file, {"status": status, "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                   "steps": {s.step_id: steps[s.step_id] for s in plan.steps
                                             if s.step_id in steps}})


@dataclass
class _Pace:
    """The seconds the steps run so far took against their estimates: what scales the estimate of what is left."""
    spent: float = 0.0
    spent_est: float = 0.0

    def eta(self, remaining_est: float) -> str:
        """The time left, as the progress bar shows it."""
        ratio = self.spent / self.spent_est if self.spent_est > 0 else 1.0
        sec = remaining_est * ratio
        return f"~{sec / 60:.0f} min left" if sec >= 60 else f"~{sec:.0f} s left"


def _not_run(study_dir: Path, step: Step, outcomes: dict[str, StepOutcome], console: Any) -> StepOutcome | None:
    """The outcome of a step that is not run, said on the console: skipped (a step it needs failed or was skipped),
    pending (its external adapter is not there yet) or cached (its outputs exist with its hash); None: run it."""
    failed_needs = [n for n in step.needs if n in outcomes and outcomes[n].status in ("failed", "skipped")]
    if failed_needs:
        console.print(f"[yellow]skip[/] {step.step_id}: needs {', '.join(failed_needs)}")
        return StepOutcome(step.step_id, "skipped", detail=f"needs {', '.join(failed_needs)}")
    if step.pending:
        console.print(f"[yellow]pending[/] {step.step_id}: {step.pending}")
        return StepOutcome(step.step_id, "pending", detail=step.pending)
    if marker_ok(study_dir, step):
        return StepOutcome(step.step_id, "cached", detail="outputs exist with this hash")
    return None


def _run_shown(study_dir: Path, step: Step, progress: Any, outcomes: dict[str, StepOutcome], save_state: Any,
               console: Any) -> StepOutcome:
    """Run one step under its own progress bar (a training step's follows its log); a step stopped by a signal is
    recorded as interrupted and the interrupt goes on up."""
    total = None
    if step.kind == "train":
        ms = step.payload["config"].get("max_steps", -1)
        total = ms if ms and ms > 0 else None
    task = progress.add_task(f"  {step.step_id}", total=total, eta=f"est. {step.estimate_s:.0f} s")

    def poll() -> None:
        if step.kind == "train":
            progress.update(task, completed=_train_progress(study_dir, step))

    save_state("running")
    try:
        out = run_step_process(study_dir, step, poll)
    except KeyboardInterrupt as e:
        outcomes[step.step_id] = StepOutcome(step.step_id, "interrupted", detail=interruption(e))
        save_state("interrupted")
        console.print("[yellow]interrupted[/]: re-run the same command to resume where it stopped")
        raise
    outcomes[step.step_id] = out
    progress.update(task, completed=total or 1, total=total or 1, eta=f"{out.wall_s:.0f} s")
    return out


def _final_status(outcomes: dict[str, StepOutcome]) -> str:
    """The study's status once every step had its turn."""
    statuses = {o.status for o in outcomes.values()}
    return ("done-with-failures" if statuses & {"failed", "skipped"} else
            "done-with-pending" if "pending" in statuses else "done")


def execute(plan: Plan, study_dir: Path, console: Any = None, only: list[str] | None = None) -> dict[str, StepOutcome]:
    """Run every step not already done; returns the outcome of each step."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = console or Console()
    study_dir = Path(study_dir)
    outcomes: dict[str, StepOutcome] = {}
    state_file = study_dir / STATE
    todo = [s for s in plan.steps if not only or any(s.step_id.startswith(o) for o in only)]
    pace = _Pace()
    earlier = _earlier_outcomes(plan, state_file, todo)

    def save_state(status: str) -> None:
        _save_state(state_file, plan, earlier, outcomes, status)

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("{task.fields[eta]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("study", total=len(todo), eta=pace.eta(sum(s.estimate_s for s in todo)))
        for i, step in enumerate(todo):
            remaining = sum(s.estimate_s for s in todo[i:])
            progress.update(overall, eta=pace.eta(remaining))  # cached, pending and skipped steps count too
            settled = _not_run(study_dir, step, outcomes, console)
            if settled is not None:
                outcomes[step.step_id] = settled
                progress.advance(overall)
                if settled.status != "cached":
                    save_state("running")
                continue
            out = _run_shown(study_dir, step, progress, outcomes, save_state, console)
            pace.spent += out.wall_s
            pace.spent_est += step.estimate_s
            progress.advance(overall)
            if out.status == "failed":
                console.print(f"[red]failed[/] {step.step_id}: {out.detail}")
            else:
                console.print(f"[green]done[/] {step.step_id} in {out.wall_s:.0f} s{_headline(out.result)}")
        progress.update(overall, eta="done")  # each step's start updates the estimate; none is left now
        save_state(_final_status(outcomes))
    failures = {k: v for k, v in outcomes.items() if v.status == "failed"}
    if failures:
        atomic_write_text(study_dir / "failures.txt", "".join(f"{k}\n{v.detail}\n\n" for k, v in failures.items()))
    return outcomes


def _headline(result: dict[str, Any]) -> str:
    rows = result.get("final") or []
    parts = [f"{r['eval_set']} nDCG@10 {r['ndcg_cut_10']:.3f}" for r in rows if "ndcg_cut_10" in r and "+" not in r["eval_set"]]
    return (": " + ", ".join(parts)) if parts else ""
