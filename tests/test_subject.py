"""The dissected subject (lorank.subject): candidates read once at the edge, the model loaded only when a verb asks
for it, and the CLI's one helper (lorank.cli.common.cli_subject) with each verb's own error messages."""
from __future__ import annotations

import pytest

from lorank.cli.common import cli_subject
from lorank.errors import ConfigError, DataError
from lorank.subject import Subject, resolve_subject
from tests.tinydata import make_trec_dir


@pytest.fixture
def data(tmp_path):
    return make_trec_dir(tmp_path / "set", n_queries=3, n_cands=5)


def test_the_candidates_are_read_and_the_model_is_not(data, tmp_path):
    s = resolve_subject(tmp_path / "no-such-run", data)
    assert s.candidates.qids == ["100", "101", "102"] and s.candidates.qrels
    assert s.source == data and s.name == data and s.has_model and s.loaded is None
    with pytest.raises(ConfigError, match="not found|no-such-run"):  # the adapter is only read when needed
        s.reranker


def test_files_name_the_set_by_its_run_and_a_rerankset_keeps_its_own_name(data):
    s = resolve_subject(queries=data / "queries.tsv", run=data / "bm25.run", collection=data / "collection.tsv")
    assert s.source is None and s.name == "bm25" and s.candidates.qrels is None and not s.has_model
    with pytest.raises(DataError, match="needs relevance judgements"):
        s.judged()
    with pytest.raises(ConfigError, match="no reranker to dissect"):
        s.reranker
    again = resolve_subject(eval_set=s.candidates, qrels=data / "qrels.txt")
    assert again.source is None and again.name == "bm25" and again.judged() is again.candidates
    assert again.qrels_file == data / "qrels.txt"


def test_a_loaded_reranker_is_used_as_it_is(data):
    marker = object()
    s = resolve_subject("runs/x", data, reranker=marker)
    assert s.reranker is marker and s.adapter == "runs/x"
    assert isinstance(s, Subject)


def test_bm25_features_never_load_the_adapter(data, tmp_path):
    from lorank.features.extract import extract_features

    meta = extract_features(resolve_subject(tmp_path / "no-such-run", data), tmp_path / "f.csv", groups=["bm25"])
    assert meta["pairs"] == 15 and meta["source"] == str(data) and "adapter" not in meta
    with pytest.raises(ConfigError, match="need a model: give an adapter"):
        extract_features(resolve_subject(eval_set=data), tmp_path / "g.csv", groups=["bm25", "score"])


@pytest.mark.parametrize("verb,kwargs,message", [
    ("analysis", {"queries": "q", "run": "r", "collection": "c"},
     "give --eval NAME, or all of --queries, --run, --collection and --qrels"),
    ("rerank", {"queries": "q", "run": "r"},
     "give --eval NAME, --beir DIR with --run, or all of --queries, --run and --collection"),
])
def test_the_cli_helper_says_what_each_verb_needs(verb, kwargs, message):
    with pytest.raises(ConfigError) as e:
        cli_subject(None, verb=verb, **kwargs)
    assert str(e.value) == message


def test_the_cli_helper_checks_beir_options(data, tmp_path):
    with pytest.raises(ConfigError, match="--beir reads the queries and passages"):
        cli_subject(None, "dl19", beir=tmp_path)
    with pytest.raises(ConfigError, match="--beir needs --run"):
        cli_subject(None, beir=tmp_path)
    s = cli_subject("A", data, data=tmp_path, allow_pickle=True)
    assert s.adapter == "A" and s.allow_pickle and s.data_root == tmp_path and s.source == data
