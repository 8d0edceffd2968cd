"""benchmarks/findings_by_hand.py, the independent check of a study's grid figures: Holm, and a run on a synthetic
study folder whose numbers are known."""
import sys

import pytest

from tests.benchmark_module import load_benchmark

fbh = load_benchmark("findings_by_hand")


def test_holm_matches_the_step_down_rule():
    assert fbh.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert fbh.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone


def _write_run(path, scores):  # scores: {qid: {docid: score}}
    path.write_text("".join(f"{q} Q0 {d} {i + 1} {s} t\n" for q, ds in scores.items()
                            for i, (d, s) in enumerate(sorted(ds.items(), key=lambda x: -x[1]))))


def test_a_synthetic_study_is_scored_as_built(tmp_path, capsys, monkeypatch):
    data, study = tmp_path / "data", tmp_path / "study"
    for s, folder in fbh.SETS:
        (data / folder).mkdir(parents=True)
        (data / folder / "qrels.txt").write_text(f"{s}a 0 good 3\n{s}a 0 bad 0\n{s}b 0 good 2\n")
        _write_run(data / folder / "bm25.run", {f"{s}a": {"bad": 2, "good": 1}, f"{s}b": {"bad": 2, "good": 1}})
        for run, b_good in (("m-r1-all-s42-abc123", 1), ("m-r8-all-s42-def456", 3), ("m-r2-all-s42-0a0a0a", 3)):
            d = study / "runs" / run / "runs_trec"  # r1 ranks the good passage of the "b" queries second
            d.mkdir(parents=True, exist_ok=True)
            _write_run(d / f"checkpoint-10.{s}.run",
                       {f"{s}a": {"bad": 2, "good": 3}, f"{s}b": {"bad": 2, "good": b_good}})
    monkeypatch.setattr(sys, "argv", ["x", str(study), "--data", str(data), "--step", "10",
                                      "--pairs", "r1-all:r8-all", "r2-all:r8-all"])
    fbh.main()
    out = capsys.readouterr().out
    assert "BM25 top-50: 0.6309 over 4 judged queries" in out  # the good passage second: 1 / log2(3)
    assert "m-r1-all   step    10: 0.8155" in out and "m-r8-all   step    10: 1.0000" in out  # (1 + 0.6309) / 2
    assert "m-r1-all vs m-r8-all at step 10: 0.8155 vs 1.0000  p = 0.182, Holm over 2: 0.363" in out  # t = 1.73, 3 df
    assert "m-r2-all vs m-r8-all at step 10: 1.0000 vs 1.0000  p = 1 (identical), Holm over 2: 1" in out


def test_a_bad_run_line_names_file_and_line(tmp_path):
    f = tmp_path / "x.run"
    f.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0\n")
    with pytest.raises(SystemExit, match=r"x\.run:2: not a TREC run line"):
        fbh.read_run(f)


def test_seeds_are_averaged_per_query_and_tost_is_printed(tmp_path, capsys, monkeypatch):
    data, study = tmp_path / "data", tmp_path / "study"
    for s, folder in fbh.SETS:
        (data / folder).mkdir(parents=True)
        (data / folder / "qrels.txt").write_text(f"{s}a 0 good 3\n{s}a 0 bad 0\n{s}b 0 good 2\n{s}b 0 bad 0\n")
        _write_run(data / folder / "bm25.run", {f"{s}a": {"bad": 2, "good": 1}, f"{s}b": {"bad": 2, "good": 1}})
        # two seeds of r1: one ranks both good passages first, one neither (mean per query 0.8155); r8 always first
        for run, good in (("m-r1-all-s42-aaaaaa", 3), ("m-r1-all-s43-bbbbbb", 1), ("m-r8-all-s42-cccccc", 3)):
            d = study / "runs" / run / "runs_trec"
            d.mkdir(parents=True, exist_ok=True)
            _write_run(d / f"checkpoint-10.{s}.run", {f"{s}a": {"bad": 2, "good": good}, f"{s}b": {"bad": 2, "good": good}})
    monkeypatch.setattr(sys, "argv", ["x", str(study), "--data", str(data), "--step", "10", "--margin", "0.5",
                                      "--pairs", "r1-all:r8-all"])
    fbh.main()
    out = capsys.readouterr().out
    assert "m-r1-all   step    10: 0.8155  vs BM25" in out and "(2 seeds: 1.0000, 0.6309)" in out
    assert "m-r1-all vs m-r8-all at step 10: 0.8155 vs 1.0000  p = 0 (identical)" not in out
    import re

    m = re.search(r"at step 10: 0\.8155 vs 1\.0000  p = \S+, TOST \+-0\.5 p = (\S+), Holm", out)
    assert m and float(m[1]) < 1e-6, out  # every difference is -0.1845: well inside +-0.5
