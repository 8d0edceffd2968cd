"""Data-root resolution, named evaluation sets and the ir_datasets path (faked: not installed here)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lorank.data import find_shared_data, load_ir_dataset, resolve_data_root, resolve_eval_set
from lorank.data import irds, sources
from lorank.errors import DataError


def _mini_dl(root: Path, folder: str = "trec-dl-2019") -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "queries.tsv").write_text("1\tq one\n")
    (d / "collection.tsv").write_text("a\tpassage a\n")
    (d / "bm25.run").write_text("1 Q0 a 1 1.0 bm25\n")
    (d / "qrels.txt").write_text("1 0 a 2\n")
    return d


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No data anywhere: empty cwd, no $LORANK_DATA, no repo-side folder, no ir_datasets."""
    work = tmp_path / "work" / "repo"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.delenv("LORANK_DATA", raising=False)
    monkeypatch.setattr(sources, "REPO_ROOT", tmp_path / "elsewhere" / "repo")
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # import fails
    return tmp_path


def test_resolution_order(nowhere, monkeypatch):
    explicit, env = nowhere / "explicit", nowhere / "env"
    _mini_dl(explicit)
    _mini_dl(env)
    shared = nowhere / "work" / "shared" / "data"
    _mini_dl(shared)
    assert find_shared_data() == shared.resolve()
    assert resolve_data_root().resolve() == shared.resolve()
    monkeypatch.setenv("LORANK_DATA", str(env))
    assert resolve_data_root() == env
    assert resolve_data_root(explicit) == explicit
    assert resolve_eval_set("dl19", data_root=explicit).name == "trec-dl-2019"
    # an explicit root without the set falls through to the next place
    (nowhere / "empty").mkdir()
    assert resolve_eval_set("DL19", data_root=nowhere / "empty").queries == {"1": "q one"}


def test_repo_side_shared_data(nowhere, monkeypatch):
    repo = nowhere / "elsewhere" / "repo"
    _mini_dl(repo.parent / "shared" / "data", "trec-dl-2020")
    assert find_shared_data() == (repo.parent / "shared" / "data").resolve()
    assert resolve_eval_set("dl20").qrels == {"1": {"a": 2}}


def test_nothing_found_lists_every_place(nowhere):
    assert find_shared_data() is None
    with pytest.raises(DataError) as info:
        resolve_data_root()
    assert "data_root argument" in info.value.problem and "$LORANK_DATA" in info.value.problem
    with pytest.raises(DataError) as info:
        resolve_eval_set("trec-dl-2020", data_root=nowhere / "missing")
    problem = info.value.problem
    for place in ("data_root argument", "$LORANK_DATA", "working directory", "beside the repository",
                  "msmarco-passage/trec-dl-2020/judged", "pip install ir_datasets"):
        assert place in problem, problem


def test_unknown_name_and_directory_path(nowhere):
    with pytest.raises(DataError, match="not a named set: the names are dl19"):
        resolve_eval_set("dl42")
    with pytest.raises(DataError, match="no such folder") as info:   # a path, not a misspelt name
        resolve_eval_set(str(nowhere / "data" / "my-train"))
    assert "my-train" in str(info.value)
    (nowhere / "f.tsv").write_text("1\tq\n")
    with pytest.raises(DataError, match="is a file: a reranking set is a folder"):
        resolve_eval_set(str(nowhere / "f.tsv"))
    d = _mini_dl(nowhere / "x", "anything")
    assert resolve_eval_set(str(d)).name == "anything"


def test_real_shared_data_found(shared_data):
    assert find_shared_data() == shared_data
    assert (shared_data / "trec-dl-2019" / "queries.tsv").is_file()


# ---------------------------------------------------------------------------------- ir_datasets
def test_ir_datasets_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "ir_datasets", None)
    with pytest.raises(DataError) as info:
        load_ir_dataset("msmarco-passage/trec-dl-2019/judged")
    assert "pip install ir_datasets" in info.value.problem
    assert info.value.path == "ir_datasets:msmarco-passage/trec-dl-2019/judged"


def _fake_ir_datasets(tmp_path: Path, load) -> SimpleNamespace:
    return SimpleNamespace(load=load, util=SimpleNamespace(home_path=lambda: tmp_path / "irds-home"))


def test_ir_datasets_offline_fails_fast(tmp_path, monkeypatch):
    def load(_):
        raise AssertionError("must not try to download when offline")

    monkeypatch.setitem(sys.modules, "ir_datasets", _fake_ir_datasets(tmp_path, load))
    monkeypatch.setattr(irds, "_online", lambda *a, **k: False)
    with pytest.raises(DataError, match="offline"):
        load_ir_dataset("msmarco-passage/trec-dl-2019/judged")


def test_ir_datasets_download_failure(tmp_path, monkeypatch):
    def load(_):
        raise OSError("connection reset")

    monkeypatch.setitem(sys.modules, "ir_datasets", _fake_ir_datasets(tmp_path, load))
    monkeypatch.setattr(irds, "_online", lambda *a, **k: True)
    with pytest.raises(DataError) as info:
        load_ir_dataset("msmarco-passage/trec-dl-2019/judged")
    assert "download failed" in info.value.problem and "connection reset" in info.value.problem
    monkeypatch.setitem(sys.modules, "ir_datasets", _fake_ir_datasets(tmp_path, lambda _: {}["x"]))
    with pytest.raises(DataError, match="unknown ir_datasets id"):
        load_ir_dataset("no/such/id")


def test_probe_gives_up_quickly():
    start = time.monotonic()
    assert irds._online(("127.0.0.1", 9), timeout=1.0) is False  # nothing listens on the discard port
    assert time.monotonic() - start < 3


class _FakeDataset:
    Q = SimpleNamespace
    def has_queries(self): return True
    def has_scoreddocs(self): return True
    def has_docs(self): return True
    def has_qrels(self): return True
    def queries_iter(self): return iter([self.Q(query_id="1", text="q one"), self.Q(query_id="2", text="q two")])
    def scoreddocs_iter(self):
        return iter([self.Q(query_id="1", doc_id="a", score=1.0), self.Q(query_id="1", doc_id="b", score=3.0),
                     self.Q(query_id="9", doc_id="c", score=1.0)])
    def qrels_iter(self): return iter([self.Q(query_id="1", doc_id="a", relevance=2, iteration="0")])
    def docs_store(self):
        docs = {d: self.Q(doc_id=d, text=f"text {d}") for d in "abc"}
        return SimpleNamespace(get_many=lambda ids: {i: docs[i] for i in ids if i in docs})


def test_ir_datasets_conversion(tmp_path, monkeypatch):
    (tmp_path / "irds-home" / "msmarco-passage").mkdir(parents=True)  # cached: no probe needed
    monkeypatch.setattr(irds, "_online", lambda *a, **k: pytest.fail("cached data must not need the network"))
    monkeypatch.setitem(sys.modules, "ir_datasets", _fake_ir_datasets(tmp_path, lambda _: _FakeDataset()))
    s = load_ir_dataset("msmarco-passage/trec-dl-2019/judged", name="dl19")
    assert s.name == "dl19" and s.queries == {"1": "q one"}
    assert [(e.docid, e.rank) for e in s.run["1"]] == [("b", 1), ("a", 2)]
    assert [p.text for p in s.candidates("1")] == ["text b", "text a"]
    assert s.qrels == {"1": {"a": 2}}
