"""MS MARCO tab-separated files: queries, collection, top1000 candidates and training triples.

Every reader streams: one line in, one record out. Ids are stripped of surrounding
whitespace and may not contain inner whitespace (they must survive TREC run files); texts
are kept exactly as written but may not be empty. The last column takes the rest of the line:
a passage with TABs inside it (NovelEval's collection.tsv has one with 24) is read with its
TABs, as other IR tools read it, and such lines are counted and reported once per file.

Duplicate ids: the same id with the same content is yielded once and counted as an exact
duplicate (`DataReport.duplicates`); the same id with different content is a problem.
The `iter_*` readers remember each id with a hash of its content; on the 8.8M-line MS MARCO
collection that costs memory, so they take `check_duplicates=False` to stream without it.
The `load_*` readers check against the dict they build anyway, at no extra cost.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from lorank.data.lines import (
    LineProblem,
    Reading,
    TabsInText,
    check_id,
    check_text,
    column_problem,
    parse_records,
    split_columns,
    warn_skipped,
)
from lorank.data.records import Candidate, Passage, Query, ReadReport, Triple


# ---------------------------------------------------------------------------------------- queries
def _parse_query(text: str) -> Query | TabsInText:
    cols, tabs = split_columns(text, 2, "2 (qid<TAB>query text)")
    query = Query(check_id(cols[0], "qid"), check_text(cols[1], "query text"))
    return TabsInText(query) if tabs else query


def iter_queries(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    check_duplicates: bool = True,
) -> Iterator[Query]:
    """Stream an MS MARCO queries file: `qid<TAB>query text`, one query a line."""
    reading = Reading.start(path, lenient, report)
    table: dict | None = {} if check_duplicates else None
    yield from parse_records(reading, _parse_query, lambda q: (q.qid, hash(q.text)), table, "qid")


def load_queries(
    path: str | Path, lenient: bool = False, report: ReadReport | None = None, warn: bool = True
) -> dict[str, str]:
    """All queries of a queries file as `{qid: text}`, in file order."""
    reading = Reading.start(path, lenient, report)
    out: dict[str, str] = {}
    for _ in parse_records(reading, _parse_query, lambda q: (q.qid, q.text), out, "qid"):
        pass
    warn_skipped(reading, warn)
    return out


# ------------------------------------------------------------------------------------- collection
_ID_NAMES = {"id", "pid", "docid", "doc_id", "_id", "passage_id"}
_TEXT_NAMES = {"text", "passage", "contents", "body"}
_TITLE_NAMES = {"title"}


class _CollectionParser:
    """Parses `pid<TAB>text`, or `pid<TAB>title<TAB>text`, choosing the layout once per file.

    The first line fixes the layout for the whole file: 3 columns make it `pid<TAB>title<TAB>text`,
    2 (or more than 3: a first passage with TABs in it) `pid<TAB>text`. The last column takes the
    rest of every line, so a TAB inside a passage is kept as text, never read as a title. A first line made
    only of known column names (`id`/`pid`/`docid`, `title`, `text`, in any order, like DPR's
    `id<TAB>text<TAB>title`) is a header: it names the columns and is not a passage.
    """

    def __init__(self) -> None:
        self.width: int | None = None
        self.pid_col = 0
        self.text_col = 1
        self.title_col: int | None = None

    def __call__(self, text: str) -> Passage | TabsInText | None:
        if self.width is None:
            cols = text.split("\t")
            if len(cols) < 2:
                raise column_problem(len(cols), "2 (pid<TAB>text) or 3 (pid<TAB>title<TAB>text)")
            self.width = 3 if len(cols) == 3 else 2
            if self.width == 3:
                self.title_col, self.text_col = 1, 2
            if len(cols) <= 3 and self._header(cols):
                return None
        layout = "pid<TAB>text" if self.width == 2 else "pid<TAB>title<TAB>text"
        cols, tabs = split_columns(text, self.width, f"{self.width} like the rest of the file ({layout})")
        if self.width == 3 and self.text_col != 2:      # a header put the text before the last column
            cols, tabs = text.split("\t"), False
            if len(cols) != 3:
                raise column_problem(len(cols), "3 like the rest of the file, in the header's order")
        title = cols[self.title_col] if self.title_col is not None else ""
        body = cols[self.text_col]
        if (not body or body.isspace()) and (not title or title.isspace()):
            raise LineProblem("empty passage text")
        passage = Passage(check_id(cols[self.pid_col], "pid"), body, title)
        return TabsInText(passage) if tabs else passage

    def _header(self, cols: list[str]) -> bool:
        names = [c.strip().lower() for c in cols]
        ids = [i for i, n in enumerate(names) if n in _ID_NAMES]
        texts = [i for i, n in enumerate(names) if n in _TEXT_NAMES]
        titles = [i for i, n in enumerate(names) if n in _TITLE_NAMES]
        if len(ids) != 1 or len(texts) != 1 or len(ids) + len(texts) + len(titles) != len(names):
            return False
        self.pid_col, self.text_col = ids[0], texts[0]
        self.title_col = titles[0] if titles else None
        return True


def iter_collection(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    check_duplicates: bool = True,
) -> Iterator[Passage]:
    """Stream a passage collection: `pid<TAB>text` (MS MARCO), or `pid<TAB>title<TAB>text`.

    A passage is empty (a problem) when both its text and title are empty.
    """
    reading = Reading.start(path, lenient, report)
    table: dict | None = {} if check_duplicates else None
    yield from parse_records(
        reading, _CollectionParser(), lambda p: (p.pid, hash((p.title, p.text))), table, "pid"
    )


def load_collection(
    path: str | Path, lenient: bool = False, report: ReadReport | None = None, warn: bool = True
) -> dict[str, Passage]:
    """All passages of a collection file as `{pid: Passage}`, in file order."""
    reading = Reading.start(path, lenient, report)
    out: dict[str, Passage] = {}
    for _ in parse_records(reading, _CollectionParser(), lambda p: (p.pid, p), out, "pid"):
        pass
    warn_skipped(reading, warn)
    return out


# --------------------------------------------------------------------------------------- top1000
def _parse_top1000(text: str) -> Candidate | TabsInText:
    cols, tabs = split_columns(text, 4, "4 (qid<TAB>pid<TAB>query<TAB>passage)")
    cand = Candidate(
        qid=check_id(cols[0], "qid"),
        docid=check_id(cols[1], "pid"),
        query=check_text(cols[2], "query text"),
        text=check_text(cols[3], "passage text"),
    )
    return TabsInText(cand) if tabs else cand


def iter_top1000(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    check_duplicates: bool = True,
) -> Iterator[Candidate]:
    """Stream an MS MARCO top1000 file: `qid<TAB>pid<TAB>query<TAB>passage`.

    The file carries no rank or score (it is not sorted), so those fields stay None.
    """
    reading = Reading.start(path, lenient, report)
    table: dict | None = {} if check_duplicates else None
    yield from parse_records(
        reading,
        _parse_top1000,
        lambda c: ((c.qid, c.docid), hash((c.query, c.text))),
        table,
        "(qid, pid)",
    )


# --------------------------------------------------------------------------------------- triples
def _parse_triple(text: str) -> Triple | TabsInText:
    cols, tabs = split_columns(text, 3, "3 (query<TAB>positive<TAB>negative)")
    triple = Triple(
        check_text(cols[0], "query text"),
        check_text(cols[1], "positive passage text"),
        check_text(cols[2], "negative passage text"),
    )
    return TabsInText(triple) if tabs else triple


def iter_triples(
    path: str | Path, lenient: bool = False, report: ReadReport | None = None
) -> Iterator[Triple]:
    """Stream MS MARCO training triples: `query<TAB>positive passage<TAB>negative passage`."""
    yield from parse_records(Reading.start(path, lenient, report), _parse_triple)
