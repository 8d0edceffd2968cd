"""Atomic writes: write to a temporary file in the same folder, fsync, then rename.

A reader never sees a half-written file under the final name: either the old content
or the complete new one.

Fault injection (for tests): ``LORANK_FAULT_INJECT=<substring>:<after_bytes>[:<action>]`` makes every
atomic write whose target path contains ``substring`` fail once ``after_bytes`` bytes are written
(``end``: after the last byte, just before the rename). ``action`` is ``raise`` (an ``InjectedFault``,
an ``OSError``; the default), ``enospc`` (``OSError(ENOSPC)``, a full disk) or ``kill`` (SIGKILL
to this process: the temp file stays behind, half-written, as after a crash). In-process tests can use
:func:`inject_fault` instead of the environment variable.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lorank.errors import DataError

log = logging.getLogger("lorank.atomic")
FAULT_ENV = "LORANK_FAULT_INJECT"
FAULT_ACTIONS = ("raise", "enospc", "kill")


class InjectedFault(OSError):
    """The failure raised by the fault-injection hook (tests only)."""


@dataclass(frozen=True)
class Fault:
    target: str  # substring of the target path
    after_bytes: int | None  # None: after the last byte, before the rename
    action: str = "raise"

    @classmethod
    def parse(cls, spec: str) -> "Fault":
        parts = spec.rsplit(":", 2)
        action = "raise"
        if len(parts) == 3 and parts[2] in FAULT_ACTIONS:
            action = parts.pop()
        target, _, n = ":".join(parts).rpartition(":")
        if not target or not (n == "end" or n.isdigit()):
            raise ValueError(f"{FAULT_ENV} must be <substring>:<after_bytes|end>[:raise|enospc|kill], got {spec!r}")
        return cls(target, None if n == "end" else int(n), action)

    def trigger(self, path: Path) -> None:
        if self.action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.action == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        raise InjectedFault(errno.EIO, f"injected fault while writing (after {self.after_bytes} bytes)", str(path))


_fault: Fault | None = None


@contextlib.contextmanager
def inject_fault(target: str, after_bytes: int | None, action: str = "raise") -> Iterator[Fault]:
    """In-process twin of ``LORANK_FAULT_INJECT`` (tests only)."""
    global _fault
    prev, _fault = _fault, Fault(target, after_bytes, action)
    try:
        yield _fault
    finally:
        _fault = prev


def active_fault(path: str | Path) -> Fault | None:
    fault = _fault
    if fault is None:
        spec = os.environ.get(FAULT_ENV)
        if not spec:
            return None
        fault = Fault.parse(spec)
    return fault if fault.target in str(path) else None


class _FaultyFile:
    """Passes writes through until the fault's byte budget is spent, writes the part that fits, then fails."""

    def __init__(self, fh: Any, fault: Fault, path: Path, encoding: str | None):
        self._fh = fh
        self._fault = fault
        self._path = path
        self._encoding = encoding
        self._written = 0

    def write(self, data: Any) -> int:
        n = len(data.encode(self._encoding or "utf-8")) if isinstance(data, str) else len(data)
        limit = self._fault.after_bytes
        if limit is not None and self._written + n > limit:
            keep = limit - self._written
            if keep > 0:
                part = data.encode(self._encoding or "utf-8")[:keep] if isinstance(data, str) else data[:keep]
                self._fh.write(part.decode(self._encoding or "utf-8", "ignore") if isinstance(data, str) else part)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fault.trigger(self._path)
        self._written += n
        return self._fh.write(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); not every platform can open a folder."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _target_mode(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[Any]:
    """Open a temp file beside `path`; on clean exit, fsync and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fault = active_fault(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    binary = "b" in mode
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (or the replaced file's)
        os.chmod(tmp, _target_mode(path))
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as fh:
            yield _FaultyFile(fh, fault, path, None if binary else encoding) if fault else fh
            fh.flush()
            os.fsync(fh.fileno())
        if fault is not None and fault.after_bytes is None:
            fault.trigger(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=_default) + "\n")


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``target`` to fill; when the block ends normally it replaces ``target`` as a
    whole, when it raises it is removed: ``target`` is complete or left as it was. An old ``target`` is renamed
    aside first and deleted only once the new one is in place, so no crash leaves it half deleted."""
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def append_line(path: str | Path, line: str, fsync: bool = False) -> None:
    """Append one line to a log with a single ``write`` (O_APPEND): a crash can cut only the last line,
    which :func:`read_jsonl` skips with a warning. ``fsync``: on the disk before this returns (a record that must
    outlive a power cut, not a row of a log written every step)."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fault = active_fault(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if fault is not None and fault.after_bytes is not None and fault.after_bytes < len(data):
            os.write(fd, data[:fault.after_bytes])
            fault.trigger(Path(path))
        os.write(fd, data)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, *, missing_ok: bool = False,
               allow_torn_last_line: bool = True) -> tuple[list[Any], int]:
    """The JSON rows of a JSONL file, and how many lines were skipped (0, or 1 for a torn last line).

    The one JSONL reader of lorank; the policy on bad input:

    - a missing file is an error (``FileNotFoundError``) unless ``missing_ok``, then it reads as no rows;
    - blank lines carry no row and are passed over;
    - a torn last line -- the last non-blank line is not valid JSON (or not valid UTF-8), as a crash in the
      middle of :func:`append_line` leaves it -- is skipped with a warning naming the file and line, and
      counted in the second value, when ``allow_torn_last_line`` (the default); otherwise it is an error;
    - any other line that is not valid JSON (or not valid UTF-8) raises :class:`lorank.errors.DataError`
      naming the file, the 1-based line number and the problem: the file was damaged, not interrupted.

    Nothing is dropped without a warning or an error. Lines are split on ``\\n`` only and decoded one
    at a time, so a cut multi-byte character damages only its own line.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return [], 0
        raise
    lines = data.split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    rows: list[Any] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rows.append(json.loads(raw.decode("utf-8")))
        except UnicodeDecodeError as e:
            problem = f"not valid UTF-8 (byte {e.start + 1} of the line)"
        except json.JSONDecodeError as e:
            problem = f"not valid JSON ({e.msg}, column {e.colno})"
        else:
            continue
        if i == last and allow_torn_last_line:
            log.warning("%s:%d: skipped 1 torn last line (an interrupted append): %s", p, i + 1, problem)
            return rows, 1
        if i == last:
            raise DataError(str(p), i + 1, f"{problem}: a torn last line, and this reader allows none")
        raise DataError(str(p), i + 1, f"{problem}, before the last line: the file is damaged, not cut by a crash")
    return rows, 0


def _default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"cannot serialise {type(o).__name__}")
