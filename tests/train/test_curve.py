"""eval.curve on a tiny training run: the model in memory scored every N steps and at the last into curve.jsonl and
runs_trec/curve-*.run, apart from the checkpoints' metrics; a resumed run does not score a point twice; scoring the
curve leaves the training as it was (merged LoRA, exact weights restored)."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.tinydata import make_trec_dir, save_tiny_model


def _cfg(root, data, model, out, **eval_extra):
    from lorank.train.config import TrainConfig

    return TrainConfig.from_dict({
        "model": str(model), "dtype": "fp32", "data": [{"kind": "trec", "path": str(data)}], "group_size": 4,
        "batch_queries": 2, "max_steps": 5, "lr": 1e-3, "lora": {"rank": 2, "alpha": 4, "dropout": 0.0},
        "checkpoints": {"steps": "2,5"}, "eval": {"sets": [str(data)], "depth": 12, **eval_extra},
        "output_dir": str(out)})


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory):
    from lorank.train.run import train

    root = tmp_path_factory.mktemp("curve")
    data = make_trec_dir(root / "data")
    model = save_tiny_model(root / "model")
    cfg = _cfg(root, data, model, root / "run", curve={"every": 2, "depth": 6})
    train(cfg, progress=False)
    return root, data, model, cfg


def _rows(run):
    return [json.loads(x) for x in (run / "curve.jsonl").read_text().splitlines()]


def test_the_curve_is_scored_every_n_steps_and_at_the_last(curve_run):
    root, data, *_ = curve_run
    run = root / "run"
    rows = _rows(run)
    assert [r["step"] for r in rows] == [2, 4, 5]
    for r in rows:
        assert r["eval_set"] == data.name and r["role"] == "dev" and r["depth"] == 6
        assert {"ndcg_cut_10", "recip_rank_10", "pairs", "score_wall_s"} <= set(r)
        assert r["pairs"] == 6 * 6  # 6 queries at the curve depth, not the checkpoints' 12
        assert (run / "runs_trec" / f"curve-{r['step']}.{data.name}.run").is_file()
    # the checkpoints' evaluation is as it was: its own file, its own depth, scheduled steps only
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(m["step"] for m in metrics) == [2, 5] and {m["depth"] for m in metrics} == {12}
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["curve_s"] > 0 and summary["eval_in_training_s"] >= summary["curve_s"]
    assert summary["train_s"] == pytest.approx(summary["wall_s"] - summary["eval_in_training_s"], abs=0.02)


def test_a_resumed_run_does_not_score_a_curve_point_twice(curve_run, tmp_path):
    from lorank.train.run import train

    root, data, model, cfg = curve_run
    run2 = tmp_path / "run"
    shutil.copytree(root / "run", run2)
    shutil.rmtree(run2 / "checkpoint-5")
    before = _rows(run2)
    # the point at step 4 was lost with the crash; those at 2 and 5 were written
    (run2 / "curve.jsonl").write_text("".join(json.dumps(r) + "\n" for r in before if r["step"] != 4))
    (run2 / "runs_trec" / f"curve-4.{data.name}.run").unlink()
    res = train(cfg.model_copy(update={"output_dir": str(run2)}), progress=False)
    assert res.steps == 5
    after = _rows(run2)
    assert [r["step"] for r in after] == [2, 4, 5]
    kept = {r["step"]: r for r in before}
    assert [r for r in after if r["step"] != 4] == [kept[2], kept[5]]  # the same rows: not scored again
    assert after[1]["ndcg_cut_10"] == kept[4]["ndcg_cut_10"]  # step 4 retrained to the same weights, rescored
    assert (run2 / "runs_trec" / f"curve-4.{data.name}.run").is_file()


def test_each_train_call_records_its_precision_and_the_step_it_went_on_from(curve_run, tmp_path):
    """train_calls.jsonl: a row per call, so a run resumed on another CPU says which steps trained in which
    precision (training_calls pairs each call of the log with its row)."""
    from lorank.layout.run import read_train_calls, training_calls
    from lorank.precision import cpu_model
    from lorank.train.run import train

    root, data, model, cfg = curve_run
    (first,) = read_train_calls(root / "run")
    assert first["from_step"] == 1 and first["dtype"] == "fp32" and first["precision_reason"] == "set in the config"
    assert first["device"] == "cpu" and first["cpu"] == cpu_model() and first["forward"] in ("packed", "hf")
    run2 = tmp_path / "run"
    shutil.copytree(root / "run", run2)
    shutil.rmtree(run2 / "checkpoint-5")  # resumes from checkpoint-2
    train(cfg.model_copy(update={"output_dir": str(run2)}), progress=False)
    rows = read_train_calls(run2)
    assert [r["from_step"] for r in rows] == [1, 3] and rows[0] == first
    train(cfg.model_copy(update={"output_dir": str(run2)}), progress=False)  # from the final checkpoint: no steps
    assert read_train_calls(run2) == rows  # a call that trains nothing records nothing
    calls = training_calls(run2)
    assert [c["steps"] for c in calls] == ["1-2", "3-5"]
    assert all(c["dtype"] == "fp32" and c["cpu"] == cpu_model() for c in calls)


def test_a_resume_in_another_precision_is_said(curve_run, tmp_path, caplog):
    """A checkpoint trained in bf16 (its marker says so), resumed where the config resolves to fp32: a warning names
    both; the same precision says nothing."""
    import logging

    from lorank.layout.checkpoints import COMPLETE_MARKER
    from lorank.train.run import train

    root, data, model, cfg = curve_run
    run2 = tmp_path / "run"
    shutil.copytree(root / "run", run2)
    shutil.rmtree(run2 / "checkpoint-5")
    marker = run2 / "checkpoint-2" / COMPLETE_MARKER
    meta = json.loads(marker.read_text())
    assert meta["dtype"] == "fp32"
    with caplog.at_level(logging.WARNING, logger="lorank.train"):
        train(cfg.model_copy(update={"output_dir": str(run2), "max_steps": 3}), progress=False)
    assert "two precisions" not in caplog.text
    shutil.rmtree(run2 / "checkpoint-3", ignore_errors=True)
    marker.write_text(json.dumps({**meta, "dtype": "bf16"}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lorank.train"):
        train(cfg.model_copy(update={"output_dir": str(run2)}), progress=False)
    assert "was trained in bf16; this call trains in fp32" in caplog.text and "two precisions" in caplog.text


def test_scoring_the_curve_leaves_the_training_as_it_was(curve_run, tmp_path):
    from safetensors.torch import load_file

    from lorank.train.run import train

    root, data, model, _ = curve_run
    train(_cfg(root, data, model, tmp_path / "plain"), progress=False)
    assert not (tmp_path / "plain" / "curve.jsonl").exists()
    for step in (2, 5):
        a = load_file(root / "run" / f"checkpoint-{step}" / "adapter_model.safetensors")
        b = load_file(tmp_path / "plain" / f"checkpoint-{step}" / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), step


def test_the_curve_needs_sets_and_is_not_part_of_a_run_without_it(tmp_path):
    from lorank.errors import ConfigError
    from lorank.train.config import TrainConfig

    base = {"data": [{"kind": "trec", "path": "dl20"}], "eval": {"sets": ["dl19"]}}
    plain = TrainConfig.from_dict(base)
    assert "curve" not in plain.identity()["eval"]
    with_curve = TrainConfig.from_dict({**base, "eval": {"sets": ["dl19"], "curve": {}}})
    assert with_curve.eval.curve.every == 100 and with_curve.eval.curve.depth == 20
    assert with_curve.identity()["eval"]["curve"] == {"every": 100, "depth": 20, "sets": None}
    with pytest.raises(ConfigError, match="eval.curve has no sets"):
        TrainConfig.from_dict({**base, "eval": {"curve": {"every": 10}}})
