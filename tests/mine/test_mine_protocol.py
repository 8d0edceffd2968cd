"""The evaluation protocol where training data is mined (lorank.mine.protocol): no evaluation pool as a mining
collection; every evaluation set guarded (exclude_eval + the sets evaluated on + the protocol's), its queries refused
and its passages (by id or text) dropped from positives and negatives, counted; the teacher never encodes them.

Hermetic: a data root of tiny stand-ins for the six protocol folders (trec-dl-2019 ... trec-dl-2022-splade), so the
real sets are not read and the counts are exact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lorank.errors import ConfigError
from lorank.mine import guarded_eval_sets, mine_train_set, protocol_violations
from tests.mine.test_mine import FakeTeacher, make_msmarco_dir

PROTOCOL_FOLDERS = ("trec-dl-2019", "trec-dl-2020", "trec-dl-2022", "trec-dl-2019-splade", "trec-dl-2020-splade",
                    "trec-dl-2022-splade")
EXPECTED_GUARD = ["dl19", "dl20", "dl19-splade", "dl20-splade", "dl22", "dl22-splade"]


def _eval_folder(d: Path, qid: str, query: str, passages: dict[str, str], run_name: str = "bm25.run") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "queries.tsv").write_text(f"{qid}\t{query}\n")
    (d / "collection.tsv").write_text("".join(f"{p}\t{t}\n" for p, t in passages.items()))
    (d / run_name).write_text("".join(f"{qid} Q0 {p} {i + 1} {10 - i} x\n" for i, p in enumerate(passages)))
    (d / "qrels.txt").write_text(f"{qid} 0 {next(iter(passages))} 2\n")
    return d


def make_protocol_root(root: Path, train: Path, dl20_pids=(), dl22_splade_texts_of=(), dl22_query=None) -> Path:
    """Stand-ins for the protocol's six sets. ``dl20_pids``: training passages in the DL20 pool by id;
    ``dl22_splade_texts_of``: training passages whose text (under another id) is in the DL22-SPLADE pool;
    ``dl22_query``: DL22's query text (default: one no training query has)."""
    texts = dict(line.split("\t", 1) for line in (train / "collection.tsv").read_text().splitlines())
    for i, folder in enumerate(PROTOCOL_FOLDERS):
        passages = {f"eval{i}-{j}": f"an unrelated evaluation passage {i} {j}" for j in range(3)}
        if folder == "trec-dl-2020":
            passages.update({p: texts[p] for p in dl20_pids})
        if folder == "trec-dl-2022-splade":
            passages.update({f"msmarco_passage_00_{p}": texts[p] for p in dl22_splade_texts_of})
        query = dl22_query if (dl22_query and folder == "trec-dl-2022") else f"evaluation question {i}"
        _eval_folder(root / folder, str(900 + i), query, passages,
                     "splade.run" if folder.endswith("splade") else "bm25.run")
    return root


# ------------------------------------------------------------------------------------------- collections
def test_mining_over_an_evaluation_pool_is_refused_where_mining_happens(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    with pytest.raises(ConfigError) as e:
        mine_train_set(d, collections=["self", "dl20"], exclude_eval=[], protocol_sets=False)
    assert ("mine.collections: dl20 is an evaluation set's candidate pool (dev); the protocol mines negatives from "
            "training passages only") in str(e.value)
    # any evaluation set by name or folder, with its role; a folder with a first-stage run; a folder evaluated on
    ev = _eval_folder(tmp_path / "my-eval", "500", "a question", {"x": "a passage"})
    splade22 = _eval_folder(tmp_path / "data" / "trec-dl-2022-splade", "1", "q", {"y": "p"}, "splade.run")
    with pytest.raises(ConfigError) as e:
        mine_train_set(d, collections=["self", "trec-dl-2019", str(splade22 / "collection.tsv"), str(ev), "dl22"],
                       exclude_eval=[], protocol_sets=False)
    msg = str(e.value)
    assert "mine.collections: trec-dl-2019 is an evaluation set's candidate pool (dev)" in msg
    assert f"mine.collections: {splade22 / 'collection.tsv'} is an evaluation set's candidate pool (test)" in msg
    assert f"mine.collections: {ev} is an evaluation set's candidate pool (dev)" in msg
    assert "mine.collections: dl22 is an evaluation set's candidate pool (test)" in msg
    # a collection of training passages is fine
    other = tmp_path / "more" / "collection.tsv"
    other.parent.mkdir()
    other.write_text("7000\tanother training passage\n")
    mined, _ = mine_train_set(d, collections=["self", str(other)], window="1-5", exclude_eval=[], protocol_sets=False)
    assert mined


def test_a_training_run_mining_over_dl20_is_refused_but_its_config_still_validates(tmp_path):
    from lorank.train.config import TrainData
    from lorank.train.config import TrainConfig
    from lorank.train.data_sources import build_pools

    d = make_msmarco_dir(tmp_path / "train")
    src = {"kind": "msmarco", "path": str(d), "mine": {"collections": ["self", "dl20"], "exclude_eval": ["dl19"]}}
    TrainConfig.from_dict({"data": [src], "eval": {"sets": ["dl19", "dl20"]}})  # the legacy study's shape loads
    with pytest.raises(ConfigError, match=r"mine.collections: dl20 is an evaluation set's candidate pool \(dev\); "
                                          "the protocol mines negatives from training passages only"):
        build_pools([TrainData(**src)])


def test_the_mine_cli_refuses_an_evaluation_pool(tmp_path):
    from lorank.cli import app

    d = make_msmarco_dir(tmp_path / "train")
    res = CliRunner().invoke(app, ["mine", "--train", str(d), "--out", str(tmp_path / "m.jsonl"), "--collection",
                                   "self", "--collection", "dl20", "--no-exclude-eval"])
    assert res.exit_code != 0 and not (tmp_path / "m.jsonl").exists()
    assert "--collection: dl20 is an evaluation set's candidate pool (dev)" in " ".join(res.output.split())


# ------------------------------------------------------------------------------------------- guarded sets
def test_the_guarded_sets_are_the_union_of_excluded_evaluated_and_protocol_sets(tmp_path):
    assert guarded_eval_sets(["dl19"]) == EXPECTED_GUARD
    folder = tmp_path / "tiny-dev"
    folder.mkdir()
    assert guarded_eval_sets(["trec-dl-2019"], ["dl19", str(folder), "dl22"]) == \
        ["trec-dl-2019", str(folder), "dl22", "dl20", "dl19-splade", "dl20-splade", "dl22-splade"]
    assert guarded_eval_sets(["dl19"], ["dl20"], protocol=False) == ["dl19", "dl20"]


def test_mining_guards_every_protocol_set_whatever_exclude_eval_lists(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    root = make_protocol_root(tmp_path / "data", d)
    mined, stats = mine_train_set(d, window="1-30", exclude_eval=[], data_root=root)
    assert stats.settings["guarded_eval_sets"] == EXPECTED_GUARD and stats.settings["exclude_eval"] == []
    assert stats.settings["guarded_eval_sets_not_found"] == []
    # the sets a training run evaluates on join them (a folder of one's own here)
    ev = _eval_folder(tmp_path / "tiny-dev", "500", "a question", {"z": "a passage"})
    _, stats2 = mine_train_set(d, window="1-30", exclude_eval=["dl19"], data_root=root, evaluated=[str(ev)])
    assert stats2.settings["guarded_eval_sets"] == ["dl19", str(ev), *EXPECTED_GUARD[1:]]


def test_a_training_query_that_is_a_test_query_is_refused_though_not_excluded(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    root = make_protocol_root(tmp_path / "data", d, dl22_query="  River FISH ")  # train qid 3's text
    with pytest.raises(ConfigError, match="evaluation query in the training set.*training query 3.*dl22 query 902"):
        mine_train_set(d, exclude_eval=[], data_root=root)


def test_training_passages_in_an_evaluation_pool_are_dropped_by_id_or_text_and_counted(tmp_path):
    d = make_msmarco_dir(tmp_path / "train")
    # 1002: the positive of train query 3 (its only one), in the DL20 pool by id; 1010 and 1016 (noise) in the
    # DL22-SPLADE pool by text under v2 ids; 1011 in the DL20 pool by id
    root = make_protocol_root(tmp_path / "data", d, dl20_pids=["1002", "1011"], dl22_splade_texts_of=["1010", "1016"])
    base, _ = mine_train_set(d, window="1-30", exclude_eval=[], protocol_sets=False)
    mined, stats = mine_train_set(d, window="1-30", exclude_eval=[], data_root=root)
    pool = {"1002", "1010", "1011", "1016"}
    assert stats.collection_passages_in_eval_pool == 4
    assert stats.positives_in_eval_pool == 1 and stats.queries_without_clean_positive == 1
    assert [m.qid for m in mined] == [m.qid for m in base if m.qid != "3"]
    expected = sum(1 for m in base if m.qid != "3" for p in m.negatives if p.pid in pool)
    assert expected > 0 and stats.dropped_eval_pool == expected
    assert not any(p.pid in pool for m in mined for p in m.positives + m.negatives)
    assert "1 positives in an evaluation pool (1 queries left with none)" in stats.summary()
    # ... and in the output summary beside the JSONL
    from lorank.mine import mine, summary_path

    out = tmp_path / "mined.jsonl"
    mine(d, out, window="1-30", exclude_eval=[], data_root=root)
    summary = json.loads(summary_path(out).read_text())
    assert summary["positives_in_eval_pool"] == 1 and summary["dropped_eval_pool"] == expected
    assert summary["collection_passages_in_eval_pool"] == 4 and summary["queries_without_clean_positive"] == 1


def test_a_training_source_reports_what_the_guard_dropped_mined_or_from_a_negatives_file(tmp_path):
    from lorank.train.config import TrainData
    from lorank.mine import mine
    from lorank.train.data_sources import build_pools

    d = make_msmarco_dir(tmp_path / "train")
    root = make_protocol_root(tmp_path / "data", d, dl20_pids=["1002", "1011"], dl22_splade_texts_of=["1010"])
    pools, stats = build_pools([TrainData(kind="msmarco", path=str(d), mine={"window": "1-30", "exclude_eval": []})],
                               str(root))
    rec = stats.protocol[str(d)]
    assert rec["guarded_eval_sets"] == EXPECTED_GUARD and rec["positives_in_eval_pool_dropped"] == 1
    assert rec["negatives_in_eval_pool_dropped"] > 0 and rec["queries_without_clean_positive"] == 1
    assert not any(p.pid in {"1002", "1010", "1011"} for q in pools for p in q.positives + q.negatives)
    # a negatives file mined outside the protocol (no guard): the training source drops the same passages
    unguarded = tmp_path / "unguarded.jsonl"
    mine(d, unguarded, window="1-30", exclude_eval=[], protocol_sets=False)
    pools2, stats2 = build_pools([TrainData(kind="msmarco", path=str(d), negatives=str(unguarded))], str(root))
    rec2 = stats2.protocol[str(d)]
    assert rec2["positives_in_eval_pool_dropped"] == 1 and rec2["queries_without_clean_positive"] == 1
    assert rec2["negatives_in_eval_pool_dropped"] == rec["negatives_in_eval_pool_dropped"]
    assert [q.qid for q in pools2] == [q.qid for q in pools]
    assert not any(p.pid in {"1002", "1010", "1011"} for q in pools2 for p in q.positives + q.negatives)


def test_the_teacher_never_encodes_an_evaluation_passage(tmp_path, monkeypatch):
    """The teacher miner encodes (and caches: cache=True) the whole pool, less the evaluation passages; with BM25
    the teacher scores only the kept positives and negatives. (lorank teacher, teacher_jsonl, writes no cache.)"""
    import lorank.mine

    seen: list[str] = []

    class Recording(FakeTeacher):
        def encode(self, texts, cache=False):
            seen.extend(texts)
            return super().encode(texts)

    monkeypatch.setattr(lorank.mine, "BiEncoder", lambda *_a, **_k: Recording())  # where mine looks it up
    d = make_msmarco_dir(tmp_path / "train")
    root = make_protocol_root(tmp_path / "data", d, dl20_pids=["1011"], dl22_splade_texts_of=["1010"])
    texts = dict(line.split("\t", 1) for line in (d / "collection.tsv").read_text().splitlines())
    for miner in ("teacher", "bm25"):
        seen.clear()
        mined, _ = mine_train_set(d, window="1-10", exclude_eval=[], data_root=root, teacher=True, miner=miner)
        assert seen and mined
        assert not {texts["1010"], texts["1011"]} & set(seen), miner


# ------------------------------------------------------------------------------------------- violations
def test_protocol_violations_say_what_a_legacy_config_did():
    legacy = {"data": [{"kind": "msmarco", "path": "msmarco-train-12k",
                        "mine": {"collections": ["self", "dl20"], "window": "1-30", "exclude_eval": ["dl19"]}}],
              "eval": {"sets": ["dl19", "dl20"]}}
    v = protocol_violations(legacy)
    assert v[0] == ("data[0].mine.collections: dl20 is an evaluation set's candidate pool (dev); the protocol mines "
                    "negatives from training passages only")
    assert v[1].startswith("data[0].mine.exclude_eval: dl20 evaluated on but not guarded when mining") and len(v) == 2
    # a run mined under the guard (its train_summary's guarded sets) evaluating on what it guarded: nothing
    clean = {"data": [{"kind": "msmarco", "path": "m", "mine": {"collections": ["self"]}}],
             "eval": {"sets": ["dl19", "dl20"], "test_sets": ["dl22"]}}
    assert protocol_violations(clean, guarded=EXPECTED_GUARD) == []
    assert protocol_violations({"data": [{"kind": "trec", "path": "dl22"}], "eval": {"sets": ["dl19"]}})[0] == \
        "data[0]: trains on dl22, a test set: its queries and qrels may not enter training data"
    assert protocol_violations({"data": [{"kind": "trec", "path": "dl20"}], "eval": {"sets": ["dl19"]}}) == []
