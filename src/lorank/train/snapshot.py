"""A run folder cut down to what resuming it needs, to keep somewhere that survives the machine (a commit).

``runs/`` is scratch: a machine change loses it, and with it every step trained. ``snapshot_run(run, out)`` copies
the run's last *complete* checkpoint (adapter, optimizer, scheduler, RNG state: what HF needs to resume the exact
trajectory) with ``config.json``, the training and evaluation logs and ``runs_trec/`` into ``out``, and nothing
older: one checkpoint (~30 MB at 135M, r=8) instead of every 50 steps. The snapshot is itself a run folder, so the
same call restores it (``snapshot_run("resume/X", "runs/X")``) and ``lorank train`` then resumes from it.

The copy is made beside ``out`` and renamed into place, so ``out`` is always either the old snapshot or the new
one. A snapshot is refused where it would replace a later checkpoint than the one it brings (``force`` to
override): restoring an old snapshot over a run that has trained on must not throw that training away.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lorank.atomic import atomic_dir
from lorank.errors import DataError
from lorank.train.checkpoints import complete_checkpoints, step_of

__all__ = ["RUN_FILES", "Snapshot", "snapshot_run"]

#: The run's own files a resume or a report reads (each copied when present).
RUN_FILES = ("config.json", "train_log.jsonl", "metrics.jsonl", "train_summary.json", "curve.jsonl")
RUN_DIRS = ("runs_trec",)


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
