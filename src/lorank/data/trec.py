"""TREC run and qrels files (and BEIR's qrels TSV), checked against known ids as they are read.

Run: `qid Q0 docid rank score tag`, whitespace separated, 6 columns. The second column is
not checked (tools write `Q0` or `0`). A docid listed twice for one query is a problem.

Qrels: TREC `qid iter docid grade` (4 columns, whitespace separated), or BEIR's TSV whose
first line is the header `query-id<TAB>corpus-id<TAB>score` (3 columns). The same
(qid, docid) judged twice with the same grade is an exact duplicate (dropped, counted);
with different grades it is a problem.
"""
from __future__ import annotations

from pathlib import Path
from typing import Collection, Iterator

from lorank.data.lines import (
    LineProblem,
    Reading,
    column_problem,
    parse_float,
    parse_int,
    parse_records,
    warn_skipped,
)
from lorank.data.records import Qrel, ReadReport, RunEntry


# ------------------------------------------------------------------------------------------- runs
class _RunParser:
    """Parses run lines and remembers each query's docids to catch duplicates."""

    def __init__(self, known_qids: Collection[str] | None, known_docids: Collection[str] | None):
        self.known_qids = known_qids
        self.known_docids = known_docids
        self.seen: dict[str, set[str]] = {}

    def __call__(self, text: str) -> RunEntry:
        cols = text.split()
        if len(cols) != 6:
            raise column_problem(len(cols), "6 (qid Q0 docid rank score tag)")
        qid, _, docid, rank_s, score_s, tag = cols
        rank = parse_int(rank_s, "rank")
        if rank < 0:
            raise LineProblem(f"rank {rank} is negative")
        score = parse_float(score_s, "score")
        # str.split() fields are already non-empty and whitespace-free: no check_id needed (1e6-line runs)
        if self.known_qids is not None and qid not in self.known_qids:
            raise LineProblem(f"unknown qid {qid!r}: not among the known queries")
        if self.known_docids is not None and docid not in self.known_docids:
            raise LineProblem(f"unknown docid {docid!r}: not in the collection")
        docs = self.seen.setdefault(qid, set())
        if docid in docs:
            raise LineProblem(f"duplicate docid {docid!r} for qid {qid!r}: listed twice in the run")
        docs.add(docid)
        return RunEntry(qid, docid, rank, score, tag)


def iter_run(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    known_qids: Collection[str] | None = None,
    known_docids: Collection[str] | None = None,
) -> Iterator[RunEntry]:
    """Stream a TREC run, in file order. `known_*` (any container, e.g. a dict) restrict the ids."""
    reading = Reading.start(path, lenient, report)
    yield from parse_records(reading, _RunParser(known_qids, known_docids))


def load_run(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    warn: bool = True,
    *,
    known_qids: Collection[str] | None = None,
    known_docids: Collection[str] | None = None,
) -> dict[str, list[RunEntry]]:
    """A run as `{qid: entries}`, each list sorted by descending score, then ascending rank."""
    reading = Reading.start(path, lenient, report)
    out: dict[str, list[RunEntry]] = {}
    for e in parse_records(reading, _RunParser(known_qids, known_docids)):
        out.setdefault(e.qid, []).append(e)
    for entries in out.values():
        entries.sort(key=lambda e: (-e.score, e.rank))
    warn_skipped(reading, warn)
    return out


# ------------------------------------------------------------------------------------------ qrels
_BEIR_HEADER = ["query-id", "corpus-id", "score"]


class _QrelsParser:
    """Parses TREC or BEIR qrels (chosen by the first line) and checks ids and repeats."""

    def __init__(
        self, reading: Reading, known_qids: Collection[str] | None, known_docids: Collection[str] | None
    ):
        self.reading = reading
        self.known_qids = known_qids
        self.known_docids = known_docids
        self.beir: bool | None = None
        self.grades: dict[tuple[str, str], int] = {}

    def __call__(self, text: str) -> Qrel | None:
        cols = text.split()
        if self.beir is None:
            self.beir = [c.lower() for c in cols] == _BEIR_HEADER
            if self.beir:
                return None
        if self.beir:
            if len(cols) != 3:
                raise column_problem(len(cols), "3 (query-id corpus-id score, BEIR qrels)")
            qid, docid, grade_s = cols
        else:
            if len(cols) != 4:
                hint = (
                    "; a 3-column BEIR qrels file must start with the header 'query-id corpus-id score'"
                    if len(cols) == 3
                    else ""
                )
                raise column_problem(len(cols), f"4 (qid iter docid grade){hint}")
            qid, _, docid, grade_s = cols
        grade = parse_int(grade_s, "grade")  # split() fields: non-empty, whitespace-free ids
        if self.known_qids is not None and qid not in self.known_qids:
            raise LineProblem(f"unknown qid {qid!r}: judged but not among the queries")
        if self.known_docids is not None and docid not in self.known_docids:
            raise LineProblem(f"unknown docid {docid!r}: judged but not in the collection")
        prev = self.grades.get((qid, docid))
        if prev is None:
            self.grades[(qid, docid)] = grade
            return Qrel(qid, docid, grade)
        if prev == grade:
            self.reading.duplicate()
            return None
        raise LineProblem(f"qid {qid!r} docid {docid!r} judged twice with different grades ({prev} and {grade})")


def iter_qrels(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    known_qids: Collection[str] | None = None,
    known_docids: Collection[str] | None = None,
) -> Iterator[Qrel]:
    """Stream a TREC (`qid iter docid grade`) or BEIR (`query-id corpus-id score`) qrels file."""
    reading = Reading.start(path, lenient, report)
    yield from parse_records(reading, _QrelsParser(reading, known_qids, known_docids))


def load_qrels(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    warn: bool = True,
    *,
    known_qids: Collection[str] | None = None,
    known_docids: Collection[str] | None = None,
) -> dict[str, dict[str, int]]:
    """Qrels as `{qid: {docid: grade}}`."""
    reading = Reading.start(path, lenient, report)
    out: dict[str, dict[str, int]] = {}
    for q in parse_records(reading, _QrelsParser(reading, known_qids, known_docids)):
        out.setdefault(q.qid, {})[q.docid] = q.grade
    warn_skipped(reading, warn)
    return out
