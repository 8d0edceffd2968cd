"""lorank's reranker as a PyTerrier transformer (lorank.integrations.pyterrier).

The real test runs ``pt.Experiment`` on a DL19 slice (the first 8 judged queries, BM25 top 20, read with
PyTerrier's own ``pt.io``) with the shipped reference adapter, and checks that it reproduces what lorank's own
API (``Reranker.rerank`` + ``lorank.evaluation.evaluate``, i.e. ``lorank rerank --depth 20``) gives on the same
candidates: every score, and nDCG@10 per query and on average, to 1e-6. It runs with sockets refused (no network)
and checks that no JVM was started: PyTerrier's pure-Python core is all it needs, so there is no Java skip.
The cheap tests check the frame conventions, the errors, and that lorank works without PyTerrier; they skip with
the install command when PyTerrier is absent (the missing-PyTerrier error is checked either way)."""
from __future__ import annotations

import ast
import importlib
import socket
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.shared_paths import SHARED, needs_data

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "adapters" / "smollm2-135m-msmarco12k-r8"
INSTALL = "pip install 'lorank[pyterrier]'"
N_QUERIES, DEPTH = 8, 20


def _pt():
    return pytest.importorskip("pyterrier", reason=f"PyTerrier is not installed: {INSTALL}")


# ------------------------------------------------------------------------------------------ without PyTerrier
def test_lorank_never_imports_pyterrier_itself():
    """Only the integration module imports pyterrier, and no lorank module imports the integration."""
    src = ROOT / "src" / "lorank"
    importers, users = [], []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            rel = str(path.relative_to(src))
            importers += [rel for n in names if n.split(".")[0] == "pyterrier"]
            users += [rel for n in names if n.startswith("lorank.integrations.pyterrier")]
    assert set(importers) == {"integrations/pyterrier.py"}
    assert users == []


def test_missing_pyterrier_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyterrier", None)  # as if not installed: the import fails
    monkeypatch.delitem(sys.modules, "lorank.integrations.pyterrier", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'lorank\[pyterrier\]'") as info:
        importlib.import_module("lorank.integrations.pyterrier")
    assert info.value.name == "pyterrier"


# ------------------------------------------------------------------------------------------ frame conventions
class _LengthScorer:
    """Stands in for lorank's Scorer: a passage's score is its length, + 100 with a title."""

    def __init__(self):
        self.calls: list[list[tuple[str, str, str]]] = []

    def score_pairs(self, pairs, progress=None):
        self.calls.append(list(pairs))
        return np.array([len(t) + (100.0 if ti else 0.0) for _, t, ti in pairs])


def _fake(**kw):
    from lorank.integrations.pyterrier import LorankReranker

    return LorankReranker(SimpleNamespace(scorer=_LengthScorer(), meta={}), **kw)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"qid": ["q2", "q1", "q2", "q1", "q2"], "query": ["b", "a", "b", "a", "b"],
                         "docno": ["d1", "d2", "d3", "d4", "d5"], "text": ["x", "xxx", "xxxx", "x", "xx"],
                         "score": [9.0, 8, 7, 6, 5], "rank": [0, 0, 1, 1, 2], "bm25": [1, 2, 3, 4, 5]})


def test_scores_replace_the_first_stage_and_ranks_follow_pyterriers_conventions():
    pt = _pt()
    rr, inp = _fake(), _frame()
    before = inp.copy()
    out = rr.transform(inp)
    pd.testing.assert_frame_equal(inp, before)  # the input frame is left as it was
    assert rr.reranker.scorer.calls == [[("b", "x", ""), ("a", "xxx", ""), ("b", "xxxx", ""), ("a", "x", ""),
                                         ("b", "xx", "")]]  # one call: all rows in lorank's batches
    assert out[["qid", "docno", "rank"]].values.tolist() == [
        ["q1", "d2", 0], ["q1", "d4", 1], ["q2", "d3", 0], ["q2", "d5", 1], ["q2", "d1", 2]]
    assert out.set_index("docno")["score"].to_dict() == {"d1": 1.0, "d2": 3.0, "d3": 4.0, "d4": 1.0, "d5": 2.0}
    assert out.set_index("docno")["bm25"].to_dict() == {"d1": 1, "d2": 2, "d3": 3, "d4": 4, "d5": 5}
    expected = pt.model.add_ranks(out.drop(columns="rank"))  # the ranks are PyTerrier's own
    assert out["rank"].tolist() == expected["rank"].tolist()
    titled = _fake().transform(inp.assign(title=["", "T", None, "", ""]))
    assert titled.set_index("docno")["score"].to_dict()["d2"] == 103.0  # (query, text, title): the title counts
    empty = rr.transform(inp.iloc[:0])
    assert {"score", "rank"} <= set(empty.columns) and len(empty) == 0


def test_a_frame_without_text_says_to_add_get_text():
    pt = _pt()
    inp = _frame().drop(columns="text")
    with pytest.raises(pt.validate.InputValidationError, match=r"no 'text' column.*pt\.text\.get_text"):
        _fake().transform(inp)
    with pytest.raises(pt.validate.InputValidationError, match=r"pt\.text\.get_text"):
        (pt.Transformer.from_df(inp) >> _fake()).transform(pd.DataFrame({"qid": ["q1"], "query": ["a"]}))
    with pytest.raises(pt.validate.InputValidationError, match=r"lacks 'query'"):
        _fake().transform(_frame().drop(columns="query"))
    with pytest.raises(ValueError, match=r"1 of 5 rows have no 'text' \(e\.g\. docno d3 \(qid q2\)\)"):
        _fake().transform(_frame().assign(text=["x", "y", None, "z", "w"]))
    with pytest.raises(TypeError, match="only for an adapter folder"):
        _fake(device="cpu")


def test_passage_store_feeds_get_text():
    pt = _pt()
    from lorank.data.records import Passage
    from lorank.integrations.pyterrier import PassageStore

    store = PassageStore({"d1": Passage("d1", "one", "T1"), "d2": Passage("d2", "two")})
    res = pd.DataFrame({"qid": ["q"], "query": ["a"], "docno": ["d2"], "score": [1.0], "rank": [0]})
    assert pt.text.get_text(store, "text").transform(res)["text"].tolist() == ["two"]
    both = pt.text.get_text(store).transform(res.assign(docno=["d1"]))
    assert both[["text", "title"]].values.tolist() == [["one", "T1"]]
    with pytest.raises(KeyError, match="1 docnos not among its 2 passages, e.g. d9"):
        pt.text.get_text(store, "text").transform(res.assign(docno=["d9"]))
    assert [d["docno"] for d in store] == ["d1", "d2"]


# ------------------------------------------------------------------------------------------ the real thing
@pytest.fixture
def no_network(monkeypatch):
    """Every socket connection is refused: PyTerrier must not reach for the network (terrier jars, a hub)."""
    def refuse(*a, **k):
        raise OSError("network refused by the test (lorank's PyTerrier integration must work offline)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@needs_data
@pytest.mark.slow
def test_pt_experiment_on_dl19_reproduces_lorank_rerank(no_network, tmp_path):
    pt = _pt()
    from lorank.data import resolve_eval_set
    from lorank.integrations.pyterrier import LorankReranker, PassageStore
    from lorank.evaluation import evaluate

    dl19 = SHARED / "trec-dl-2019"
    rs = resolve_eval_set("dl19").subset(N_QUERIES)  # the first 8 judged queries (by qid)
    topics = pd.DataFrame({"qid": list(rs.queries), "query": list(rs.queries.values())})
    qrels = pt.io.read_qrels(str(dl19 / "qrels.txt"))
    qrels = qrels[qrels["qid"].isin(topics["qid"])]
    bm25 = pt.Transformer.from_df(pt.model.add_ranks(pt.io.read_results(str(dl19 / "bm25.run")))) % DEPTH
    candidates = bm25.transform(topics)
    assert {q: g["docno"].tolist() for q, g in candidates.groupby("qid")} == {
        q: [e.docid for e in rs.run[q][:DEPTH]] for q in rs.qids}  # the same candidates on both sides
    reranker = LorankReranker(ADAPTER)  # loaded as lorank rerank loads it (LoRA merged for scoring)
    pipeline = bm25 >> pt.text.get_text(PassageStore(rs.passages), "text") >> reranker
    ndcg = pt.measures.nDCG @ 10
    table = pt.Experiment([bm25, pipeline], topics, qrels, [ndcg], names=["bm25", "lorank"], save_dir=str(tmp_path),
                          perquery=True, verbose=False)
    got = {(r.name, r.qid): r.value for r in table.itertuples()}
    ours = reranker.reranker.rerank(rs.queries, rs.passages, rs.run, depth=DEPTH)  # = lorank rerank --depth 20
    mine = {"lorank": evaluate(rs.qrels, ours, per_query=True), "bm25": evaluate(rs.qrels, rs.run, per_query=True)}
    saved = pt.io.read_results(str(tmp_path / "lorank.res.gz"))
    for row in saved.itertuples():
        assert row.score == pytest.approx(ours[row.qid][row.docno], abs=1e-6)
    for name, res in mine.items():
        for qid in rs.qids:
            assert got[(name, qid)] == pytest.approx(res.per_query["ndcg_cut_10"][qid], abs=1e-6), (name, qid)
        mean = np.mean([got[(name, q)] for q in rs.qids])
        assert mean == pytest.approx(res.aggregate["ndcg_cut_10"], abs=1e-6), name
        print(f"{name}: nDCG@10 pt.Experiment {mean:.6f}, lorank {res.aggregate['ndcg_cut_10']:.6f}")
    assert mine["lorank"].aggregate["ndcg_cut_10"] > mine["bm25"].aggregate["ndcg_cut_10"]
    assert not pt.java.started(), "the integration must not start a JVM"
