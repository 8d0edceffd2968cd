"""lorank snapshot: a run's resume state kept and restored (the last complete checkpoint, config, logs)."""
from __future__ import annotations

import json

import pytest

from lorank.errors import DataError
from lorank.layout.snapshot import snapshot_run


def _fake_run(root, steps, half_written=None):
    """A run folder whose checkpoints carry lorank's completeness marker (as the trainer writes them)."""
    from lorank.layout.adapter import WEIGHTS
    from lorank.layout.checkpoints import COMPLETE_MARKER

    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"config": {"seed": 42}}))
    (root / "train_log.jsonl").write_text("".join(json.dumps({"step": s}) + "\n" for s in range(1, max(steps) + 1)))
    (root / "runs_trec").mkdir()
    (root / "runs_trec" / f"checkpoint-{steps[0]}.dl19.run").write_text("1 Q0 d 1 1.0 t\n")
    for s in steps + ([half_written] if half_written else []):
        d = root / f"checkpoint-{s}"
        d.mkdir()
        header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
        (d / WEIGHTS).write_bytes(len(header).to_bytes(8, "little") + header + bytes(8))
        (d / "optimizer.pt").write_bytes(bytes(100 + s))
        if s != half_written:
            files = {f.name: f.stat().st_size for f in d.iterdir()}
            (d / COMPLETE_MARKER).write_text(json.dumps({"files": files, "step": s}))
    return root


def test_a_snapshot_holds_the_last_complete_checkpoint_and_the_run_files_and_restores(tmp_path):
    from lorank.layout.checkpoints import complete_checkpoints

    run = _fake_run(tmp_path / "runs" / "x", [50, 100], half_written=150)
    assert [c.name for c in complete_checkpoints(run)] == ["checkpoint-50", "checkpoint-100"]
    snap = snapshot_run(run, tmp_path / "resume" / "x")
    kept = tmp_path / "resume" / "x"
    assert snap.step == 100 and sorted(p.name for p in kept.iterdir()) == [
        "checkpoint-100", "config.json", "runs_trec", "train_log.jsonl"]
    assert [c.name for c in complete_checkpoints(kept)] == ["checkpoint-100"]
    assert (kept / "checkpoint-100" / "optimizer.pt").read_bytes() == (run / "checkpoint-100" / "optimizer.pt").read_bytes()
    assert "checkpoint-100" in snap.summary() and snap.checkpoint_files == 3
    # the same call restores it on a new machine (no runs/ there), and the trainer finds checkpoint-100
    restored = snapshot_run(kept, tmp_path / "new" / "runs" / "x")
    assert restored.step == 100 and complete_checkpoints(tmp_path / "new" / "runs" / "x")[-1].name == "checkpoint-100"
    # a later snapshot replaces the earlier one whole; no temporary folder is left beside it
    run2 = _fake_run(tmp_path / "runs" / "y", [50, 100, 200])
    assert snapshot_run(run2, kept).replaced_step == 100
    assert [c.name for c in complete_checkpoints(kept)] == ["checkpoint-200"]
    assert sorted(p.name for p in kept.parent.iterdir()) == ["x"]


def test_a_snapshot_never_replaces_later_training_or_the_run_itself(tmp_path):
    old = _fake_run(tmp_path / "old", [50])
    later = _fake_run(tmp_path / "later", [50, 100])
    with pytest.raises(DataError, match="holds checkpoint-100, later than .*checkpoint-50.*--force"):
        snapshot_run(old, later)
    assert snapshot_run(old, later, force=True).step == 50
    with pytest.raises(DataError, match="would replace the run it copies"):
        snapshot_run(old, old)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no complete checkpoint"):
        snapshot_run(empty, tmp_path / "out")
    with pytest.raises(DataError, match="not a run folder"):
        snapshot_run(tmp_path / "missing", tmp_path / "out")


def test_the_cli_verb_snapshots_a_run(tmp_path):
    from typer.testing import CliRunner

    from lorank.cli import app

    run = _fake_run(tmp_path / "r", [50])
    res = CliRunner().invoke(app, ["snapshot", str(run), "--out", str(tmp_path / "keep")])
    assert res.exit_code == 0, res.output
    assert "checkpoint-50" in res.output and (tmp_path / "keep" / "checkpoint-50").is_dir()
