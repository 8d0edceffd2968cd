"""The shared layer under every reader: open a file, decode it line by line, report problems.

Files are read in binary and decoded one line at a time, so a bad byte is reported with
its 1-based line number instead of a traceback from the middle of a text stream. A UTF-8
byte-order mark at the start of the file is dropped. A gzip-compressed file (found by its magic
bytes, whatever its name) is decompressed as it is read. Lines holding only whitespace carry
no record and are passed over (a trailing blank line is common and harmless).

`Reading` carries the strict/lenient choice: in strict mode a problem raises `DataError`,
in lenient mode the line is skipped and counted in the `ReadReport`.
"""
from __future__ import annotations

import gzip
import logging
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, TypeVar

from lorank.errors import DataError
from lorank.data.records import ReadReport

log = logging.getLogger("lorank.data")
T = TypeVar("T")
_SPACE = re.compile(r"\s")

_BOM = b"\xef\xbb\xbf"
_GZIP = b"\x1f\x8b"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


class LineProblem(Exception):
    """Raised by a line parser: what is wrong with the line. The caller adds file and line."""


@dataclass(slots=True)
class DataReport(ReadReport):
    """A `ReadReport` that also counts exact duplicates (same id, same content).

    Exact duplicates are not errors: the record is yielded once and the repeats counted here.
    Readers create one of these when no report is passed in; a plain `ReadReport` passed in
    gets `read` and `skipped` but has nowhere to count duplicates.
    """

    duplicates: int = 0

    def summary(self) -> str:
        s = ReadReport.summary(self)
        return s + (f", {self.duplicates} exact duplicates dropped" if self.duplicates else "")


@dataclass(slots=True)
class Reading:
    """One pass over one file: where it is, whether to be lenient, and what was skipped."""

    path: Path
    lenient: bool
    report: ReadReport

    @classmethod
    def start(cls, path: str | Path, lenient: bool, report: ReadReport | None) -> Reading:
        path = Path(path)
        return cls(path, lenient, report if report is not None else DataReport(str(path)))

    def bad(self, line: int | None, problem: str) -> None:
        """A bad record: raise in strict mode, count and go on in lenient mode."""
        if not self.lenient:
            raise DataError(self.path, line, problem)
        self.report.skip(line, problem)

    def good(self) -> None:
        self.report.read += 1

    def duplicate(self) -> None:
        if isinstance(self.report, DataReport):
            self.report.duplicates += 1

    def tabs_in_text(self, line: int) -> None:
        """A line whose last column held TABs, kept as part of its text: counted, reported once at the end."""
        self.report.text_tabs += 1
        if len(self.report.text_tab_lines) < 5:
            self.report.text_tab_lines.append(line)


@dataclass(slots=True)
class TabsInText:
    """What a TSV line parser returns for a record whose last column held TABs (kept as text, counted)."""

    record: Any


def split_columns(text: str, n: int, expected: str) -> tuple[list[str], bool]:
    """The `n` TAB-separated columns of a line, the last one taking the rest of the line, TABs and all.

    This is how other IR tools read a passage with TABs in it (e.g. NovelEval's collection.tsv). Returns the
    columns and whether the last one held a TAB; fewer than `n` columns is a problem.
    """
    cols = text.split("\t", n - 1)
    if len(cols) < n:
        raise column_problem(len(cols), expected)
    return cols, "\t" in cols[-1]


def open_binary(path: Path) -> IO[bytes]:
    """Open `path` for reading bytes; every OS failure becomes a `DataError`."""
    try:
        if path.is_dir():
            raise DataError(path, None, "is a directory, expected a file")
        fh = open(path, "rb")
        if fh.read(2) == _GZIP:
            fh.close()
            return gzip.open(path, "rb")
        fh.seek(0)
        return fh
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except PermissionError:
        raise DataError(path, None, "permission denied") from None
    except OSError as e:
        raise DataError(path, None, f"cannot open: {e.strerror or e}") from None


def read_bytes(path: Path) -> bytes:
    """The whole file as bytes (for formats that are one JSON document)."""
    with open_binary(path) as fh:
        try:
            return fh.read()
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, None, _read_failure(e)) from None


def decode_document(path: Path, data: bytes) -> str:
    """Decode a whole file as UTF-8 (BOM dropped); a bad byte names its line."""
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    elif data.startswith(_UTF16_BOMS):
        raise DataError(path, 1, "file is UTF-16 encoded; convert it to UTF-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(path, line, f"not valid UTF-8: byte 0x{data[e.start]:02x} at column {col}") from None


def iter_lines(reading: Reading) -> Iterator[tuple[int, str]]:
    """Yield `(line_number, text)` for every non-blank line, without its line terminator.

    A line that is not valid UTF-8 is a problem for `reading` (raised, or skipped and counted).
    """
    path = reading.path
    with open_binary(path) as fh:
        lineno = 0
        try:
            for raw in fh:
                lineno += 1
                if lineno == 1:
                    if raw.startswith(_BOM):
                        raw = raw[len(_BOM):]
                    elif raw.startswith(_UTF16_BOMS):
                        raise DataError(path, 1, "file is UTF-16 encoded; convert it to UTF-8")
                raw = raw.rstrip(b"\r\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    reading.bad(lineno, f"not valid UTF-8: byte 0x{raw[e.start]:02x} at column {e.start + 1}")
                    continue
                if text and not text.isspace():
                    yield lineno, text
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(path, lineno + 1, _read_failure(e)) from None


def _read_failure(e: BaseException) -> str:
    """The problem text for a read that failed midway (an OS error, or a broken gzip stream)."""
    if isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"cannot read: the gzip stream is broken or truncated ({e})"
    return f"cannot read: {getattr(e, 'strerror', None) or e}"


def check_id(value: str, what: str) -> str:
    """An identifier: non-empty, no inner whitespace (it must survive TREC's space-split formats)."""
    value = value.strip()
    if not value:
        raise LineProblem(f"empty {what}")
    if has_space(value):
        raise LineProblem(f"{what} {value!r} contains whitespace")
    return value


def has_space(value: str) -> bool:
    """Whether `value` holds any whitespace character."""
    return _SPACE.search(value) is not None


def check_text(value: str, what: str) -> str:
    """A text field: must hold something other than whitespace. Returned unchanged."""
    if not value or value.isspace():
        raise LineProblem(f"empty {what}")
    return value


def parse_int(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise LineProblem(f"{what} {_show(value)} is not an integer") from None


def parse_float(value: str, what: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise LineProblem(f"{what} {_show(value)} is not a number") from None
    if not math.isfinite(x):
        raise LineProblem(f"{what} {_show(value)} is not a finite number")
    return x


def _show(value: str, limit: int = 40) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def column_problem(got: int, expected: str) -> LineProblem:
    return LineProblem(f"wrong number of columns: found {got}, expected {expected}")


def warn_skipped(reading: Reading, warn: bool) -> None:
    """Log the summary of a lenient read that skipped something (when `warn`)."""
    if warn and reading.lenient and reading.report.skipped:
        log.warning("skipped bad lines: %s", reading.report.summary())


def claim(table: dict, key: object, fingerprint: object, what: str) -> bool:
    """Record `key` in `table`: True the first time, False for an exact repeat.

    The same key with a different fingerprint (content) is a `LineProblem`.
    """
    prev = table.get(key, _MISSING)
    if prev is _MISSING:
        table[key] = fingerprint
        return True
    if prev == fingerprint:
        return False
    raise LineProblem(f"duplicate {what} {key!r} with different content from an earlier line")


_MISSING = object()


def parse_records(
    reading: Reading,
    parse: Callable[[Any], T | None],
    identity: Callable[[T], tuple[object, object]] | None = None,
    table: dict | None = None,
    what: str = "id",
    items: Iterable[tuple[int, Any]] | None = None,
) -> Iterator[T]:
    """Parse every line of `reading` with `parse`, yielding the good records.

    `items` are the `(line_number, value)` pairs to parse: by default the text lines of the
    file, or e.g. decoded JSON values. `parse` raises `LineProblem` for a bad item and may
    return None for one that holds no record (a header). With `table`, records are
    de-duplicated by `identity(record)`, a `(key, fingerprint)` pair: exact repeats are
    dropped and counted, conflicts are problems.
    """
    for lineno, value in iter_lines(reading) if items is None else items:
        try:
            rec = parse(value)
            if rec is None:
                continue
            if isinstance(rec, TabsInText):
                reading.tabs_in_text(lineno)
                rec = rec.record
            if table is not None and identity is not None and not claim(table, *identity(rec), what):
                reading.duplicate()
                continue
        except LineProblem as e:
            reading.bad(lineno, str(e))
            continue
        reading.good()
        yield rec
    report_tabs(reading)


def report_tabs(reading: Reading) -> None:
    """Say once, after a file is read, how many lines held TABs inside their last column."""
    n = reading.report.text_tabs
    if n:
        lines = ", ".join(str(x) for x in reading.report.text_tab_lines) + (", ..." if n > 5 else "")
        log.warning(
            "%s: %d line%s held TABs inside the last column (line %s); read them as part of its text",
            reading.path, n, "" if n == 1 else "s", lines,
        )
