"""Every reader on the real shared files, with the known counts."""
from __future__ import annotations

import pytest

from lorank.data import (
    DataReport,
    Passage,
    iter_beir_corpus,
    iter_beir_queries,
    iter_collection,
    iter_hardneg,
    iter_qrels,
    iter_queries,
    iter_rank_llm,
    iter_run,
    iter_triples,
    load_beir,
    load_collection,
    load_qrels,
    load_queries,
    load_run,
    load_trec_dl_dir,
    resolve_eval_set,
)

DL = {
    # folder: (queries, passages, run lines, qrels lines, judged candidates, grade counts 0..3)
    "trec-dl-2019": (43, 4297, 4300, 9260, 2257, (5158, 1601, 1804, 697)),
    "trec-dl-2020": (54, 5396, 5400, 11386, 2859, (7780, 1940, 1020, 646)),
}


@pytest.mark.parametrize("folder", sorted(DL))
def test_trec_dl_files(shared_data, folder):
    n_q, n_p, n_run, n_qrels, n_judged, grades = DL[folder]
    d = shared_data / folder
    report = DataReport(str(d / "queries.tsv"))
    queries = load_queries(d / "queries.tsv", report=report)
    assert len(queries) == n_q and report.read == n_q and report.skipped == 0
    passages = load_collection(d / "collection.tsv")
    assert len(passages) == n_p
    assert all(isinstance(p, Passage) and p.text and not p.title for p in passages.values())
    run = load_run(d / "bm25.run", known_qids=queries, known_docids=passages)
    assert sum(map(len, run.values())) == n_run and set(run) == set(queries)
    for entries in run.values():
        assert len(entries) == 100
        assert [e.score for e in entries] == sorted((e.score for e in entries), reverse=True)
        assert entries[0].rank == 1
    qrels = load_qrels(d / "qrels.txt", known_qids=queries)
    assert sum(map(len, qrels.values())) == n_qrels and set(qrels) == set(queries)
    judged = sum(1 for q, es in run.items() for e in es if e.docid in qrels[q])
    assert judged == n_judged
    counts = [sum(1 for j in qrels.values() for g in j.values() if g == k) for k in range(4)]
    assert tuple(counts) == grades


@pytest.mark.parametrize("folder", sorted(DL))
def test_streaming_readers_agree_with_loaders(shared_data, folder):
    d = shared_data / folder
    assert sum(1 for _ in iter_queries(d / "queries.tsv")) == DL[folder][0]
    assert sum(1 for _ in iter_collection(d / "collection.tsv", check_duplicates=False)) == DL[folder][1]
    assert sum(1 for _ in iter_run(d / "bm25.run")) == DL[folder][2]
    assert sum(1 for _ in iter_qrels(d / "qrels.txt")) == DL[folder][3]


@pytest.mark.parametrize("folder", sorted(DL))
def test_rank_llm_matches_run(shared_data, folder):
    d = shared_data / folder
    report = DataReport(str(d / "rank_llm.json"))
    cands = list(iter_rank_llm(d / "rank_llm.json", report=report))
    assert len(cands) == DL[folder][2] == report.read and report.skipped == 0
    run = {(e.qid, e.docid): e for e in iter_run(d / "bm25.run")}
    passages = load_collection(d / "collection.tsv")
    queries = load_queries(d / "queries.tsv")
    for c in cands:
        assert (c.qid, c.docid) in run
        assert c.rank == run[c.qid, c.docid].rank
        assert c.query == queries[c.qid]
        assert c.text and c.docid in passages


def test_eval_sets_by_name(shared_data):
    dl19 = resolve_eval_set("dl19", data_root=shared_data)
    assert dl19.name == "trec-dl-2019" and len(dl19.queries) == 43
    qid = dl19.qids[0]
    top = dl19.candidates(qid, depth=10)
    assert len(top) == 10 and top[0].pid == dl19.run[qid][0].docid
    assert len(dl19.candidates(qid)) == 100
    dl20 = resolve_eval_set("trec-dl-2020", data_root=shared_data)
    assert len(dl20.queries) == 54 and not set(dl19.queries) & set(dl20.queries)
    by_path = resolve_eval_set(str(shared_data / "trec-dl-2019"))
    assert by_path.run == dl19.run and by_path.qrels == dl19.qrels
    assert load_trec_dl_dir(shared_data / "trec-dl-2020", name="x").name == "x"


def test_msmarco_train_sample(shared_data):
    d = shared_data / "msmarco-train-sample"
    triples = list(iter_triples(d / "triples.tsv"))
    assert len(triples) == 100 and all(t.query and t.positive and t.negative for t in triples)
    groups = list(iter_hardneg(d / "hardneg.jsonl"))
    assert len(groups) == 10
    for g in groups:
        assert len(g.positives) == 1 and len(g.negatives) == 25
        assert len(g.positive_scores) == 1 and len(g.negative_scores) == 25


def test_scifact_beir(shared_data):
    d = shared_data / "scifact"
    assert sum(1 for _ in iter_beir_corpus(d / "corpus.jsonl")) == 5183
    assert sum(1 for _ in iter_beir_queries(d / "queries.jsonl")) == 1109
    test = load_beir(d)
    assert (len(test.corpus), len(test.queries), sum(map(len, test.qrels.values()))) == (5183, 300, 339)
    assert set(test.queries) == set(test.qrels)
    train = load_beir(d, split="train")
    assert (len(train.queries), sum(map(len, train.qrels.values()))) == (809, 919)
    assert sum(1 for _ in iter_qrels(d / "qrels" / "test.tsv")) == 339
