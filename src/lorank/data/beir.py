"""BEIR datasets: `corpus.jsonl`, `queries.jsonl` and `qrels/<split>.tsv` in one folder.

Corpus records are `{_id, title, text}` (a passage is empty, a problem, when both title and
text are); query records are `{_id, text}`; other keys (metadata) are ignored. Duplicate ids
follow the TSV readers' rule: an exact repeat is dropped and counted, a conflict is a problem.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from lorank.errors import DataError
from lorank.data.jsonl import as_object, get_id, get_text, iter_json_lines
from lorank.data.lines import LineProblem, Reading, parse_records, warn_skipped
from lorank.data.records import Passage, Query, ReadReport
from lorank.data.trec import load_qrels

T = TypeVar("T")


def _corpus_record(value: Any) -> Passage:
    obj = as_object(value)
    pid = get_id(obj, "_id")
    title = get_text(obj, "title", required=False, allow_empty=True)
    text = get_text(obj, "text", required=True, allow_empty=True)
    if not text.strip() and not title.strip():
        raise LineProblem("empty passage text ('title' and 'text' both empty)")
    return Passage(pid, text, title)  # type: ignore[arg-type]


def _query_record(value: Any) -> Query:
    obj = as_object(value)
    return Query(get_id(obj, "_id"), get_text(obj, "text", "query text"))  # type: ignore[arg-type]


def iter_beir_corpus(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    check_duplicates: bool = True,
) -> Iterator[Passage]:
    """Stream a BEIR `corpus.jsonl` as `Passage`s."""
    reading = Reading.start(path, lenient, report)
    table: dict | None = {} if check_duplicates else None
    yield from parse_records(
        reading, _corpus_record, lambda p: (p.pid, hash((p.title, p.text))), table, "_id", iter_json_lines(reading)
    )


def iter_beir_queries(
    path: str | Path,
    lenient: bool = False,
    report: ReadReport | None = None,
    *,
    check_duplicates: bool = True,
) -> Iterator[Query]:
    """Stream a BEIR `queries.jsonl` as `Query`s."""
    reading = Reading.start(path, lenient, report)
    table: dict | None = {} if check_duplicates else None
    yield from parse_records(
        reading, _query_record, lambda q: (q.qid, hash(q.text)), table, "_id", iter_json_lines(reading)
    )


@dataclass
class BeirDataset:
    """One split of a BEIR dataset. `queries` holds only the queries judged in that split."""

    corpus: dict[str, Passage]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""
    split: str = "test"


def load_beir(
    directory: str | Path, split: str = "test", lenient: bool = False, warn: bool = True
) -> BeirDataset:
    """Load a BEIR folder: the whole corpus, and the queries and qrels of `split`.

    Qrels are checked against the queries and the corpus: an id in the qrels that is in
    neither is a problem (skipped and counted when lenient).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, None, "BEIR dataset folder not found")
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (directory / "qrels").glob("*.tsv"))
        raise DataError(qrels_path, None, f"no qrels for split {split!r} (splits found: {have or 'none'})")

    def load(path: Path, parse: Callable[[Any], T], key: Callable[[T], tuple[object, object]]) -> dict:
        reading = Reading.start(path, lenient, None)
        table: dict = {}
        for _ in parse_records(reading, parse, key, table, "_id", iter_json_lines(reading)):
            pass
        warn_skipped(reading, warn)
        return table

    corpus: dict[str, Passage] = load(directory / "corpus.jsonl", _corpus_record, lambda p: (p.pid, p))
    all_queries: dict[str, str] = load(directory / "queries.jsonl", _query_record, lambda q: (q.qid, q.text))
    qrels = load_qrels(qrels_path, lenient, None, warn, known_qids=all_queries, known_docids=corpus)
    queries = {qid: all_queries[qid] for qid in qrels}
    return BeirDataset(corpus, queries, qrels, name=directory.name, split=split)
