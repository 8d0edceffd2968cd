"""Point 5 of issue 8: resource faults.

- A full disk while saving (ENOSPC injected into each write of the save path: the adapter, the optimizer
  state, the completeness marker, an evaluation run) gives a clear error naming the last complete
  checkpoint; earlier checkpoints stay intact; the same command then resumes and ends bit-identical.
- Out of memory while scoring backs off the batch size and carries on with the same scores.

Set LORANK_RELIABILITY_TMPFS to a small mounted filesystem (e.g. ``mount -t tmpfs -o size=480k tmpfs DIR``)
to also run training into a really full disk.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lorank.atomic import inject_fault
from lorank.train.callbacks import SaveError
from lorank.layout.checkpoints import complete_checkpoints
from tests.reliability.conftest import adapter_tensors, assert_bit_identical, one_thread, train_here, write_config


def _full_disk_in(monkeypatch, where: str, at_step: int):
    """Make the ``where`` writer of checkpoint-``at_step`` fail as on a full disk, after writing part of it."""
    import peft.peft_model
    import transformers.trainer

    nospace = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    if where == "adapter (safetensors)":
        real = peft.peft_model.safe_save_file

        def save(tensors, filename, *a, **kw):
            if f"checkpoint-{at_step}" in str(filename):
                Path(filename).write_bytes(b"\x00" * 100)  # what a full disk leaves: a stump
                from safetensors import SafetensorError

                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            return real(tensors, filename, *a, **kw)

        monkeypatch.setattr(peft.peft_model, "safe_save_file", save)
    elif where == "optimizer (torch.save)":
        real = transformers.trainer.torch.save

        def tsave(obj, f, *a, **kw):
            if f"checkpoint-{at_step}" in str(f) and "optimizer" in str(f):
                Path(f).write_bytes(b"PK\x03\x04" + b"\x00" * 60)
                raise nospace
            return real(obj, f, *a, **kw)

        monkeypatch.setattr(transformers.trainer.torch, "save", tsave)
    else:
        raise AssertionError(where)


def _cfg(tiny, tmp_path, eval_sets=False):
    return write_config(tmp_path / "c.yaml", tiny, tmp_path / "run", max_steps=4, every=2, eval_sets=eval_sets)


def _check_recovery(cfg, run: Path, trained_run: Path, monkeypatch) -> None:
    assert [c.name for c in complete_checkpoints(run)] == ["checkpoint-2"]
    assert_bit_identical(adapter_tensors(run / "checkpoint-2"), adapter_tensors(trained_run / "checkpoint-2"))
    monkeypatch.undo()  # space was freed: the same command resumes from checkpoint-2
    train_here(cfg)
    assert json.loads((run / "train_summary.json").read_text())["resumed_from"].endswith("checkpoint-2")
    assert_bit_identical(adapter_tensors(run / "checkpoint-4"), adapter_tensors(trained_run / "checkpoint-4"))


@pytest.mark.parametrize("where", ["adapter (safetensors)", "optimizer (torch.save)"])
def test_full_disk_while_saving_a_checkpoint(tiny, tmp_path, trained_run, monkeypatch, where):
    _full_disk_in(monkeypatch, where, at_step=4)
    cfg = _cfg(tiny, tmp_path)
    with pytest.raises(SaveError) as e:
        train_here(cfg)
    msg = str(e.value)
    assert "could not save" in msg and "checkpoint-4" in msg and "disk is full" in msg
    assert "last complete: checkpoint-2" in msg and "run the same command to resume" in msg
    run = tmp_path / "run"
    assert not (run / "checkpoint-4").exists()  # the half-written folder was removed to free space
    _check_recovery(cfg, run, trained_run, monkeypatch)


def test_full_disk_while_writing_the_marker(tiny, tmp_path, trained_run, monkeypatch):
    cfg = _cfg(tiny, tmp_path)
    with inject_fault("checkpoint-4/lorank_checkpoint.json", 40, "enospc"), pytest.raises(SaveError) as e:
        train_here(cfg)
    assert "disk is full" in str(e.value) and "last complete: checkpoint-2" in str(e.value)
    _check_recovery(cfg, tmp_path / "run", trained_run, monkeypatch)


@pytest.mark.parametrize("target, failed_step", [("runs_trec/checkpoint-4", 4), ("metrics.jsonl", 2)])
def test_full_disk_while_writing_evaluation_results(tiny, tmp_path, monkeypatch, target, failed_step):
    cfg = _cfg(tiny, tmp_path, eval_sets=True)
    with inject_fault(target, 0, "enospc"), pytest.raises(SaveError) as e:
        train_here(cfg)
    msg = str(e.value)
    assert "could not write" in msg and "disk is full" in msg and "none is half-written" in msg
    run = tmp_path / "run"
    # the checkpoint itself was complete before its evaluation failed; the result files are whole
    assert [c.name for c in complete_checkpoints(run)] == [f"checkpoint-{s}" for s in range(2, failed_step + 1, 2)]
    metrics = run / "metrics.jsonl"
    rows = [json.loads(x) for x in metrics.read_text().splitlines()] if metrics.exists() else []
    assert [r["step"] for r in rows] == list(range(2, failed_step, 2))
    assert not list(run.rglob("*.tmp"))
    res = train_here(cfg)  # the resume evaluates the missing checkpoint
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and res.steps == 4


def test_cli_full_disk_message(tiny, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from lorank.cli import app

    _full_disk_in(monkeypatch, "adapter (safetensors)", at_step=2)
    cfg = _cfg(tiny, tmp_path)
    with one_thread():
        res = CliRunner().invoke(app, ["train", str(cfg)])
    out = res.output.replace("\n", " ")
    assert res.exit_code == 2 and "disk is full" in out and "no earlier complete checkpoint" in out
    assert "Traceback" not in out


@pytest.mark.skipif(not os.environ.get("LORANK_RELIABILITY_TMPFS"), reason="set LORANK_RELIABILITY_TMPFS to a small "
                    "mounted filesystem to train into a really full disk")
def test_really_full_disk(tiny, trained_run):
    """Training on a filesystem that fills up for real (a tmpfs of ~480 kB: two tiny checkpoints fit)."""
    fs = Path(os.environ["LORANK_RELIABILITY_TMPFS"])
    run = fs / "run"
    shutil.rmtree(run, ignore_errors=True)
    cfg = write_config(fs.parent / "tmpfs_train.yaml", tiny, run, max_steps=4, every=1, eval_sets=False)
    try:
        with pytest.raises(SaveError) as e:
            train_here(cfg)
        assert "disk is full" in str(e.value)
        done = complete_checkpoints(run)
        assert done, "no checkpoint fit at all: make the filesystem a little larger"
        for c in done:  # every checkpoint counted complete loads
            adapter_tensors(c)
        if any(c.name == "checkpoint-2" for c in done):
            assert_bit_identical(adapter_tensors(run / "checkpoint-2"), adapter_tensors(trained_run / "checkpoint-2"))
        print(f"\nreally full disk: {e.value}\ncomplete: {[c.name for c in done]}, "
              f"on disk: {sorted(p.name for p in run.iterdir())}")
    finally:
        shutil.rmtree(run, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ OOM
class _OOMAbove(torch.nn.Module):
    """Wraps a model: raises an OOM error when a batch holds more than ``limit`` padded tokens."""

    def __init__(self, model, limit: int, message: str):
        super().__init__()
        self.model = model
        self.limit = limit
        self.message = message
        self.calls = self.ooms = 0

    def forward(self, input_ids, attention_mask, **kw):
        self.calls += 1
        if input_ids.numel() > self.limit:
            self.ooms += 1
            raise (torch.OutOfMemoryError(self.message) if "CUDA" in self.message else RuntimeError(self.message))
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw)


def _scorer_inputs(tiny):
    from lorank.data import load_trec_dl_dir
    from lorank.models.inputs import InputFormat, PairEncoder
    from lorank.models.loading import load_reranker

    lm = load_reranker(str(tiny["model"]), dtype="fp32")
    rs = load_trec_dl_dir(tiny["data"])
    enc = PairEncoder(lm.tokenizer, InputFormat())
    pairs = [(rs.queries[q], rs.passages[e.docid].text, "") for q in rs.run for e in rs.run[q]]
    return lm, enc, pairs


@pytest.mark.parametrize("message", ["CUDA out of memory. Tried to allocate 2.00 GiB",
                                     "[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: can't allocate memory"])
def test_oom_while_scoring_backs_off_and_continues(tiny, message):
    from lorank.inference.engine import Scorer

    lm, enc, pairs = _scorer_inputs(tiny)
    pad = int(lm.tokenizer.pad_token_id)
    with one_thread():
        ref = Scorer(lm.model, enc, pad, batch_tokens=100_000, bf16=False).score_pairs(pairs)
        limit = 600
        oom = _OOMAbove(lm.model, limit, message)
        sc = Scorer(oom, enc, pad, batch_tokens=100_000, bf16=False)
        got = sc.score_pairs(pairs)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    assert sc.oom_backoffs == oom.ooms >= 1
    assert sc.batch_tokens <= limit  # the lowered budget sticks for the rest of the call and later calls
    assert sc.oom_backoffs <= 10  # halving, not one retry per batch
    calls = oom.calls
    again = sc.score_pairs(pairs)
    assert oom.calls - calls <= len(pairs) and sc.oom_backoffs == oom.ooms  # no new OOM on the next call
    np.testing.assert_allclose(again, ref, rtol=0, atol=1e-5)


def test_oom_on_a_single_sequence_is_a_clear_error(tiny):
    from lorank.inference.engine import Scorer, ScoringMemoryError

    lm, enc, pairs = _scorer_inputs(tiny)
    sc = Scorer(_OOMAbove(lm.model, 1, "CUDA out of memory"), enc, int(lm.tokenizer.pad_token_id), bf16=False)
    with pytest.raises(ScoringMemoryError, match="single sequence"):
        sc.score_pairs(pairs[:3])


def test_non_oom_errors_are_not_swallowed(tiny):
    from lorank.inference.engine import Scorer

    lm, enc, pairs = _scorer_inputs(tiny)
    sc = Scorer(_OOMAbove(lm.model, 1, "mat1 and mat2 shapes cannot be multiplied"), enc,
                int(lm.tokenizer.pad_token_id), bf16=False)
    with pytest.raises(RuntimeError, match="shapes"):
        sc.score_pairs(pairs[:3])
    assert sc.oom_backoffs == 0
