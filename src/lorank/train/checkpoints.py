"""Which checkpoints are complete, and what to do with the ones that are not.

HF ``Trainer`` writes ``checkpoint-N/`` file by file, in place. lorank makes the folder atomic in
effect: after every file is written and fsynced, it writes ``lorank_checkpoint.json`` (atomically,
last) listing each file with its size. A checkpoint counts as complete only if that marker is there
and readable, every listed file has its recorded size, and ``adapter_model.safetensors`` is
structurally whole (header parses, tensors end where the file ends). Anything else is a half-written
checkpoint (a crash, a kill, a full disk, a lost page cache): it is ignored with a warning, never
resumed from or loaded.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any

log = logging.getLogger("lorank.train")
COMPLETE_MARKER = "lorank_checkpoint.json"
ADAPTER_FILE = "adapter_model.safetensors"


def step_of(d: Path) -> int | None:
    tail = d.name.rsplit("-", 1)[-1]
    return int(tail) if d.name.startswith("checkpoint-") and tail.isdigit() else None


def safetensors_problem(f: Path) -> str | None:
    """None if ``f`` is a structurally whole safetensors file, else what is wrong (cheap: header only)."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{f.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100 * 2**20:
                return f"{f.name} is truncated (header of {n} bytes, file of {size})"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"{f.name} is unreadable ({e})"
    if not isinstance(header, dict):
        return f"{f.name} has a malformed header"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2]
    if len(ends) != len([k for k in header if k != "__metadata__"]):
        return f"{f.name} has a malformed header"
    if 8 + n + max(ends, default=0) != size:
        return f"{f.name} is truncated ({size} bytes, the header promises {8 + n + max(ends, default=0)})"
    return None


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
    adapter = d / ADAPTER_FILE
    if not adapter.is_file():
        return f"no {ADAPTER_FILE}"
    return safetensors_problem(adapter)


def complete_checkpoints(out_dir: str | Path, warn: bool = True) -> list[Path]:
    """The complete checkpoints of a run, by step; half-written ones are ignored with a warning."""
    out = []
    for d in Path(out_dir).glob("checkpoint-*"):
        if not d.is_dir() or step_of(d) is None:
            continue
        problem = checkpoint_problem(d)
        if problem is None:
            out.append(d)
        elif warn:
            log.warning("ignoring incomplete checkpoint %s: %s", d, problem)
    return sorted(out, key=lambda d: step_of(d))


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


def read_marker(d: Path) -> dict[str, Any]:
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
