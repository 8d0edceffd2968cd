import os

import pytest

from lorank.data.records import RunEntry
from lorank.errors import DataError
from lorank.evaluation import evaluate, trec_order, write_run


def test_trec_order():
    assert trec_order({"a": 1.0, "b": 1.0, "c": 2.0, "d": 0.5}) == ["c", "b", "a", "d"]


def test_write_run_sorts_and_ranks(tmp_path):
    out = tmp_path / "sub" / "r.run"
    write_run(out, {"q2": [("a", 0.5), ("b", 2.0), ("c", 0.5)], "q1": {"x": 1.0}}, tag="t1")
    lines = out.read_text().splitlines()
    assert lines == [
        "q2 Q0 b 1 2.0 t1",
        "q2 Q0 c 2 0.5 t1",
        "q2 Q0 a 3 0.5 t1",
        "q1 Q0 x 1 1.0 t1",
    ]
    assert [p.name for p in out.parent.iterdir()] == ["r.run"]  # no temp file left behind


def test_write_run_accepts_entries_and_keeps_precision(tmp_path):
    s = 0.1 + 0.2  # 0.30000000000000004
    out = write_run(tmp_path / "r.run", {"q": [RunEntry("q", "d1", 5, s), RunEntry("q", "d2", 1, 0.3)]})
    lines = out.read_text().splitlines()
    assert lines[0] == f"q Q0 d1 1 {s!r} lorank"
    assert float(lines[1].split()[4]) == 0.3


def test_write_run_roundtrip_evaluates_the_same(tmp_path):
    pytest.importorskip("lorank.data", reason="lorank.data readers not available")
    from lorank.data import load_run

    qrels = {"q1": {"a": 2, "b": 3}, "q2": {"c": 1}}
    run = {"q1": {"a": 1.0, "b": 1.0, "z": 3.0}, "q2": {"c": 0.25, "y": 0.25}}
    path = write_run(tmp_path / "r.run", run)
    back = load_run(path)
    assert evaluate(qrels, back).aggregate == evaluate(qrels, run).aggregate
    assert [e.docid for e in back["q1"]] == ["z", "b", "a"]
    assert [e.rank for e in back["q1"]] == [1, 2, 3]


def test_write_run_rejects_bad_tokens(tmp_path):
    with pytest.raises(DataError):
        write_run(tmp_path / "r.run", {"q": {"a b": 1.0}})
    with pytest.raises(DataError):
        write_run(tmp_path / "r.run", {"q": {"a": 1.0}}, tag="two words")
    with pytest.raises(DataError):
        write_run(tmp_path / "r.run", {"q": {"a": float("inf")}})
    assert not os.path.exists(tmp_path / "r.run")
    assert list(tmp_path.iterdir()) == []
