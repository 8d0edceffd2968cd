"""The time a study took (issue 41): every call of a step -- interrupted by SIGTERM, failed, ok -- is a line of the
step's call ledger, kept when its outputs are cleared and carried by the snapshot both ways; the time table sums the
ledgers per step, kind and in total, and recovers the calls made before the ledger from the run files, apart (wall
only), including on the committed snapshots, which it reads without writing into them."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from lorank.errors import DataError
from lorank.layout.run import training_calls
from lorank.layout.study import CALLS, STEP_MARKER, append_call, read_calls
from lorank.study import prepare, run_study, snapshot_study, study_time
from lorank.study.executor import run_step_process
from lorank.study.timing import BEFORE, open_ledger, time_table
from tests.study.test_study import _spec
from tests.tinydata import make_trec_dir, save_tiny_model

ROOT = Path(__file__).resolve().parents[2]
SEEDS, CPU = ROOT / "results" / "study_smollm2_cpu_seeds", ROOT / "results" / "study_smollm2_cpu"


@pytest.fixture(scope="module")
def timed(tmp_path_factory):
    """A tiny study whose good run's first call is stopped by SIGTERM and re-run ok, whose run on a missing model
    fails, and whose weights analysis of the good run runs once."""
    root = tmp_path_factory.mktemp("timed")
    data = make_trec_dir(root / "data", n_queries=3, n_cands=6)
    good = save_tiny_model(root / "model")
    spec = _spec(root, good, data, models=[str(good), str(root / "no-such-model")], grid=[{"rank": [4]}],
                 ablations=[], analyses=[{"kind": "weights", "runs": {"rank": 4}}])
    plan, out = prepare(spec, root / "out")
    step = next(s for s in plan.steps if s.kind == "train" and "no-such-model" not in s.step_id)
    polls = []

    def sigterm_on_the_third_poll() -> None:
        polls.append(1)
        if len(polls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        run_step_process(out, step, sigterm_on_the_third_poll)
    res = run_study(spec, out)
    return spec, out, res, step


def _statuses(d: Path) -> list[str]:
    return [r["status"] for r in read_calls(d)]


def test_each_call_is_a_ledger_line_interrupted_failed_and_ok(timed):
    spec, out, res, step = timed
    status = {k: v.status for k, v in res.outcomes.items()}
    bad = next(k for k in status if k.startswith("train/") and k != step.step_id)
    assert status[step.step_id] == "ok" and status[bad] == "failed"
    assert [v for k, v in status.items() if k.startswith("analyze/")].count("skipped") == 1
    lines = read_calls(out / step.out_dir)
    assert [r["status"] for r in lines] == ["interrupted", "ok"]  # the SIGTERM'd call, then the re-run
    commit = subprocess.run(["git", "-C", str(ROOT / "src"), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    for r in lines:
        assert r["step_id"] == step.step_id and r["hash"] == step.hash
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["started"] <= r["ended"]
        assert r["commit"] == commit and re.fullmatch(r"[0-9a-f]{40}", commit)
        assert r["machine"]["cpu_count"] == os.cpu_count() and r["machine"]["cpu"]
        assert r["threads"]["OMP_NUM_THREADS"] == os.environ.get("OMP_NUM_THREADS")
    assert lines[0]["exit_code"] != 0 and lines[1]["exit_code"] == 0
    assert isinstance(lines[1]["threads"]["torch"], int)  # the worker loaded torch and said how many threads
    marker = json.loads((out / step.out_dir / STEP_MARKER).read_text())
    assert marker["wall_s"] == lines[1]["wall_s"]  # the marker keeps the last call's figures, the ledger every call
    failed = read_calls(out / "runs" / bad.split("/", 1)[1])
    assert [r["status"] for r in failed] == ["failed"] and failed[0]["exit_code"] != 0 and failed[0]["cpu_s"] > 0


def test_the_table_sums_the_calls_per_step_kind_and_total(timed):
    spec, out, res, step = timed
    table = study_time(out)
    assert json.loads((out / "time.json").read_text()) == table
    s = table["steps"][step.step_id]
    lines = read_calls(out / step.out_dir)
    assert s["calls"] == 2 and s["by_status"] == {"interrupted": 1, "ok": 1} and s["calls_before_ledger"] == 0
    assert s["cpu_h"] == round(sum(r["cpu_s"] for r in lines) / 3600, 4) > 0
    assert s["wall_h"] == round(sum(r["wall_s"] for r in lines) / 3600, 4) >= s["cpu_h"] / os.cpu_count()
    train, analyze = table["kinds"]["train"], table["kinds"]["analyze"]
    assert train["steps"] == 2 and train["calls"] == 3 and train["by_status"] == {"interrupted": 1, "ok": 1, "failed": 1}
    assert analyze["steps"] == 1 and analyze["by_status"] == {"ok": 1}  # the skipped one never ran: no call
    every = [r for d in out.rglob(CALLS) for r in read_calls(d.parent)]
    assert table["total"]["calls"] == len(every) == 4
    assert table["total"]["cpu_h"] == round(sum(r["cpu_s"] for r in every) / 3600, 4)


def test_the_report_shows_the_time_table(timed):
    from lorank.report import build_report

    spec, out, res, step = timed
    page = build_report(out).read_text()
    assert "Time the study took" in page and "calls (ok / failed / interrupted)" in page
    assert "3 (1 / 1 / 1)" in page  # train: the interrupted call, the re-run, the failed run


def test_a_redone_step_keeps_its_ledger_when_its_outputs_are_cleared(timed, tmp_path):
    spec, out, res, step = timed
    study = tmp_path / "study"
    shutil.copytree(out, study)
    weights = next(s for s in res.plan.steps if s.kind == "analyze" and s.run_id == step.run_id)
    d = study / weights.out_dir
    marker = json.loads((d / STEP_MARKER).read_text())
    (d / STEP_MARKER).write_text(json.dumps({**marker, "hash": "0" * 8}))  # outputs of an older hash: redone
    (d / "sentinel").write_text("an older output")
    again = run_study(spec, study)
    assert again.outcomes[weights.step_id].status == "ok" and not (d / "sentinel").exists()
    assert _statuses(d) == ["ok", "ok"]


def test_the_snapshot_carries_the_ledgers_both_ways(timed, tmp_path):
    spec, out, res, step = timed
    snapshot_study(out, tmp_path / "snap")
    snapshot_study(tmp_path / "snap", tmp_path / "restored")
    ledgers = sorted(p.relative_to(out) for p in out.rglob(CALLS))
    assert len(ledgers) == 3
    for rel in ledgers:
        assert (tmp_path / "snap" / rel).read_bytes() == (out / rel).read_bytes() == \
            (tmp_path / "restored" / rel).read_bytes()
    a, b = time_table(out), time_table(tmp_path / "restored")
    assert {k: v for k, v in a.items() if k not in ("written", "study")} == \
        {k: v for k, v in b.items() if k not in ("written", "study")}


def _plant(study: Path, summary: dict | None = None, marker: dict | None = None) -> Path:
    """A study folder with one training run's train_log.jsonl: call 1 trains steps 1-3 in 30 s, is stopped after its
    checkpoint at 3; call 2 resumes and trains 4-5 in 40.5 s (its last row is the trainer's summary row)."""
    (study / "study.yaml").parent.mkdir(parents=True, exist_ok=True)
    (study / "study.yaml").write_text("name: planted\n")
    run = study / "runs" / "r4-abc123"
    run.mkdir(parents=True)
    rows = [(1, 100, 10.0), (2, 200, 20.0), (3, 300, 30.0), (4, 410, 12.0), (5, 520, 40.0)]
    (run / "train_log.jsonl").write_text("".join(json.dumps({"step": s, "tokens": t, "elapsed_s": e}) + "\n"
                                                 for s, t, e in rows)
                                         + json.dumps({"step": 5, "train_runtime": 40.5, "tokens": 520,
                                                       "elapsed_s": 40.5}) + "\n")
    if summary is not None:
        (run / "train_summary.json").write_text(json.dumps(summary))
    if marker is not None:
        (run / STEP_MARKER).write_text(json.dumps(marker))
    return run


SUMMARY = {"steps": 5, "steps_this_call": 2, "eval_in_training_s": 4.0, "curve_s": 1.0, "test_eval_s": 6.0}


def test_calls_before_the_ledger_are_recovered_from_the_run_files_as_wall_only(tmp_path):
    study = tmp_path / "study"
    marker = {"step_id": "train/r4-abc123", "hash": "abc123", "status": "ok", "wall_s": 55.0,
              "finished": "2026-01-01T00:00:00"}
    run = _plant(study, SUMMARY, marker)
    ablation = study / "ablations" / "r4-abc123" / "0"
    ablation.mkdir(parents=True)
    (ablation / STEP_MARKER).write_text(json.dumps({"step_id": "ablate/r4-abc123/0", "hash": "h", "status": "ok",
                                                    "wall_s": 100.0, "cpu_s": 90.0}))
    table = time_table(study)
    s = table["steps"]["train/r4-abc123"]
    assert s["ledger"] is False and s["calls"] == 0 and s["cpu_h"] == 0 and s["wall_h"] == 0
    assert s["calls_before_ledger"] == 2 and s["wall_h_before_ledger"] == round((30.0 + 55.0) / 3600, 4)
    first, last = s["call_lines"]
    assert first["status"] == last["status"] == BEFORE and first["steps"] == "1-3" and last["steps"] == "4-5"
    assert first["wall_s"] == 30.0 and "train_log.jsonl" in first["source"] and first["cpu_s"] is None
    assert last["wall_s"] == 55.0 and ".lorank-step.json" in last["source"]  # the whole last call: the marker's
    assert last["summary"] == {"eval_in_training_s": 4.0, "curve_s": 1.0, "test_eval_s": 6.0}
    ab = table["steps"]["ablate/r4-abc123/0"]
    assert ab["calls_before_ledger"] == 1 and ab["wall_h_before_ledger"] == round(100 / 3600, 4)
    assert ab["cpu_h"] == 0  # the marker's CPU seconds stay in its line, never summed with the ledger's
    assert table["total"]["wall_h_before_ledger"] == round(185 / 3600, 4) and table["total"]["calls"] == 0
    assert list(table["kinds"]) == ["train", "ablate"]
    # the step goes on under the ledger: its first line is preceded by what the run files recover
    run_marker = run / STEP_MARKER
    run_marker.unlink()
    open_ledger(run, "train/r4-abc123")
    append_call(run, {"step_id": "train/r4-abc123", "status": "ok", "wall_s": 10.0, "cpu_s": 8.0})
    open_ledger(run, "train/r4-abc123")  # once only
    s = time_table(study)["steps"]["train/r4-abc123"]
    assert [r["status"] for r in s["call_lines"]] == [BEFORE, BEFORE, "ok"]
    assert [r["wall_s"] for r in s["call_lines"][:2]] == [30.0, 40.5]  # without the marker: the loops' times
    assert s["call_lines"][1]["summary"]["test_eval_s"] == 6.0  # the summary is the last call's (step 5)
    assert s["calls"] == 1 and s["cpu_h"] == round(8 / 3600, 4) and s["wall_h"] == round(10 / 3600, 4)
    assert s["wall_h_before_ledger"] == round(70.5 / 3600, 4)


def test_a_marker_call_that_trained_nothing_is_a_call_of_its_own(tmp_path):
    """A call that resumed at the final checkpoint logs no row: the marker's wall is its own, not the log's last."""
    marker = {"step_id": "train/r4-abc123", "hash": "abc123", "status": "ok", "wall_s": 7.0}
    _plant(tmp_path / "study", {**SUMMARY, "steps_this_call": 0}, marker)
    s = time_table(tmp_path / "study")["steps"]["train/r4-abc123"]
    assert [r["wall_s"] for r in s["call_lines"]] == [30.0, 40.5, 7.0]


def test_bad_input_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(DataError, match="not a study folder"):
        time_table(tmp_path)
    run = _plant(tmp_path / "study")
    append_call(run, {"step_id": "train/r4-abc123", "status": "ok", "wall_s": "long", "cpu_s": 1.0})
    with pytest.raises(DataError, match=r"\.lorank-calls\.jsonl.*call 1: wall_s is 'long', not a number of seconds"):
        time_table(tmp_path / "study")


def _tree(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


def test_the_committed_seeded_study_without_ledgers_is_timed_from_its_run_files(tmp_path):
    before = _tree(SEEDS)
    table = study_time(SEEDS, tmp_path / "time.json")
    assert _tree(SEEDS) == before and not (SEEDS / "time.json").exists()  # read-only
    assert json.loads((tmp_path / "time.json").read_text()) == table
    recovered = {k: v for k, v in table["steps"].items() if not v["ledger"]}
    assert len(recovered) >= 2 and all(k.startswith("train/") for k in recovered)
    resumed = 0
    for sid, s in recovered.items():
        run = SEEDS / s["folder"]
        calls = training_calls(run)  # the loops' times; a finished run's last call whole, from its marker
        last = json.loads((run / STEP_MARKER).read_text())["wall_s"] if (run / STEP_MARKER).is_file() else calls[-1]["s"]
        assert s["calls"] == 0 and s["cpu_h"] == 0 and s["wall_h"] == 0 and s["calls_before_ledger"] == len(calls)
        assert s["wall_h_before_ledger"] == round((sum(c["s"] for c in calls[:-1]) + last) / 3600, 4), sid
        resumed += len(calls) > 1
    assert resumed >= 2  # seeds 42 and 43 were each stopped and resumed before the ledger existed


def test_the_committed_cpu_study_recovers_every_kind_from_its_markers(tmp_path):
    before = _tree(CPU)
    table = time_table(CPU)
    assert _tree(CPU) == before
    assert set(table["kinds"]) == {"train", "ablate", "analyze"}
    assert all(s["calls_before_ledger"] >= 1 and s["wall_h_before_ledger"] > 0 for s in table["steps"].values())
    assert table["total"]["steps"] == len(table["steps"]) >= 17


def test_the_cli_verb_writes_the_table_and_prints_it(tmp_path):
    from typer.testing import CliRunner

    from lorank.cli import app

    _plant(tmp_path / "study", SUMMARY)
    res = CliRunner().invoke(app, ["study-time", str(tmp_path / "study"), "--out", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    assert "time by kind" in res.output and "train/r4-abc123" in res.output
    assert json.loads((tmp_path / "t.json").read_text())["total"]["calls_before_ledger"] == 2
    assert not (tmp_path / "study" / "time.json").exists()
    bad = CliRunner().invoke(app, ["study-time", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and "not a study folder" in bad.output
