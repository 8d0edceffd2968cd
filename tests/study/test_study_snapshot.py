"""`lorank snapshot STUDY_DIR`: a study cut down to what a new machine needs to go on, restored with the same call."""
from __future__ import annotations

import json
import shutil

import pytest
import yaml

from lorank.errors import DataError
from lorank.study import run_study, snapshot_study
from lorank.layout.checkpoints import complete_checkpoints
from tests.tinydata import make_trec_dir, save_tiny_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny study whose training runs are done and whose compare analysis (needs r2 and r4) is not."""
    root = tmp_path_factory.mktemp("snap")
    data = make_trec_dir(root / "data", n_queries=4, n_cands=8)
    model = save_tiny_model(root / "model")
    spec = {
        "name": "snap-study", "models": [str(model)],
        "train": {"data": [{"kind": "trec", "path": str(data)}], "group_size": 4, "batch_queries": 1,
                  "max_steps": 2, "checkpoints": {"steps": "1,2"}, "eval": {"sets": [str(data)], "depth": 8}},
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.0},
        "grid": [{"rank": [2, 4]}, {"components": ["mha"]}],
        "analyses": [{"kind": "compare", "runs": {"rank": 2}, "against": {"rank": 4, "components": "all"}}],
        "report": {"reference": {"rank": 4, "components": "all"}},
    }
    f = root / "spec.yaml"
    f.write_text(yaml.safe_dump(spec))
    out = root / "study"
    res = run_study(f, out, only=["train/"])
    assert {o.status for o in res.outcomes.values()} == {"ok"}
    (out / "logs" / "big.log").write_text("".join(f"line {i}\n" for i in range(60_000)))  # ~600 KB
    return root, f, out, res


def _runs(plan, label):
    return next(r.run_id for r in plan.runs if r.label == label)


def test_finished_runs_keep_only_the_adapters_a_later_step_needs(trained, tmp_path):
    root, spec, out, res = trained
    snap = snapshot_study(out, tmp_path / "snap")
    r2, r4, mha = (_runs(res.plan, x) for x in ("r2-all-s42", "r4-all-s42", "r4-mha-s42"))
    assert snap.checkpoints == {r2: "checkpoint-2 (adapter)", r4: "checkpoint-2 (adapter)"}
    ck = tmp_path / "snap" / "runs" / r2 / "checkpoint-2"
    assert not (ck / "optimizer.pt").exists() and (out / "runs" / r2 / "checkpoint-2" / "optimizer.pt").is_file()
    assert complete_checkpoints(ck.parent) == [ck]  # still a complete checkpoint: the marker lists what is kept
    assert not list((tmp_path / "snap" / "runs" / mha).glob("checkpoint-*"))
    assert not (tmp_path / "snap" / "runs" / r2 / "checkpoint-1").exists()
    for r in (r2, r4, mha):  # the evaluations and step markers travel
        for name in ("metrics.jsonl", "config.json", ".lorank-step.json"):
            assert (tmp_path / "snap" / "runs" / r / name).is_file()
    assert (tmp_path / "snap" / "runs" / r2 / "runs_trec").is_dir()
    log = (tmp_path / "snap" / "logs" / "big.log").read_text()
    assert log.startswith("[... ") and "earlier bytes left out" in log.splitlines()[0]
    assert log.endswith("line 59999\n") and len(log) < 210_000
    assert snap.bytes < sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2


def test_restored_snapshot_goes_on_and_later_drops_the_adapters(trained, tmp_path):
    root, spec, out, res = trained
    snapshot_study(out, tmp_path / "snap")
    restored = tmp_path / "restored"
    snapshot_study(tmp_path / "snap", restored)  # the same call restores it
    again = run_study(spec, restored)
    status = {k: v.status for k, v in again.outcomes.items()}
    assert {v for k, v in status.items() if k.startswith("train/")} == {"cached"}
    assert [v for k, v in status.items() if k.startswith("analyze/")] == ["ok"]
    snap2 = snapshot_study(restored, tmp_path / "snap2")
    assert snap2.checkpoints == {}  # nothing left needs an adapter
    assert any(s.startswith("analyze/compare") for s in snap2.steps_done)


def test_an_unfinished_run_keeps_its_whole_last_checkpoint(trained, tmp_path):
    root, spec, out, res = trained
    work = tmp_path / "work"
    shutil.copytree(out, work)
    mha = _runs(res.plan, "r4-mha-s42")
    (work / "runs" / mha / ".lorank-step.json").unlink()  # its training is not finished
    snap = snapshot_study(work, tmp_path / "snap")
    assert snap.checkpoints[mha] == "checkpoint-2 (resume)"
    assert (tmp_path / "snap" / "runs" / mha / "checkpoint-2" / "optimizer.pt").is_file()


def test_an_older_snapshot_does_not_replace_a_study_that_went_further(trained, tmp_path):
    root, spec, out, res = trained
    older = tmp_path / "older"
    shutil.copytree(out, older)
    mha = _runs(res.plan, "r4-mha-s42")
    (older / "runs" / mha / ".lorank-step.json").unlink()
    with pytest.raises(DataError, match=r"holds 1 finished step\(s\) that .* has not \(train/"):
        snapshot_study(older, out)
    assert (out / "runs" / mha / ".lorank-step.json").is_file()
    with pytest.raises(DataError, match="not a study folder"):
        snapshot_study(tmp_path / "nothing", tmp_path / "x")
    assert json.loads((out / "runs" / mha / ".lorank-step.json").read_text())["status"] == "ok"
