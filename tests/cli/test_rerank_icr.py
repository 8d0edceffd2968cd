"""``lorank rerank --method icr`` end to end on a tiny saved model (no adapter), and its refusals."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from lorank.cli import app
from lorank.data import load_run
from tests.tinydata import make_trec_dir, save_tiny_model


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("icr")
    return save_tiny_model(root / "model"), make_trec_dir(root / "data", n_queries=2, n_cands=6)


def test_rerank_with_icr_writes_a_run_of_every_candidate_and_evaluates_it(tiny_base, tmp_path, one_thread):
    model, data = tiny_base
    out = tmp_path / "icr.run"
    res = CliRunner().invoke(app, ["rerank", "--method", "icr", "--model", str(model), "--eval", str(data),
                                   "--out", str(out), "--depth", "5", "--window", "3", "--stride", "1"])
    assert res.exit_code == 0, res.output
    run = load_run(out)
    first = load_run(data / "bm25.run")
    assert set(run) == set(first) and all(len(run[q]) == 6 for q in run)  # 5 reranked + the sixth below them
    assert all(run[q][-1].docid == first[q][-1].docid for q in run)
    assert all(e.tag == "lorank-icr" for q in run for e in run[q])
    assert "ICR over 10 candidates" in res.output and "ndcg_cut_10" in res.output


@pytest.mark.parametrize("args,message", [
    (["--method", "icr", "--adapter", "x"], "--method icr reads a base model's attention"),
    (["--method", "nope"], "unknown --method 'nope'"),
    ([], "--method adapter (the default) needs --adapter DIR"),
    (["--adapter", "x", "--model", "m"], "--model names the base model of --method icr"),
    (["--method", "icr", "--processes", "2"], "--method icr scores in one process"),
])
def test_bad_method_options_are_refused_before_anything_loads(tiny_base, tmp_path, args, message):
    _, data = tiny_base
    res = CliRunner().invoke(app, ["rerank", "--eval", str(data), "--out", str(tmp_path / "x.run"), *args])
    assert res.exit_code == 2 and message in res.output, res.output
    assert not (tmp_path / "x.run").exists()


@pytest.mark.parametrize("args,message", [(["--window", "1"], "window must be a whole number >= 2"),
                                          (["--window", "3", "--stride", "3"], "must be smaller than the window"),
                                          (["--max-tokens", "40"], "cannot fit 2 of this query's candidates")])
def test_bad_icr_settings_give_one_clear_line(tiny_base, tmp_path, args, message, one_thread):
    model, data = tiny_base
    res = CliRunner().invoke(app, ["rerank", "--method", "icr", "--model", str(model), "--eval", str(data),
                                   "--out", str(tmp_path / "x.run"), *args])
    assert res.exit_code == 2 and message in res.output and "Traceback" not in res.output, res.output
