"""What a run's steps trained in: train_calls.jsonl (a row per `lorank train` call) where lorank wrote it, else the
config.json of the last call; a study's findings record it per run and say when the runs mix precisions (a study
resumed across an AMX and an AVX2 machine under ``dtype: auto``)."""
from __future__ import annotations

import json
from types import SimpleNamespace

from lorank.layout.run import trained_precisions
from lorank.layout.study import run_dir


def _calls(d, *dtypes):
    d.mkdir(parents=True, exist_ok=True)
    (d / "train_calls.jsonl").write_text("".join(json.dumps({"from_step": 1 + 100 * i, "dtype": t}) + "\n"
                                                 for i, t in enumerate(dtypes)))


def test_a_run_resumed_on_another_cpu_trained_in_both_precisions(tmp_path):
    _calls(tmp_path / "a", "bf16", "fp32", "fp32")
    assert trained_precisions(tmp_path / "a") == (["bf16", "fp32"], "train_calls.jsonl")
    # before train_calls.jsonl: config.json knows the last call's only, and says so
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(json.dumps({"precision": {"dtype": "bf16", "reason": "auto"}}))
    assert trained_precisions(tmp_path / "b") == (["bf16"], "config.json (the last call)")
    (tmp_path / "b" / "config.json").write_text(json.dumps({"config": {}}))  # older still: no record
    assert trained_precisions(tmp_path / "b") == ([], "")
    assert trained_precisions(tmp_path / "missing") == ([], "")


def test_the_findings_record_each_runs_precision_and_name_a_mix(tmp_path):
    from lorank.report.findings_section import precision_note, precision_record

    plan = SimpleNamespace(runs=[SimpleNamespace(run_id=i) for i in ("r8-s42", "r8-s43", "r8-s44", "r1-s42")])
    for run_id in ("r8-s42", "r8-s43"):
        _calls(run_dir(tmp_path, run_id), "bf16")
    rec = precision_record(plan, tmp_path)
    assert rec == {"by_run": {"r8-s42": ["bf16"], "r8-s43": ["bf16"]}, "precisions": ["bf16"], "mixed": False,
                   "unknown": ["r8-s44", "r1-s42"]}
    assert precision_note(rec) == "Every run trained in bf16 (2 runs with a record)."
    _calls(run_dir(tmp_path, "r8-s44"), "bf16", "fp32")
    _calls(run_dir(tmp_path, "r1-s42"), "fp32")
    rec = precision_record(plan, tmp_path)
    assert rec["mixed"] and rec["precisions"] == ["bf16", "fp32"] and rec["unknown"] == []
    note = precision_note(rec)
    assert note.startswith("<b>Mixed training precision</b>")
    assert "bf16: r8-s42, r8-s43" in note and "bf16+fp32: r8-s44" in note and "fp32: r1-s42" in note
    assert precision_note({"by_run": {}}) == ""
