"""Writing TREC runs, and the one ranking rule every scorer in lorank shares.

The ranking rule is trec_eval's: documents sorted by score, highest first; documents with
equal scores ordered by docid in *decreasing* lexical order (trec_eval's `comp_sim_docno`).
`write_run` numbers ranks with this rule, and `lorank.evaluation.metrics.evaluate` ranks with it
too, so the rank column of a file lorank writes is exactly the order trec_eval evaluates.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from lorank.atomic import atomic_open
from lorank.data.records import RunEntry
from lorank.errors import DataError

__all__ = ["normalise_run", "trec_order", "write_run"]


def trec_order(docs: Mapping[str, float]) -> list[str]:
    """Docids of one query in trec_eval's order: score descending, ties by docid descending."""
    # Two stable sorts: first the tie-break (docid descending), then the score (descending).
    ids = sorted(docs, reverse=True)
    ids.sort(key=lambda d: docs[d], reverse=True)
    return ids


def _pairs(qid: str, entries: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(entries, Mapping):
        return entries.items()
    out = []
    for e in entries:
        if isinstance(e, RunEntry):
            out.append((e.docid, e.score))
        elif isinstance(e, (tuple, list)) and len(e) == 2:
            out.append((e[0], e[1]))
        else:
            raise DataError(None, None, f"run, query {qid!r}: expected RunEntry or (docid, score), got {e!r}")
    return out


def normalise_run(run: Mapping[str, Any], what: str = "run") -> dict[str, dict[str, float]]:
    """Turn any accepted run shape into `{qid: {docid: score}}`.

    Accepted per query: a list of `RunEntry`, a list of `(docid, score)` pairs, or a
    `{docid: score}` dict. A document listed twice for one query, or a score that is not
    a finite number, is an error (trec_eval would silently keep one of the duplicates).
    """
    out: dict[str, dict[str, float]] = {}
    for qid, entries in run.items():
        qid = str(qid)
        docs: dict[str, float] = {}
        for docid, score in _pairs(qid, entries):
            docid = str(docid)
            try:
                s = float(score)
            except (TypeError, ValueError):
                raise DataError(None, None, f"{what}, query {qid!r}, document {docid!r}: "
                                            f"score {score!r} is not a number") from None
            if not math.isfinite(s):
                raise DataError(None, None, f"{what}, query {qid!r}, document {docid!r}: score {s} is not finite")
            if docid in docs:
                raise DataError(None, None, f"{what}, query {qid!r}: document {docid!r} is listed twice")
            docs[docid] = s
        out[qid] = docs
    return out


def _check_token(value: str, what: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise DataError(None, None, f"cannot write a TREC run: {what} {value!r} is empty or contains whitespace")


def write_run(path: str | Path, run: Mapping[str, Any], tag: str = "lorank") -> Path:
    """Write `run` as a TREC run file (`qid Q0 docid rank score tag`), atomically.

    `run` maps qid to a list of `(docid, score)` pairs, a `{docid: score}` dict, or a list of
    `RunEntry`. Each query's documents are sorted by score descending, ties by docid
    (trec_eval's rule, see `trec_order`), and numbered 1..n. Queries keep the order of `run`.
    Scores are written with full float precision (`repr`), so reading the file back
    gives the same ranking. Returns the path written.
    """
    _check_token(tag, "tag")
    docs_by_q = normalise_run(run)
    path = Path(path)
    with atomic_open(path, "w") as fh:
        for qid, docs in docs_by_q.items():
            _check_token(qid, "query id")
            for rank, docid in enumerate(trec_order(docs), start=1):
                _check_token(docid, "docid")
                fh.write(f"{qid} Q0 {docid} {rank} {docs[docid]!r} {tag}\n")
    return path
