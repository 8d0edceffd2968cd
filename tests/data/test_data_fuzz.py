"""Property tests: whatever the bytes, every reader returns records or raises DataError."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorank.data import (
    DataReport,
    RunEntry,
    iter_beir_corpus,
    iter_beir_queries,
    iter_collection,
    iter_hardneg,
    iter_qrels,
    iter_queries,
    iter_rank_llm,
    iter_run,
    iter_tevatron,
    iter_top1000,
    iter_triples,
    load_queries,
    load_run,
)
from lorank.errors import DataError

READERS = [
    iter_queries, iter_collection, iter_top1000, iter_triples, iter_run, iter_qrels,
    iter_beir_corpus, iter_beir_queries, iter_tevatron, iter_hardneg, iter_rank_llm,
]
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Lines made of pieces that the readers care about: ids, numbers, separators, odd bytes.
_piece = st.sampled_from(
    ["1", "2", "Q0", "d1", "0", "-1", "1.5", "nan", "1e999", "", " ", "x y", "query-id", "corpus-id",
     "score", "id", "text", "title", "\ufeff", "\xe9", "\u2028", "\x00", "\r"]
) | st.text(max_size=6)
_sep = st.sampled_from(["\t", " ", "  "])
_line = st.tuples(st.lists(_piece, max_size=7), _sep).map(lambda t: t[1].join(t[0]))
tabular = st.lists(_line, max_size=8).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))

_json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
_json_value = st.recursive(
    _json_leaf,
    lambda kids: st.lists(kids, max_size=4)
    | st.dictionaries(
        st.sampled_from(["query", "qid", "_id", "text", "title", "hits", "docid", "rank", "score", "content",
                         "pos", "neg", "pos_scores", "neg_scores", "positive_passages", "negative_passages",
                         "query_id"]),
        kids,
        max_size=6,
    ),
    max_leaves=20,
)
jsonish = st.one_of(
    st.lists(_json_value, max_size=4).map(lambda v: "\n".join(json.dumps(x) for x in v).encode()),
    st.lists(_json_value, max_size=4).map(lambda v: json.dumps(v, indent=1).encode()),
)


def _consume(reader, data: bytes, lenient: bool) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "input"
        path.write_bytes(data)
        report = DataReport(str(path))
        try:
            records = list(reader(path, lenient=lenient, report=report))
        except DataError as e:
            assert e.path == str(path) and e.problem
            return
        assert report.read == len(records)
        if not lenient:
            assert report.skipped == 0


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@FAST
@given(data=st.binary(max_size=200), lenient=st.booleans())
def test_any_bytes(reader, data, lenient):
    _consume(reader, data, lenient)


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@FEW
@given(data=tabular, lenient=st.booleans())
def test_tabular_looking_input(reader, data, lenient):
    _consume(reader, data, lenient)


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__)
@FEW
@given(data=jsonish, lenient=st.booleans())
def test_json_looking_input(reader, data, lenient):
    _consume(reader, data, lenient)


_id = st.text(st.characters(categories=["L", "N"], include_characters="-_."), min_size=1, max_size=8)
_text = st.text(st.characters(blacklist_characters="\t\n\r", blacklist_categories=["Cs"]), min_size=1, max_size=20).filter(
    lambda s: not s.isspace()
)


@FAST
@given(st.dictionaries(_id, _text, max_size=8))
def test_queries_round_trip(queries):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "q.tsv"
        path.write_bytes("".join(f"{q}\t{t}\n" for q, t in queries.items()).encode())
        assert load_queries(path) == queries


@FAST
@given(st.dictionaries(st.tuples(_id, _id), st.tuples(st.integers(0, 10**6), st.floats(-1e9, 1e9)), max_size=12))
def test_run_round_trip(entries):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.run"
        path.write_text("".join(f"{q} Q0 {doc} {r} {s!r} tag\n" for (q, doc), (r, s) in entries.items()))
        run = load_run(path)
    got = {(e.qid, e.docid): (e.rank, e.score) for es in run.values() for e in es}
    assert got == entries
    for es in run.values():
        assert all((a.score, -a.rank) >= (b.score, -b.rank) for a, b in zip(es, es[1:]))
        assert all(isinstance(e, RunEntry) for e in es)
