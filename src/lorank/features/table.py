"""Feature tables on disk: Parquet (``.parquet``, needs pyarrow) or CSV (``.csv``), keyed by (qid, docid),
with a JSON sidecar ``<file>.meta.json`` (source data, adapter, groups, counts). Written atomically; read back
with every problem named (file, column, row)."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Sequence

from lorank.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from lorank.errors import DataError
from lorank.features.groups import KEY_COLUMNS

FORMATS = (".parquet", ".csv")
GRADE_COLUMN = "grade"


def meta_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".meta.json")


def _fmt_of(path: Path) -> str:
    suf = path.suffix.lower()
    if suf not in FORMATS:
        raise DataError(path, None, f"unknown feature table format {suf or '(no suffix)'!r}: use .parquet or .csv")
    return suf


def write_table(path: str | Path, df: Any, meta: dict[str, Any] | None = None) -> Path:
    """Write the table (and its sidecar) atomically; the format follows the suffix."""
    path = Path(path)
    fmt = _fmt_of(path)
    if fmt == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataError(path, None, "writing Parquet needs pyarrow (pip install pyarrow), or use a .csv path") \
                from None
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(path, buf.getvalue())
    else:
        atomic_write_text(path, df.to_csv(index=False, float_format="%.9g"))
    if meta is not None:
        atomic_write_json(meta_path(path), meta)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    p = meta_path(path)
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(p, e.lineno, f"unreadable feature-table metadata: {e.msg}") from None


def read_table(path: str | Path, need: Sequence[str] = ()) -> Any:
    """A validated feature table (pandas): key columns present and strings, no duplicate (qid, docid), every
    other column numeric, ``need`` columns present. Problems raise :class:`DataError` naming the file."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "feature table not found")
    fmt = _fmt_of(path)
    try:
        if fmt == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype={k: str for k in KEY_COLUMNS}, keep_default_na=True)
    except ImportError:
        raise DataError(path, None, "reading Parquet needs pyarrow (pip install pyarrow)") from None
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise DataError(path, None, f"cannot read the feature table: {str(e).splitlines()[0]}") from None
    missing = [c for c in (*KEY_COLUMNS, *need) if c not in df.columns]
    if missing:
        raise DataError(path, None, f"missing column(s) {', '.join(missing)} (the table has: "
                                    f"{', '.join(map(str, df.columns[:12]))}{' ...' if len(df.columns) > 12 else ''})")
    line0 = 2 if fmt == ".csv" else None  # CSV: the header is line 1
    for k in KEY_COLUMNS:
        bad = df[k].isna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            raise DataError(path, None if line0 is None else line0 + i, f"empty {k} ({int(bad.sum())} rows)")
        df[k] = df[k].astype(str)
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        rows = dup.to_numpy().nonzero()[0]
        q, d = df.iloc[rows[0]][list(KEY_COLUMNS)]
        where = ("lines " + ", ".join(str(line0 + int(r)) for r in rows[:4])) if line0 else \
            ("rows " + ", ".join(str(int(r)) for r in rows[:4]))
        raise DataError(path, None, f"{int(dup.sum())} rows share a (qid, docid) key, e.g. ({q}, {d}) at {where}")
    for c in df.columns:
        if c in KEY_COLUMNS or pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            continue
        conv = pd.to_numeric(df[c], errors="coerce")
        bad = conv.isna() & df[c].notna()
        if bad.any():
            i = int(bad.to_numpy().nonzero()[0][0])
            where = f"line {line0 + i}" if line0 else f"row {i}"
            raise DataError(path, None, f"column {c!r} is not numeric ({int(bad.sum())} bad values, e.g. "
                                        f"{df[c].iloc[i]!r} at {where})")
        df[c] = conv
    return df
