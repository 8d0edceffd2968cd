"""lorank mine and the kind: msmarco training source, on tiny MS MARCO-layout folders (+ the real 12k set)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lorank.errors import ConfigError, DataError
from lorank.mine import RankWindow, mine, mine_train_set, summary_path
from tests.shared_paths import SHARED, needs_data

TOPIC = ["flea cycle", "concrete floor", "river fish", "bread oven", "guitar song", "engine wheel"]


def make_msmarco_dir(root: Path, n_noise: int = 40) -> Path:
    """6 queries, each with 1 positive; noise passages that share the query's words to varying degrees."""
    root.mkdir(parents=True, exist_ok=True)
    q, qrels, coll = [], [], []
    pid = 1000
    for i, t in enumerate(TOPIC):
        q.append(f"{i + 1}\t{t}")
        coll.append(f"{pid}\t{t} {t} {t} the answer")
        qrels.append(f"{i + 1} 0 {pid} 1")
        pid += 1
    for j in range(n_noise):
        t = TOPIC[j % len(TOPIC)]
        coll.append(f"{pid}\t{' '.join([t] * (1 + j % 3))} filler words number {j}")
        pid += 1
    q.append("99\ta query without any judged positive")
    (root / "queries.tsv").write_text("\n".join(q) + "\n")
    (root / "qrels.txt").write_text("\n".join(qrels) + "\n")
    (root / "collection.tsv").write_text("\n".join(coll) + "\n")
    return root


def make_eval_dir(root: Path, train: Path, shared_pids: list[str], query: str = "unrelated question") -> Path:
    """A TREC-DL-style evaluation set whose pool holds some of the training collection's passages."""
    root.mkdir(parents=True, exist_ok=True)
    texts = dict(line.split("\t", 1) for line in (train / "collection.tsv").read_text().splitlines())
    (root / "queries.tsv").write_text(f"500\t{query}\n")
    (root / "collection.tsv").write_text("".join(f"{p}\t{texts[p]}\n" for p in shared_pids))
    (root / "bm25.run").write_text("".join(f"500 Q0 {p} {i + 1} {10 - i} bm25\n" for i, p in enumerate(shared_pids)))
    (root / "qrels.txt").write_text(f"500 0 {shared_pids[0]} 2\n")
    return root


class FakeTeacher:
    """A deterministic 'bi-encoder' in 2-D: queries point at (1, 0); positives ('the answer') score 0.6 of that;
    noise passages with an odd number score 1.0 (above the positive: likely false negatives), even ones 0."""

    def encode(self, texts):
        out = np.zeros((len(texts), 2), dtype=np.float32)
        for i, t in enumerate(texts):
            if "answer" in t:
                out[i] = (0.6, 0.8)
            elif "number" in t:
                out[i] = (1.0, 0.0) if int(t.split("number")[1].split()[0]) % 2 else (0.0, 1.0)
            else:
                out[i] = (1.0, 0.0)
        return out


def test_rank_window_parses_and_rejects():
    w = RankWindow.parse("10-100")
    assert (w.first, w.last) == (10, 100) and 10 in w and 100 in w and 9 not in w and 101 not in w
    assert RankWindow.parse([3, 5]) == RankWindow(3, 5)
    for bad in ("100-10", "0-5", "ten-20", "5", [1, 2, 3]):
        with pytest.raises(ConfigError):
            RankWindow.parse(bad)


def test_mined_negatives_lie_in_the_window_and_exclude_positives(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    mined, stats = mine_train_set(d, window="2-8", exclude_eval=[])
    assert stats.queries_without_positive == 1  # qid 99 has no qrels: counted, not silently dropped
    assert stats.train_queries == 6 and stats.queries_written == 6
    from lorank.retrieve.bm25 import bm25_retrieve
    from lorank.data import load_collection

    corpus = load_collection(d / "collection.tsv")
    for m in mined:
        run = {e.docid: e.rank for e in bm25_retrieve(corpus, {m.qid: m.query}, k=8)[m.qid]}
        pos = {p.pid for p in m.positives}
        assert all(2 <= r <= 8 for r in m.negative_ranks)
        assert [run[p.pid] for p in m.negatives] == m.negative_ranks  # the ranks are BM25's
        assert not pos & {p.pid for p in m.negatives}
        expected = [p for p, r in sorted(run.items(), key=lambda x: x[1]) if 2 <= r <= 8 and p not in pos]
        assert [p.pid for p in m.negatives] == expected  # nothing in the window is lost


def test_evaluation_pool_passages_are_dropped_and_counted(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    pool = [str(p) for p in range(1006, 1016)]  # ten noise passages
    ev = make_eval_dir(tmp_path / "dl-eval", d, pool)
    # the synthetic set alone (protocol_sets=False: the real DL pools, guarded by default, are no part of this)
    base, _ = mine_train_set(d, window="1-30", exclude_eval=[], protocol_sets=False)
    mined, stats = mine_train_set(d, window="1-30", exclude_eval=[str(ev)], protocol_sets=False)
    dropped = sum(1 for m in base for p in m.negatives if p.pid in pool)
    assert dropped > 0 and stats.dropped_eval_pool == dropped
    assert all(p.pid not in pool for m in mined for p in m.negatives)
    assert stats.settings["eval_pool_passages"] == len(pool)


def test_a_training_query_that_is_an_evaluation_query_is_refused(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    ev = make_eval_dir(tmp_path / "dl-eval", d, ["1010"], query="  River FISH ")  # same text as train qid 3
    with pytest.raises(ConfigError, match="evaluation query in the training set.*training query 3"):
        mine_train_set(d, exclude_eval=[str(ev)])


def test_teacher_scores_are_written_and_the_filter_drops_negatives_above_the_positive(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    mined, _ = mine_train_set(d, window="1-30", exclude_eval=[])
    from lorank.mine.negatives import mine_queries, MineStats
    from lorank.data.msmarco import load_msmarco_train

    ts = load_msmarco_train(d)
    st = MineStats()
    scored = mine_queries(ts.queries, ts.positives, ts.passages, RankWindow(1, 30), teacher=FakeTeacher(), stats=st)
    t = FakeTeacher()
    for m in scored:
        q = t.encode([m.query])[0]
        want = [20 * float(t.encode([p.text])[0] @ q) for p in m.positives]
        assert np.allclose(m.positive_scores, want, atol=2e-5)
        assert len(m.negative_scores) == len(m.negatives)
    st2 = MineStats()
    kept = mine_queries(ts.queries, ts.positives, ts.passages, RankWindow(1, 30), teacher=FakeTeacher(),
                        teacher_filter=True, stats=st2)
    above = sum(1 for m in scored for s in m.negative_scores if s > max(m.positive_scores))
    assert above > 0 and st2.dropped_teacher_above_positive == above
    assert all(s <= max(m.positive_scores) for m in kept for s in m.negative_scores)


def test_mine_writes_hardneg_jsonl_that_kind_hardneg_and_kind_msmarco_read(tmp_path):
    from lorank.train.config import TrainData
    from lorank.data import iter_hardneg
    from lorank.train.data_sources import build_pools

    d = make_msmarco_dir(tmp_path / "train")
    out = tmp_path / "mined.jsonl"
    res = mine(d, out, window="1-20", exclude_eval=[])
    assert summary_path(out).is_file()
    summary = json.loads(summary_path(out).read_text())
    assert summary["queries_written"] == 6 and summary["settings"]["window"] == "1-20"
    exs = list(iter_hardneg(out))
    assert [e.qid for e in exs] == [m.qid for m in res.mined]
    assert [p.pid for p in exs[0].negatives] == [p.pid for p in res.mined[0].negatives]
    pools, stats = build_pools([TrainData(kind="hardneg", path=str(out))])
    assert len(pools) == 6
    pools2, stats2 = build_pools([TrainData(kind="msmarco", path=str(d), negatives=str(out))])
    assert [p.qid for p in pools2] == [p.qid for p in pools] and stats2.skipped_no_positive == 1
    assert [n.pid for n in pools2[0].negatives] == [n.pid for n in res.mined[0].negatives]
    pools3, stats3 = build_pools([TrainData(kind="msmarco", path=str(d), mine={"window": "1-20", "exclude_eval": []})])
    assert [[n.pid for n in p.negatives] for p in pools3] == [[n.pid for n in p.negatives] for p in pools2]
    assert any("mined on the fly" in n for n in stats3.notes)


def test_msmarco_source_config_is_validated():
    from lorank.train.config import TrainData

    with pytest.raises(ValueError, match="exactly one of negatives"):
        TrainData(kind="msmarco", path="x")
    with pytest.raises(ValueError, match="exactly one of negatives"):
        TrainData(kind="msmarco", path="x", negatives="n.jsonl", mine={})
    with pytest.raises(ValueError, match="for kind 'msmarco'"):
        TrainData(kind="trec", path="dl20", negatives="n.jsonl")
    with pytest.raises(ValueError, match="rank window"):
        TrainData(kind="msmarco", path="x", mine={"window": "100-10"})
    assert TrainData(kind="msmarco", path="x", mine={}).threshold() == 1
    assert TrainData(kind="trec", path="dl20").threshold() == 2


@pytest.mark.parametrize("file,content,problem", [
    ("qrels.txt", "1 0 1000 1\n2 0 1001\n", "qrels.txt:2"),
    ("queries.tsv", "1\tflea cycle\n2\n", "queries.tsv:2"),
    ("collection.tsv", "1000\tok passage\n1000\tanother text\n", "collection.tsv:2"),
])
def test_bad_training_files_name_file_and_line(tmp_path, file, content, problem):
    d = make_msmarco_dir(tmp_path / "train")
    (d / file).write_text(content)
    with pytest.raises(DataError) as e:
        mine_train_set(d, exclude_eval=[])
    assert problem in str(e.value)


def test_missing_files_and_conflicting_collections_are_clear_errors(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    (d / "qrels.txt").unlink()
    with pytest.raises(DataError, match="no qrels.txt"):
        mine_train_set(d, exclude_eval=[])
    d2 = make_msmarco_dir(tmp_path / "train2")
    other = tmp_path / "other.tsv"
    other.write_text("1000\ta different text for the same id\n")
    with pytest.raises(DataError, match="passage id 1000 has different texts"):
        mine_train_set(d2, collections=["self", str(other)], exclude_eval=[])
    with pytest.raises(DataError, match="unknown collection"):
        mine_train_set(d2, collections=["self", "no-such-thing"], exclude_eval=[])
    with pytest.raises(DataError, match="MS MARCO training folder not found"):
        mine_train_set(tmp_path / "nowhere", exclude_eval=[])


def test_mine_cli(tmp_path):
    from lorank.cli import app

    d = make_msmarco_dir(tmp_path / "train")
    out = tmp_path / "m.jsonl"
    res = CliRunner().invoke(app, ["mine", "--train", str(d), "--out", str(out), "--window", "1-10",
                                   "--no-exclude-eval", "--max-negatives", "3"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 6 and all(len(x["neg"]) <= 3 for x in lines)
    assert "6/6 queries written" in " ".join(res.output.split())
    bad = CliRunner().invoke(app, ["mine", "--train", str(d), "--out", str(out), "--window", "9-1", "--no-exclude-eval"])
    assert bad.exit_code != 0 and "rank window" in bad.output


@needs_data
def test_real_msmarco_12k_mining_guards_every_evaluation_set():
    # the committed study mined over [self, dl20]: an evaluation pool, now refused (test_mine_protocol.py)
    mined, stats = mine_train_set(SHARED / "msmarco-train-12k", collections=["self"], window="10-100",
                                  exclude_eval=["dl19"], max_queries=300)
    assert stats.train_queries == 300 and stats.queries_written >= 295
    assert set(stats.settings["guarded_eval_sets"]) == {"dl19", "dl20", "dl19-splade", "dl20-splade", "dl22",
                                                        "dl22-splade"}
    from lorank.data import resolve_eval_set

    pools = set().union(*(resolve_eval_set(n).passages for n in ("dl19", "dl20", "dl22", "dl19-splade")))
    assert stats.collection_passages_in_eval_pool > 0  # 37 training positives lie in a DL pool
    assert not any(p.pid in pools for m in mined for p in m.negatives + m.positives)
    assert all(10 <= r <= 100 for m in mined for r in m.negative_ranks)


def test_the_teacher_miner_ranks_the_whole_pool_by_the_teachers_inner_product(tmp_path):
    from lorank.data.msmarco import load_msmarco_train
    from lorank.mine.negatives import MineStats, mine_queries

    ts = load_msmarco_train(make_msmarco_dir(tmp_path / "train"))
    st = MineStats()
    mined = mine_queries(ts.queries, ts.positives, ts.passages, RankWindow(1, 5), teacher=FakeTeacher(),
                         miner="teacher", stats=st)
    # every query points at (1, 0): the odd-numbered noise passages score 1.0 (ties: docid descending), the
    # positives 0.6, the rest 0; so ranks 1-5 are the five highest-id odd passages, the same for every query
    odd = sorted((p for p, x in ts.passages.items() if "number" in x.text and int(x.text.split("number")[1]) % 2),
                 reverse=True)
    assert len(mined) == 6 and st.seconds["dense"] >= 0
    for m in mined:
        assert [p.pid for p in m.negatives] == odd[:5] and m.negative_ranks == [1, 2, 3, 4, 5]
        assert m.negative_scores == [20.0] * 5 and m.positive_scores == [pytest.approx(12.0)]
    kept = mine_queries(ts.queries, ts.positives, ts.passages, RankWindow(1, 5), teacher=FakeTeacher(),
                        miner="teacher", teacher_filter=True, stats=MineStats())
    assert kept == []  # every one of them scores above the positive: all dropped, the queries counted
    with pytest.raises(ConfigError, match="miner 'teacher'.*add --teacher"):
        mine_queries(ts.queries, ts.positives, ts.passages, RankWindow(1, 5), miner="teacher")
    with pytest.raises(ConfigError, match="unknown miner 'splade'"):
        mine_queries(ts.queries, ts.positives, ts.passages, RankWindow(1, 5), miner="splade")


def test_dense_retrieve_ranks_by_score_then_docid_descending_and_checks_shapes():
    from lorank.retrieve.dense import dense_retrieve

    docs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    run = dense_retrieve(["a", "b", "c", "d"], docs, ["q"], np.array([[1.0, 0.0]], dtype=np.float32), k=3)
    assert [(e.docid, e.rank) for e in run["q"]] == [("c", 1), ("a", 2), ("d", 3)]
    assert [e.docid for e in dense_retrieve(["a", "b", "c", "d"], docs, ["q"], docs[:1], k=10)["q"]] == \
        ["c", "a", "d", "b"]
    with pytest.raises(ConfigError, match="differ in width"):
        dense_retrieve(["a"], docs[:1], ["q"], np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ConfigError, match="n_docs=2"):
        dense_retrieve(["a", "b"], docs, ["q"], docs[:1])


def test_a_mine_spec_with_the_teacher_miner_or_filter_needs_the_teacher():
    from pydantic import ValidationError

    from lorank.train.config import MineSpec

    assert MineSpec(miner="teacher", teacher=True).miner == "teacher"
    with pytest.raises(ValidationError, match="miner: teacher ranks the pool"):
        MineSpec(miner="teacher")
    with pytest.raises(ValidationError, match="teacher_filter needs teacher scores"):
        MineSpec(teacher_filter=True)


def test_the_default_miner_leaves_a_runs_identity_as_it_was_and_the_teacher_miner_changes_it():
    from lorank.train.config import TrainConfig

    src = {"kind": "msmarco", "path": "msmarco-train-12k", "mine": {"window": "1-30", "teacher": True}}
    ident = TrainConfig.from_dict({"data": [src]}).identity()
    assert "miner" not in ident["data"][0]["mine"]  # run ids and resume identities made before the choice hold
    dense = TrainConfig.from_dict({"data": [{**src, "mine": {**src["mine"], "miner": "teacher"}}]}).identity()
    assert dense["data"][0]["mine"]["miner"] == "teacher" and dense != ident
