import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorank.cli import app
from lorank.data.records import Passage
from lorank.errors import ConfigError
from lorank.retrieve import bm25_retrieve, pystemmer_available


from tests.shared_paths import SHARED  # noqa: E402


SCIFACT = SHARED / "scifact"
needs_scifact = pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"SciFact not found at {SCIFACT} (../shared/data)")

CORPUS = {
    "d1": Passage("d1", "Cats purr when they are content and sometimes when stressed.", "Cat behaviour"),
    "d2": Passage("d2", "Dogs bark at strangers and wag their tails.", "Dog behaviour"),
    "d3": Passage("d3", "The stock market fell sharply on Monday.", "Markets"),
    "d4": Passage("d4", "Running shoes wear out after several hundred kilometres.", ""),
    "d5": Passage("d5", "Felines such as cats are obligate carnivores.", "Diet"),
}


def test_bm25_ranks_the_obvious_document_first():
    run = bm25_retrieve(CORPUS, {"q1": "why do cats purr", "q2": "stock market", "q3": "the and of"}, k=3)
    assert run["q1"][0].docid == "d1"
    assert [e.rank for e in run["q1"]] == list(range(1, len(run["q1"]) + 1))
    assert {e.docid for e in run["q1"]} == {"d1", "d5"}  # documents without a query term are not returned
    assert run["q2"][0].docid == "d3" and len(run["q2"]) == 1
    assert run["q3"] == []  # only stopwords: no results, no crash
    scores = [e.score for e in run["q1"]]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)


def test_k_limits_results():
    run = bm25_retrieve(CORPUS, {"q": "cats dogs market shoes behaviour"}, k=2)
    assert len(run["q"]) == 2


def test_title_is_indexed():
    run = bm25_retrieve(CORPUS, {"q": "diet"}, k=5)
    assert [e.docid for e in run["q"]] == ["d5"]
    assert bm25_retrieve(CORPUS, {"q": "diet"}, k=5, include_title=False)["q"] == []


@pytest.mark.skipif(not pystemmer_available(), reason="PyStemmer not installed")
def test_stemming_matches_word_forms():
    run = bm25_retrieve(CORPUS, {"q": "runs"}, k=5)
    assert [e.docid for e in run["q"]] == ["d4"]
    assert bm25_retrieve(CORPUS, {"q": "runs"}, k=5, stemmer=None)["q"] == []


def test_ties_are_deterministic():
    corpus = {d: Passage(d, "same words here") for d in ("b", "c", "a")}
    run = bm25_retrieve(corpus, {"q": "words"}, k=2)
    assert [e.docid for e in run["q"]] == ["c", "b"]  # trec_eval order: ties by docid descending


def test_bad_parameters():
    with pytest.raises(ConfigError) as e:
        bm25_retrieve(CORPUS, {"q": "x"}, k=0, b=2.0, method="nope")
    assert len(e.value.problems) == 3
    with pytest.raises(ConfigError):
        bm25_retrieve({}, {"q": "x"})


def _tiny_beir(root: Path) -> Path:
    root.mkdir()
    (root / "qrels").mkdir()
    with open(root / "corpus.jsonl", "w") as fh:
        for p in CORPUS.values():
            fh.write(json.dumps({"_id": p.pid, "title": p.title, "text": p.text}) + "\n")
    with open(root / "queries.jsonl", "w") as fh:
        fh.write(json.dumps({"_id": "q1", "text": "why do cats purr"}) + "\n")
        fh.write(json.dumps({"_id": "q2", "text": "stock market crash"}) + "\n")
        fh.write(json.dumps({"_id": "q9", "text": "a query of another split"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return root


def test_cli_retrieve_writes_a_run(tmp_path):
    from lorank.data import load_run

    beir = _tiny_beir(tmp_path / "beir")
    out = tmp_path / "out" / "bm25.run"
    res = CliRunner().invoke(app, ["retrieve", "--beir", str(beir), "--k", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    run = load_run(out)
    assert set(run) == {"q1", "q2"}
    assert run["q1"][0].docid == "d1" and run["q2"][0].docid == "d3"


@needs_scifact
def test_scifact_bm25_close_to_published():
    from lorank.data import load_beir
    from lorank.retrieve import retrieve_beir
    from lorank.evaluation import evaluate

    t0 = time.perf_counter()
    run = retrieve_beir(SCIFACT, split="test", k=100)
    elapsed = time.perf_counter() - t0
    qrels = load_beir(SCIFACT, split="test").qrels
    res = evaluate(qrels, run, rel_threshold=1)
    # published BM25 on SciFact: 0.665 (BEIR paper, multifield), 0.679 (Pyserini flat)
    assert len(run) == 300
    assert res.aggregate["ndcg_cut_10"] >= 0.635, res.aggregate
    assert res.aggregate["recall_100"] >= 0.85, res.aggregate
    assert elapsed < 60
