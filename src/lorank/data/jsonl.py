"""JSON plumbing shared by the JSON readers: records with their line numbers, and typed fields.

JSONL files are decoded line by line (see `lines.iter_lines`), so a bad record names its
line. A file that is one JSON array (rank_llm) is scanned element by element with
`json.JSONDecoder.raw_decode`, so each record still knows the line it starts on.
Broken JSON syntax inside an array cannot be skipped (the rest of the document has no
reliable structure), so it raises `DataError` even in lenient mode.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterator

from lorank.errors import DataError
from lorank.data.lines import LineProblem, Reading, decode_document, has_space, iter_lines, read_bytes


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise LineProblem(f"not valid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:  # e.g. an integer longer than Python's digit limit
        raise LineProblem(f"not valid JSON: {e}") from None
    except RecursionError:
        raise LineProblem("not valid JSON: nested too deeply") from None


def iter_json_lines(reading: Reading) -> Iterator[tuple[int, Any]]:
    """Yield `(line_number, value)` for each non-blank line of a JSONL file.

    A line that is not valid JSON is a problem for `reading` (raised, or skipped and counted).
    """
    for lineno, text in iter_lines(reading):
        try:
            value = _loads(text)
        except LineProblem as e:
            reading.bad(lineno, str(e))
            continue
        yield lineno, value


def iter_json_records(reading: Reading) -> Iterator[tuple[int, int, Any]]:
    """Yield `(index, line_number, value)` for each element of a top-level JSON array.

    A file whose first character is `{` is read as JSONL instead (one record a line).
    """
    text = decode_document(reading.path, read_bytes(reading.path))
    i = _skip_ws(text, 0)
    if i < len(text) and text[i] == "{":
        for index, (lineno, value) in enumerate(iter_json_lines(reading)):
            yield index, lineno, value
        return
    if i >= len(text) or text[i] != "[":
        raise DataError(reading.path, _line_at(text, i), "expected a JSON array of records ('[' ...)")
    decoder = json.JSONDecoder()
    line, pos = 1, 0  # line number of text[pos]
    i = _skip_ws(text, i + 1)
    index = 0
    if i < len(text) and text[i] == "]":
        i += 1
    else:
        while True:
            line += text.count("\n", pos, i)
            pos = i
            try:
                value, i = decoder.raw_decode(text, i)
            except json.JSONDecodeError as e:
                raise DataError(reading.path, e.lineno, f"not valid JSON: {e.msg} at column {e.colno}") from None
            except ValueError as e:
                raise DataError(reading.path, line, f"record {index}: not valid JSON: {e}") from None
            except RecursionError:
                raise DataError(reading.path, line, f"record {index}: JSON nested too deeply") from None
            yield index, line, value
            index += 1
            i = _skip_ws(text, i)
            if i < len(text) and text[i] == ",":
                i = _skip_ws(text, i + 1)
                continue
            if i < len(text) and text[i] == "]":
                i += 1
                break
            raise DataError(reading.path, _line_at(text, i), "not valid JSON: expected ',' or ']' after a record")
    i = _skip_ws(text, i)
    if i < len(text):
        raise DataError(reading.path, _line_at(text, i), "not valid JSON: extra data after the array")


_WS = " \t\n\r"


def _skip_ws(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _WS:
        i += 1
    return i


def _line_at(text: str, i: int) -> int:
    return text.count("\n", 0, i) + 1


# ------------------------------------------------------------------------------- typed fields
def as_object(value: Any, what: str = "record") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LineProblem(f"{what} is a JSON {_kind(value)}, expected an object")
    return value


def get_id(obj: dict[str, Any], key: str, what: str | None = None, required: bool = True) -> str | None:
    """An id field: a non-empty string without whitespace, or an integer (made a string)."""
    what = what or f"'{key}'"
    value = obj.get(key)
    if value is None:
        if required:
            raise LineProblem(f"missing {what}")
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise LineProblem(f"{what} is a JSON {_kind(value)}, expected a string or an integer")
    value = value.strip()
    if not value:
        raise LineProblem(f"empty {what}")
    if has_space(value):
        raise LineProblem(f"{what} {value!r} contains whitespace")
    return value


def get_text(obj: dict[str, Any], key: str, what: str | None = None, required: bool = True,
             allow_empty: bool = False) -> str:
    """A text field: a string, by default non-empty; optional ones default to ''."""
    what = what or f"'{key}'"
    value = obj.get(key)
    if value is None:
        if required:
            raise LineProblem(f"missing {what}")
        return ""
    return check_json_text(value, what, allow_empty)


def check_json_text(value: Any, what: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise LineProblem(f"{what} is a JSON {_kind(value)}, expected a string")
    if not allow_empty and (not value or value.isspace()):
        raise LineProblem(f"empty {what}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LineProblem(f"{what} holds an unpaired surrogate escape (\\ud800-\\udfff)") from None
    return value


def get_list(obj: dict[str, Any], key: str, what: str | None = None, required: bool = True) -> list[Any]:
    what = what or f"'{key}'"
    value = obj.get(key)
    if value is None:
        if required:
            raise LineProblem(f"missing {what}")
        return []
    if not isinstance(value, list):
        raise LineProblem(f"{what} is a JSON {_kind(value)}, expected a list")
    return value


def as_number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LineProblem(f"{what} is a JSON {_kind(value)}, expected a number")
    try:
        x = float(value)
    except OverflowError:
        raise LineProblem(f"{what} is too large") from None
    if not math.isfinite(x):
        raise LineProblem(f"{what} is not a finite number")
    return x


def as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LineProblem(f"{what} is a JSON {_kind(value)}, expected an integer")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"
