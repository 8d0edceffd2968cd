"""The ``checkpoint-N/`` folders of a run: their names, which are complete, the latest complete one, and what to do
with the ones that are not.

HF ``Trainer`` writes ``checkpoint-N/`` file by file, in place. lorank makes the folder atomic in effect: after every
file is written and fsynced, it writes ``lorank_checkpoint.json`` (atomically, last) listing each file with its size.
A checkpoint counts as complete only if that marker is there and readable, every listed file has its recorded size,
and ``adapter_model.safetensors`` is structurally whole (header parses, tensors end where the file ends). Anything
else is a half-written checkpoint (a crash, a kill, a full disk, a lost page cache): it is ignored with a warning,
never resumed from or loaded.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lorank.errors import ConfigError
from lorank.layout.adapter import PEFT_CONFIG, WEIGHTS, safetensors_problem
from lorank.layout.run import read_run_config

log = logging.getLogger("lorank.train")
PREFIX = "checkpoint-"
#: the completeness marker: lorank's metadata of the checkpoint, written last (with every file's size)
COMPLETE_MARKER = "lorank_checkpoint.json"


def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """Where a run's checkpoint of ``step`` is (or will be) saved."""
    return Path(run_dir) / f"{PREFIX}{step}"


def step_of(d: Path) -> int | None:
    """The step of a ``checkpoint-N`` folder; None for any other name."""
    tail = d.name.rsplit("-", 1)[-1]
    return int(tail) if d.name.startswith(PREFIX) and tail.isdigit() else None


def is_checkpoint_name(d: Path) -> bool:
    """A folder named like a checkpoint (``checkpoint-...``), complete or not."""
    return d.name.startswith(PREFIX)


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Every ``checkpoint-*`` folder of a run, complete or not, in the order the file system lists them."""
    return [d for d in Path(run_dir).glob(f"{PREFIX}*") if d.is_dir()]


def checkpoint_problem(d: str | Path) -> str | None:
    """None for a complete lorank checkpoint; else why it is not one."""
    d = Path(d)
    marker = d / COMPLETE_MARKER
    if not marker.is_file():
        return f"no {COMPLETE_MARKER} (saving did not finish)"
    try:
        meta = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return f"unreadable {COMPLETE_MARKER} ({e})"
    if not isinstance(meta, dict):
        return f"malformed {COMPLETE_MARKER}"
    files = meta.get("files")
    if isinstance(files, dict):
        for name, size in files.items():
            f = d / name
            if not f.is_file():
                return f"{name} is missing"
            if f.stat().st_size != size:
                return f"{name} has {f.stat().st_size} bytes, {size} were written"
    adapter = d / WEIGHTS
    if not adapter.is_file():
        return f"no {WEIGHTS}"
    return safetensors_problem(adapter)


def complete_checkpoints(out_dir: str | Path, warn: bool = True) -> list[Path]:
    """The complete checkpoints of a run, by step; half-written ones are ignored with a warning."""
    out = []
    for d in Path(out_dir).glob(f"{PREFIX}*"):
        if not d.is_dir() or step_of(d) is None:
            continue
        problem = checkpoint_problem(d)
        if problem is None:
            out.append(d)
        elif warn:
            log.warning("ignoring incomplete checkpoint %s: %s", d, problem)
    return sorted(out, key=lambda d: step_of(d))


def _in_lorank_run(ckpt: Path) -> bool:
    """A checkpoint-N folder inside a lorank training run (whose saves end with the completeness marker)."""
    if not ckpt.name.startswith(PREFIX):
        return False
    d = read_run_config(ckpt.parent)
    return isinstance(d, dict) and "lora_targets" in d and "config" in d


def latest_checkpoint(run_dir: str | Path) -> Path:
    """A run dir -> its last complete checkpoint (half-written ones are skipped with a warning); a
    checkpoint dir -> itself, unless it is a lorank training checkpoint whose save did not finish."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ConfigError(f"{run_dir}: no such folder (a run folder, a checkpoint folder or an exported adapter is "
                          "expected): check the path")
    if (run_dir / PEFT_CONFIG).is_file():
        if (run_dir / COMPLETE_MARKER).exists() or _in_lorank_run(run_dir):
            problem = checkpoint_problem(run_dir)
            if problem:
                raise ConfigError(f"{run_dir} is an incomplete checkpoint: {problem}. Use the run folder "
                                  "to load its last complete checkpoint.")
        return run_dir

    ck = complete_checkpoints(run_dir)
    if not ck:
        raise ConfigError(f"{run_dir}: no complete checkpoint found")
    return ck[-1]


def fsync_files(d: Path) -> dict[str, int]:
    """fsync every file of a checkpoint (so the marker never reaches the disk before them); their sizes."""
    sizes = {}
    for f in sorted(d.rglob("*")):
        if f.is_file() and f.name != COMPLETE_MARKER and not f.name.endswith(".tmp"):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            sizes[str(f.relative_to(d))] = f.stat().st_size
    return sizes


def marker_file(d: str | Path) -> Path:
    return Path(d) / COMPLETE_MARKER


def read_marker(d: Path) -> dict[str, Any]:
    """The checkpoint's marker as a dict ({} when it is missing or unreadable)."""
    try:
        meta = json.loads((Path(d) / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def discard_incomplete(d: Path) -> bool:
    """Delete a checkpoint folder whose save failed (frees the space a full disk needs); never a complete one."""
    d = Path(d)
    if not d.is_dir() or (d / COMPLETE_MARKER).exists():
        return False
    shutil.rmtree(d, ignore_errors=True)
    return not d.exists()


def _nearly_full(d: Path) -> bool:
    try:
        return shutil.disk_usage(d).free < 2**20
    except OSError:
        return False


def save_failure_message(d: Path, e: BaseException, discarded: bool = True) -> str:
    """What failed, why, and what is safe: the last complete checkpoint."""
    err = getattr(e, "errno", None)
    if err == errno.EDQUOT:
        why = "the disk quota is exceeded"
    elif err == errno.ENOSPC or "No space left" in str(e) or _nearly_full(d.parent):
        why = f"the disk is full ({type(e).__name__}: {e})"
    else:
        why = f"{type(e).__name__}: {e}"
    done = complete_checkpoints(d.parent, warn=False)
    safe = (f"the earlier checkpoints are intact (last complete: {done[-1].name}); free space and run the same "
            "command to resume from it") if done else "no earlier complete checkpoint exists"
    fate = "was discarded" if discarded else "is left in place and will be ignored"
    return f"could not save {d}: {why}. The half-written {d.name} {fate}; {safe}."
