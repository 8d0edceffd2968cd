"""`lorank evaluate` (lorank.cli.evaluate) on real and small files: metrics, significance, per-query rows, clean
errors."""
import json

import pytest
from typer.testing import CliRunner

from lorank.cli import app


from tests.shared_paths import SHARED  # noqa: E402


DL19 = SHARED / "trec-dl-2019"
needs_data = pytest.mark.skipif(not DL19.is_dir(), reason=f"real data not found at {DL19} (../shared/data)")
runner = CliRunner()


@needs_data
def test_cli_evaluate_real_files_and_json(tmp_path):
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--qrels", str(DL19 / "qrels.txt"), "--run", str(DL19 / "bm25.run"),
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "0.5058" in res.output and "0.7024" in res.output
    d = json.loads(out.read_text())
    assert round(d["runs"]["bm25.run"]["aggregate"]["ndcg_cut_10"], 4) == 0.5058
    assert d["comparisons"] == []
    assert "per_query" not in d["runs"]["bm25.run"]


@needs_data
def test_cli_evaluate_two_runs_significance_and_per_query(tmp_path):
    from lorank.data import load_run
    from lorank.evaluation import write_run

    run = load_run(DL19 / "bm25.run")
    top5 = tmp_path / "top5.run"
    write_run(top5, {q: v[:5] for q, v in run.items()})
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--qrels", str(DL19 / "qrels.txt"), "--run", str(DL19 / "bm25.run"),
                              "--run", str(top5), "--per-query", "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "Holm" in res.output and "*" in res.output
    assert "per query: top5.run" in res.output and "1037798" in res.output
    d = json.loads(out.read_text())
    assert d["baseline"] == "bm25.run"
    cmp = {c["measure"]: c for c in d["comparisons"]}
    assert cmp["recall_100"]["significant"] is True and cmp["recall_100"]["delta"] < 0
    assert len(d["runs"]["top5.run"]["per_query"]["ndcg_cut_10"]) == 43
    # p-values below 1e-3 print in scientific notation, never as 0.0000
    (row,) = [line for line in res.output.splitlines() if "top5.run" in line and "recall_100" in line]
    assert cmp["recall_100"]["p_value"] < 1e-3 and "0.0000" not in row and "e-" in row


def test_cli_evaluate_small_files(tmp_path):
    (tmp_path / "q.txt").write_text("1 0 a 2\n1 0 b 0\n2 0 c 1\n")
    (tmp_path / "r.run").write_text("1 Q0 a 1 2.0 x\n1 Q0 b 2 1.0 x\n")
    res = runner.invoke(app, ["evaluate", "--qrels", str(tmp_path / "q.txt"), "--run", str(tmp_path / "r.run"),
                              "--rel-threshold", "1", "--measure", "recip_rank_10", "--measure", "P_1"])
    assert res.exit_code == 0, res.output
    assert "0.5000" in res.output  # query 2 has no results and counts as 0
    assert "1 judged queries have no results" in res.output


def test_cli_evaluate_missing_file_is_clean_error(tmp_path):
    (tmp_path / "q.txt").write_text("1 0 a 2\n")
    res = runner.invoke(app, ["evaluate", "--qrels", str(tmp_path / "q.txt"), "--run", str(tmp_path / "nope.run")])
    assert res.exit_code == 2
    assert "nope.run" in res.output
    assert "Traceback" not in res.output


def test_cli_evaluate_bad_measure_is_clean_error(tmp_path):
    (tmp_path / "q.txt").write_text("1 0 a 2\n")
    (tmp_path / "r.run").write_text("1 Q0 a 1 2.0 x\n")
    res = runner.invoke(app, ["evaluate", "--qrels", str(tmp_path / "q.txt"), "--run", str(tmp_path / "r.run"),
                              "--measure", "bogus"])
    assert res.exit_code == 2 and "unknown measure" in res.output
