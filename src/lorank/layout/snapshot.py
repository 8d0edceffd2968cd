"""A run or a study folder cut down to what resuming it needs, to keep somewhere that survives the machine (a
commit); the same call restores it.

``runs/`` and ``studies_out/`` are scratch: a machine change loses them, and with them every step trained.

- ``snapshot_run(run, out)`` copies the run's last *complete* checkpoint (adapter, optimizer, scheduler, RNG state:
  what HF needs to resume the exact trajectory) with its run files (``config.json``, the training and evaluation
  logs, ``runs_trec/``: :data:`lorank.layout.run.RUN_FILES`) into ``out``, and nothing older: one checkpoint (~30 MB
  at 135M, r=8) instead of every 50 steps. ``snapshot_run("results/resume/X", "runs/X")`` restores it and ``lorank train``
  resumes from it. It is refused where it would replace a later checkpoint than the one it brings (``force`` to
  override): restoring an old snapshot over a run that has trained on must not throw that training away.
- ``snapshot_study(study_dir, out, needed_runs)`` copies every file and folder of the study outside ``runs/`` (the
  spec, the state, the results table, the logs cut to their last 200 KB, the ablations and analyses with their JSON,
  TREC runs, markers and call ledgers, the report), and for each training run every file of its folder (its run
  files, step marker and call ledger) and
  - while its training step is not done: its last complete checkpoint, whole (the exact resume, as above);
  - once done: its last checkpoint's adapter alone (no optimizer state), and only while a step still to do needs the
    run (``needed_runs``: the study's plan knows which, :func:`lorank.study.snapshot_study`); after that, no
    checkpoint: its evaluations are in its run files.
  A snapshot of a study is itself a study folder: ``lorank study`` goes on from it (finished steps are skipped by
  their markers, a training run resumes from its checkpoint). It is refused where ``out`` holds a finished step
  that the source has not (``force`` to override).

Each copy is made beside ``out`` and renamed into place (:func:`lorank.atomic.atomic_dir`), so ``out`` is always
either the old snapshot or the new one.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lorank.atomic import atomic_dir
from lorank.errors import DataError
from lorank.layout.adapter import PEFT_CONFIG, README, WEIGHTS
from lorank.layout.checkpoints import COMPLETE_MARKER, complete_checkpoints, is_checkpoint_name, read_marker, step_of
from lorank.layout.run import RUN_DIRS, RUN_FILES
from lorank.layout.study import RUNS_DIR, finished_steps, is_study_dir, train_step_id

__all__ = ["Snapshot", "StudySnapshot", "snapshot_run", "snapshot_study"]

#: a finished run's checkpoint keeps these (what loading the adapter needs), not the optimizer's state
ADAPTER_ONLY = (WEIGHTS, PEFT_CONFIG, COMPLETE_MARKER, README)
LOG_TAIL_BYTES = 200_000


@dataclass
class Snapshot:
    out: Path
    checkpoint: str
    step: int
    files: int
    bytes: int
    replaced_step: int | None
    checkpoint_files: int = 0

    def summary(self) -> str:
        was = f" (replaced checkpoint-{self.replaced_step})" if self.replaced_step is not None else ""
        return (f"{self.out}: {self.checkpoint} ({self.checkpoint_files} files) + {self.files - self.checkpoint_files}"
                f" run files, {self.bytes / 1e6:.1f} MB{was}")


@dataclass
class StudySnapshot:
    out: Path
    steps_done: list[str]
    checkpoints: dict[str, str] = field(default_factory=dict)  # run id -> "checkpoint-N (resume|adapter)"
    files: int = 0
    bytes: int = 0

    def summary(self) -> str:
        ck = "; ".join(f"{k}: {v}" for k, v in self.checkpoints.items()) or "no checkpoints"
        return (f"{self.out}: {len(self.steps_done)} finished steps, {self.files} files, {self.bytes / 1e6:.1f} MB"
                f" ({ck})")


def _last_step(run: Path) -> int | None:
    done = complete_checkpoints(run) if run.is_dir() else []
    return step_of(done[-1]) if done else None


def snapshot_run(run_dir: str | Path, out: str | Path, force: bool = False) -> Snapshot:
    """Copy ``run_dir``'s last complete checkpoint and run files to ``out`` (replacing what was there)."""
    run, out = Path(run_dir), Path(out)
    if not run.is_dir():
        raise DataError(run, None, "not a run folder")
    done = complete_checkpoints(run)
    if not done:
        raise DataError(run, None, "no complete checkpoint-N folder to snapshot (train at least one checkpoint)")
    last = done[-1]
    step = step_of(last)
    assert step is not None
    if out.resolve() == run.resolve():
        raise DataError(out, None, "the snapshot would replace the run it copies: choose another --out")
    replaced = _last_step(out)
    if replaced is not None and replaced > step and not force:
        raise DataError(out, None, f"holds checkpoint-{replaced}, later than {run}'s {last.name}: refusing to "
                                   "replace later training (use --force to replace it anyway)")
    with atomic_dir(out) as tmp:  # removed if anything below raises; out is the old snapshot or the new one
        shutil.copytree(last, tmp / last.name)
        ckpt_files = sum(1 for f in (tmp / last.name).rglob("*") if f.is_file())
        for name in RUN_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        for name in RUN_DIRS:
            if (run / name).is_dir():
                shutil.copytree(run / name, tmp / name)
        if _last_step(tmp) != step:  # the copy must be as whole as the original (sizes, safetensors structure)
            raise DataError(tmp, None, f"the copy of {last} is not a complete checkpoint (disk full?)")
        sizes = [f.stat().st_size for f in tmp.rglob("*") if f.is_file()]
    return Snapshot(out, last.name, step, len(sizes), sum(sizes), replaced,
                    checkpoint_files=ckpt_files)


def _copy_adapter_only(ckpt: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    kept = {}
    for name in ADAPTER_ONLY:
        if (ckpt / name).is_file() and name != COMPLETE_MARKER:
            shutil.copy2(ckpt / name, dest / name)
            kept[name] = (dest / name).stat().st_size
    meta = read_marker(ckpt)
    meta["files"] = kept
    meta["adapter_only"] = "optimizer, scheduler and RNG state left out by the study snapshot: the run is finished"
    (dest / COMPLETE_MARKER).write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _copy_file(src: str | Path, dest: str | Path) -> None:
    """shutil.copy2, except a ``.log`` file longer than LOG_TAIL_BYTES is cut to its tail (said so on line 1)."""
    src, dest = Path(src), Path(dest)
    size = src.stat().st_size
    if src.suffix != ".log" or size <= LOG_TAIL_BYTES:
        shutil.copy2(src, dest)
        return
    with src.open("rb") as fh:
        fh.seek(size - LOG_TAIL_BYTES)
        data = fh.read()
    cut = data.find(b"\n") + 1
    dest.write_bytes(f"[... {size - LOG_TAIL_BYTES + cut} earlier bytes left out by the study snapshot]\n".encode()
                     + data[cut:])


def _copy_study_run(run: Path, dest: Path, step_done: bool, needed: bool) -> str | None:
    dest.mkdir(parents=True)
    for f in run.iterdir():
        if f.is_file():
            _copy_file(f, dest / f.name)
        elif f.is_dir() and not is_checkpoint_name(f):
            shutil.copytree(f, dest / f.name, copy_function=_copy_file)
    done = complete_checkpoints(run)
    if not done:
        return None
    last = done[-1]
    if not step_done:
        shutil.copytree(last, dest / last.name)
        return f"{last.name} (resume)"
    if needed:
        _copy_adapter_only(last, dest / last.name)
        return f"{last.name} (adapter)"
    return None


def snapshot_study(study_dir: str | Path, out: str | Path, needed_runs: Callable[[Path, dict[str, dict]], set[str]],
                   force: bool = False) -> StudySnapshot:
    """Copy what ``study_dir`` needs to go on (see the module's docstring) to ``out``, replacing what was there.
    ``needed_runs(study_dir, finished)``: the run ids whose adapter a step not finished yet needs."""
    src, out = Path(study_dir), Path(out)
    if not is_study_dir(src):
        raise DataError(src, None, "not a study folder (no study.yaml): run `lorank study` first")
    if out.resolve() == src.resolve():
        raise DataError(out, None, "the snapshot would replace the study it copies: choose another --out")
    done = finished_steps(src)
    if out.exists() and not force:
        ahead = sorted(set(finished_steps(out)) - set(done))
        if ahead:
            raise DataError(out, None, f"holds {len(ahead)} finished step(s) that {src} has not ({', '.join(ahead[:3])}"
                                       f"{', ...' if len(ahead) > 3 else ''}): refusing to replace them (--force to)")
    needed = needed_runs(src, done)
    snap = StudySnapshot(out, sorted(done))
    with atomic_dir(out) as tmp:  # removed if anything below raises; out is the old snapshot or the new one
        for f in src.iterdir():
            if f.name == RUNS_DIR and f.is_dir():
                for run in sorted(p for p in f.iterdir() if p.is_dir()):
                    ck = _copy_study_run(run, tmp / RUNS_DIR / run.name, train_step_id(run.name) in done,
                                         run.name in needed)
                    if ck:
                        snap.checkpoints[run.name] = ck
            elif f.is_dir():
                shutil.copytree(f, tmp / f.name, copy_function=_copy_file)
            elif f.is_file():
                _copy_file(f, tmp / f.name)
        sizes = [p.stat().st_size for p in tmp.rglob("*") if p.is_file()]
    snap.files, snap.bytes = len(sizes), sum(sizes)
    return snap
