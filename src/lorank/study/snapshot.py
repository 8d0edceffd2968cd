"""A study folder cut down to what a new machine needs to go on with it, to commit (a lost machine must cost at most
one session of a study that runs for many).

``snapshot_study(study_dir, out)`` copies into ``out``:

- every file and folder of the study outside ``runs/``: the spec, the state, the results table, the logs (each cut to
  its last 200 KB), the ablations and analyses with their JSON, TREC runs and markers, the report;
- for each training run: its run files (``config.json``, logs, ``metrics.jsonl``, ``runs_trec/``, the step marker) and
  - while its training step is not done: its last complete checkpoint, whole (adapter, optimizer, scheduler, RNG:
    the exact resume, as :func:`lorank.train.snapshot.snapshot_run`);
  - once done: its last checkpoint's adapter alone (no optimizer state), and only while a step that needs the run
    (a compare analysis) is not done yet; after that, no checkpoint: its evaluations are in its run files.

A snapshot is itself a study folder, so the same call restores it (``snapshot_study(out, "studies_out/X")``) and
``lorank study`` goes on from it: finished steps are skipped by their markers, a training run resumes from its
checkpoint. The copy is made beside ``out`` and renamed into place (:func:`lorank.atomic.atomic_dir`). It is refused where ``out`` holds a finished
step that the source has not (``force`` to override), so that restoring an old snapshot cannot throw work away.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lorank.atomic import atomic_dir
from lorank.errors import DataError
from lorank.train.checkpoints import ADAPTER_FILE, COMPLETE_MARKER, complete_checkpoints, read_marker

__all__ = ["StudySnapshot", "snapshot_study", "is_study_dir"]

#: a finished run's checkpoint keeps these (what loading the adapter needs), not the optimizer's state
ADAPTER_ONLY = (ADAPTER_FILE, "adapter_config.json", COMPLETE_MARKER, "README.md")
LOG_TAIL_BYTES = 200_000
STEP_MARKER = ".lorank-step.json"


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


def is_study_dir(p: str | Path) -> bool:
    return (Path(p) / "study.yaml").is_file()


def _done_steps(study_dir: Path) -> dict[str, dict]:
    """step id -> marker, for every finished step under the study folder."""
    out = {}
    for m in study_dir.rglob(STEP_MARKER):
        try:
            data = json.loads(m.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(m, None, f"unreadable step marker ({e})") from e
        if data.get("status") == "ok" and data.get("step_id"):
            out[data["step_id"]] = data
    return out


def _needed_runs(study_dir: Path, done: dict[str, dict]) -> set[str]:
    """Run ids whose adapter a step not yet done needs (compare analyses name ``train/<run>`` in their needs)."""
    from lorank.study.plan import build_plan
    from lorank.study.spec import load_spec

    spec_path = study_dir / "study.yaml"
    plan = build_plan(load_spec(spec_path), spec_path)
    needed = set()
    for step in plan.steps:
        if step.kind == "train" or step.step_id in done:
            continue
        needed.update(n.split("/", 1)[1] for n in step.needs if n.startswith("train/"))
    return needed


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


def _copy_run(run: Path, dest: Path, step_done: bool, needed: bool) -> str | None:
    dest.mkdir(parents=True)
    for f in run.iterdir():
        if f.is_file():
            _copy_file(f, dest / f.name)
        elif f.is_dir() and not f.name.startswith("checkpoint-"):
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


def snapshot_study(study_dir: str | Path, out: str | Path, force: bool = False) -> StudySnapshot:
    """Copy what ``study_dir`` needs to go on (see the module's docstring) to ``out``, replacing what was there."""
    src, out = Path(study_dir), Path(out)
    if not is_study_dir(src):
        raise DataError(src, None, "not a study folder (no study.yaml): run `lorank study` first")
    if out.resolve() == src.resolve():
        raise DataError(out, None, "the snapshot would replace the study it copies: choose another --out")
    done = _done_steps(src)
    if out.exists() and not force:
        ahead = sorted(set(_done_steps(out)) - set(done))
        if ahead:
            raise DataError(out, None, f"holds {len(ahead)} finished step(s) that {src} has not ({', '.join(ahead[:3])}"
                                       f"{', ...' if len(ahead) > 3 else ''}): refusing to replace them (--force to)")
    needed = _needed_runs(src, done)
    snap = StudySnapshot(out, sorted(done))
    with atomic_dir(out) as tmp:  # removed if anything below raises; out is the old snapshot or the new one
        for f in src.iterdir():
            if f.name == "runs" and f.is_dir():
                for run in sorted(p for p in f.iterdir() if p.is_dir()):
                    ck = _copy_run(run, tmp / "runs" / run.name, f"train/{run.name}" in done, run.name in needed)
                    if ck:
                        snap.checkpoints[run.name] = ck
            elif f.is_dir():
                shutil.copytree(f, tmp / f.name, copy_function=_copy_file)
            elif f.is_file():
                _copy_file(f, tmp / f.name)
        sizes = [p.stat().st_size for p in tmp.rglob("*") if p.is_file()]
    snap.files, snap.bytes = len(sizes), sum(sizes)
    return snap
