"""Named evaluation sets and their roles under the protocol (lorank.data.roles): DL22 and the SPLADE++ folders by
name, a folder whose first stage is splade.run, role_of, and EvalSpec's refusal of a test set among the sets every
checkpoint is scored on."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lorank.data import load_trec_dl_dir, resolve_eval_set, sources
from lorank.data.roles import DEV, OOD, TEST, role_of
from lorank.errors import ConfigError, DataError
from tests.shared_paths import SHARED, needs_data


def _folder(d: Path, runs: dict[str, str]) -> Path:
    d.mkdir(parents=True)
    (d / "queries.tsv").write_text("1\tq one\n")
    (d / "collection.tsv").write_text("a\tpassage a\nb\tpassage b\n")
    for name, first in runs.items():
        (d / name).write_text(f"1 Q0 {first} 1 2.0 x\n1 Q0 {'b' if first == 'a' else 'a'} 2 1.0 x\n")
    (d / "qrels.txt").write_text("1 0 a 2\n")
    return d


def test_a_folder_whose_first_stage_is_splade_run_loads(tmp_path):
    rs = load_trec_dl_dir(_folder(tmp_path / "trec-dl-2019-splade", {"splade.run": "b"}))
    assert [e.docid for e in rs.run["1"]] == ["b", "a"] and rs.name == "trec-dl-2019-splade"
    # bm25.run wins where there is one
    both = load_trec_dl_dir(_folder(tmp_path / "both", {"bm25.run": "a", "splade.run": "b"}))
    assert [e.docid for e in both.run["1"]] == ["a", "b"]


def test_several_runs_without_bm25_run_or_none_are_clear_errors(tmp_path):
    d = _folder(tmp_path / "two", {"splade.run": "a", "dense.run": "b"})
    with pytest.raises(DataError) as e:
        load_trec_dl_dir(d)
    assert str(d) in str(e.value) and "dense.run, splade.run" in str(e.value) and "no bm25.run" in str(e.value)
    none = _folder(tmp_path / "none", {})
    with pytest.raises(DataError, match="no first-stage run"):
        load_trec_dl_dir(none)


def test_the_named_sets_include_dl22_and_the_splade_folders(tmp_path, monkeypatch):
    for name, folder in (("dl22", "trec-dl-2022"), ("trec-dl-2022", "trec-dl-2022"),
                         ("dl19-splade", "trec-dl-2019-splade"), ("dl20-splade", "trec-dl-2020-splade"),
                         ("dl22-splade", "trec-dl-2022-splade")):
        assert sources.EVAL_SETS[name][0] == folder
    _folder(tmp_path / "trec-dl-2022-splade", {"splade.run": "b"})
    assert resolve_eval_set("dl22-splade", tmp_path).name == "trec-dl-2022-splade"
    # nowhere to be found: ir_datasets has no equal of DL22 here or of SPLADE++, and the error says so
    work = tmp_path / "w" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("LORANK_DATA", raising=False)
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "elsewhere" / "repo")
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(DataError, match="ir_datasets: not available for trec-dl-2022 "):
        resolve_eval_set("dl22")


@needs_data
def test_the_real_dl22_and_splade_sets_load():
    dl22 = resolve_eval_set("dl22")
    assert len(dl22.queries) == 76 and sum(len(v) for v in dl22.run.values()) == 7600
    sp = resolve_eval_set(str(SHARED / "trec-dl-2022-splade"))
    assert sorted(sp.qids) == sorted(dl22.qids) and sum(len(v) for v in sp.run.values()) == 7600


def test_role_of():
    assert [role_of(n) for n in ("dl19", "trec-dl-2020", "dl19-splade", "dl20+bm25@0.5", "tiny-dev")] == [DEV] * 5
    assert [role_of(n) for n in ("dl22", "trec-dl-2022", "dl22-splade", "/data/trec-dl-2022-splade",
                                 "trec-dl-2022[:10q]", "trec-dl-2022+bm25@0.3")] == [TEST] * 6
    assert role_of("scifact-test") == OOD and role_of("/x/scifact") == OOD
    assert role_of("held-out", test_sets=["/somewhere/held-out"]) == TEST and role_of("held-out") == DEV


def test_eval_spec_refuses_a_test_set_among_the_checkpoint_sets():
    from lorank.train.config import EvalSpec
    from lorank.train.config import TrainConfig

    for name in ("dl22", "trec-dl-2022-splade", "/data/trec-dl-2022"):
        with pytest.raises(ConfigError) as e:
            TrainConfig.from_dict({"data": [{"kind": "trec", "path": "dl20"}], "eval": {"sets": ["dl19", name]}})
        assert (f"eval.sets: {name} is the protocol's test set (TREC DL 2022): it is scored once, on the final model, "
                "and never on the checkpoints one chooses among; list it under eval.test_sets") in str(e.value)
    with pytest.raises(ConfigError, match="eval: trec-dl-2019 is in both sets and test_sets"):
        TrainConfig.from_dict({"data": [{"kind": "trec", "path": "dl20"}],
                               "eval": {"sets": ["trec-dl-2019"], "test_sets": ["dl19"]}})
    ok = EvalSpec(sets=["dl19", "dl20"], test_sets=["dl22", "dl22-splade"])
    assert ok.test_sets == ["dl22", "dl22-splade"]


def test_test_sets_leave_a_configs_identity_as_it_was_when_empty():
    from lorank.study.spec import config_hash
    from lorank.train.config import TrainConfig

    base = {"data": [{"kind": "trec", "path": "dl20"}], "eval": {"sets": ["dl19"]}}
    ident = TrainConfig.from_dict(base).identity()
    assert "test_sets" not in ident["eval"]
    assert config_hash(TrainConfig.from_dict({**base, "eval": {"sets": ["dl19"], "test_sets": []}}).identity()) == \
        config_hash(ident)
    with_test = TrainConfig.from_dict({**base, "eval": {"sets": ["dl19"], "test_sets": ["dl22"]}}).identity()
    assert with_test["eval"]["test_sets"] == ["dl22"] and config_hash(with_test) != config_hash(ident)
