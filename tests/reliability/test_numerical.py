"""Point 4 of issue 8: a NaN/inf loss stops training with a clear message and the last good checkpoint
intact; with ``skip_nonfinite: true`` the bad batch is skipped (no weight moves), counted, and training
goes on. The NaN is injected into the real loss at chosen steps, end to end through ``lorank train``."""
from __future__ import annotations

import json
import math

import pytest
import torch

from lorank.layout.checkpoints import complete_checkpoints
from lorank.train.trainer import NonFiniteLossError
from tests.reliability.conftest import adapter_tensors, assert_bit_identical, one_thread, train_here, write_config


@pytest.fixture
def poison(monkeypatch):
    """Make the training loss NaN (or inf) on the given 1-based loss calls (= training steps here)."""
    import lorank.train.run as run  # train() builds its loss with run.get_loss (lorank.train.losses')

    real = run.get_loss
    state = {"calls": 0, "bad": set(), "value": math.nan}

    def get_loss(name):
        fn = real(name)

        def poisoned(scores, teacher=None, **kw):
            state["calls"] += 1
            loss = fn(scores, teacher, **kw)
            if state["calls"] in state["bad"]:
                return loss * torch.tensor(state["value"])  # the graph still reaches the weights
            return loss

        return poisoned

    monkeypatch.setattr(run, "get_loss", get_loss)

    def arm(steps, value=math.nan):
        state.update(calls=0, bad=set(steps), value=value)

    return arm


def _cfg(tiny, tmp_path, name, **kw):
    return write_config(tmp_path / f"{name}.yaml", tiny, tmp_path / name, max_steps=6, every=2, eval_sets=False,
                        **kw)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tiny, tmp_path, poison,
                                                                                   trained_run, value):
    poison([3], value)
    cfg = _cfg(tiny, tmp_path, "run")
    with pytest.raises(NonFiniteLossError) as e:
        train_here(cfg, max_steps=4)
    msg = str(e.value)
    assert f"loss became {value} at step 3" in msg and "checkpoint is intact" in msg
    assert "skip_nonfinite" in msg
    run = tmp_path / "run"
    assert [c.name for c in complete_checkpoints(run)] == ["checkpoint-2"]
    assert not (run / "checkpoint-3").exists() and not (run / "checkpoint-4").exists()
    # the good checkpoint is exactly the one a clean run writes at step 2, and finite
    good = adapter_tensors(run / "checkpoint-2")
    assert_bit_identical(good, adapter_tensors(trained_run / "checkpoint-2"))
    assert all(torch.isfinite(t).all() for t in good.values())
    # the same command, once the fault is gone, resumes from it
    poison([])
    res = train_here(cfg, max_steps=4)
    assert res.steps == 4
    assert_bit_identical(adapter_tensors(run / "checkpoint-4"), adapter_tensors(trained_run / "checkpoint-4"))


def test_cli_reports_nonfinite_loss_without_a_traceback(tiny, tmp_path, poison):
    from typer.testing import CliRunner

    from lorank.cli import app

    poison([2])
    cfg = _cfg(tiny, tmp_path, "run")
    with one_thread():
        res = CliRunner().invoke(app, ["train", str(cfg)])
    assert res.exit_code == 2
    assert "loss became nan at step 2" in res.output.replace("\n", " ")
    assert "Traceback" not in res.output


@pytest.mark.parametrize("grad_cache", [False, True])
def test_skip_nonfinite_skips_and_counts_bad_batches(tiny, tmp_path, poison, grad_cache):
    poison([2, 3])  # steps 2 and 3 are bad
    cfg = _cfg(tiny, tmp_path, "run", extra=f"skip_nonfinite: true\ngrad_cache: {str(grad_cache).lower()}",
               steps="1,2,3,4,6")
    res = train_here(cfg)
    run = tmp_path / "run"
    assert res.steps == 6 and res.skipped_batches == 2
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["skipped_batches"] == 2
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert max(r["skipped_batches"] for r in log) == 2
    # a skipped batch moves no weight: checkpoints 1, 2 and 3 hold the same adapter; step 4 moves again
    w1, w2, w3, w4 = (adapter_tensors(run / f"checkpoint-{s}") for s in (1, 2, 3, 4))
    assert_bit_identical(w1, w2)
    assert_bit_identical(w2, w3)
    assert any(not torch.equal(w3[k], w4[k]) for k in w3)
    assert all(torch.isfinite(t).all() for t in adapter_tensors(run / "checkpoint-6").values())


def test_skipped_batch_count_survives_a_resume(tiny, tmp_path, poison):
    import shutil

    poison([2])
    cfg = _cfg(tiny, tmp_path, "run", extra="skip_nonfinite: true")
    train_here(cfg, max_steps=4)
    run = tmp_path / "run"
    shutil.rmtree(run / "checkpoint-4")  # as if it crashed after checkpoint-2
    poison([])
    res = train_here(cfg, max_steps=4)
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert res.skipped_batches == 1


@pytest.mark.parametrize("log_every,bad,stopped,kept", [(1, 3, 3, ["checkpoint-2"]), (5, 1, 2, [])])
def test_deferred_check_as_on_cuda_stops_before_any_save_after_the_bad_step(tiny, tmp_path, poison, monkeypatch,
                                                                            log_every, bad, stopped, kept):
    """Issue 13: on CUDA the loss guard keeps its flag on the device (no host sync per step) and reads it
    before each log or save; forced here on CPU. The bad step is named, and no checkpoint is written after it."""
    from lorank.train.trainer import RerankTrainer

    monkeypatch.setattr(RerankTrainer, "_defers", lambda self, loss: not self.skip_nonfinite)
    poison([bad])
    cfg = _cfg(tiny, tmp_path, "run")
    with pytest.raises(NonFiniteLossError, match=f"non-finite at step {bad}; training stopped. The last saved "
                                                 "checkpoint is intact"):
        train_here(cfg, max_steps=6, log_every=log_every)
    run = tmp_path / "run"
    assert [c.name for c in complete_checkpoints(run)] == kept
    assert not any((run / f"checkpoint-{s}").exists() for s in range(stopped, 7))
    if log_every == 5:  # nothing logged before the stop: the flag was read at the step-2 save
        assert not (run / "train_log.jsonl").exists() or not (run / "train_log.jsonl").read_text().strip()


def test_train_summary_records_the_execution_settings_and_eval_share(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path, "run")
    train_here(cfg, max_steps=2)
    s = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    ex = s["execution"]
    assert ex["device"] == "cpu" and ex["attention_backend"] == {"requested": "auto", "applied": None, "enabled": []}
    assert ex["shape_buckets"] is False and ex["chunk_tokens"] == 4096 and ex["optim"] == "adamw_torch"
    assert ex["log_every"] == 1 and ex["compile"] is False
    assert 0.0 <= s["eval_share"] <= 1.0
