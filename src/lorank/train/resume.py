"""A run folder across ``lorank train`` calls: what fixes a run's trajectory (:data:`RESUME_KEYS`), the refusal to
resume a checkpoint under a config that would splice two runs (:func:`check_resumable`), a fresh start's setting
aside of an old run (:func:`set_aside_previous`), the checkpoint a call goes on from with the trainer's counters put
back (:func:`resume_point`), and what each call records of itself in ``train_calls.jsonl`` (:func:`call_record`;
:func:`warn_precision_change` when it trains in another precision than the checkpoint it resumes)."""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from lorank.errors import ConfigError
from lorank.layout.checkpoints import checkpoint_dirs, complete_checkpoints, is_checkpoint_name, read_marker
from lorank.layout.run import PREVIOUS_OUTPUTS
from lorank.precision import cpu_bf16_capability, cpu_model
from lorank.train.config import TrainConfig

log = logging.getLogger("lorank.train")

#: what fixes a run's trajectory: resuming a checkpoint under other values would splice two different runs
#: (max_steps/epochs, checkpoints, eval and execution settings may change between calls)
RESUME_KEYS = ("model", "dtype", "head_init", "input", "lora", "data", "group_size", "unit", "loss", "lr",
               "head_lr", "warmup_ratio", "weight_decay", "batch_queries", "grad_accum", "seed", "temperature")


def resume_identity(cfg: TrainConfig) -> dict[str, Any]:
    ident = cfg.identity()
    return {k: ident[k] for k in RESUME_KEYS if k in ident}


def check_resumable(ckpt: Path, current: dict[str, Any]) -> None:
    """Refuse to resume ``ckpt`` under a config that changes the run's trajectory (checkpoints written before
    lorank recorded it carry no identity and are resumed as before; one written before the packed forward
    existed was trained with the HF forward)."""
    saved = read_marker(ckpt).get("resume_identity")
    if not saved:
        return
    saved = {"forward": "hf", **saved}
    diffs = [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
             if json.dumps(saved.get(k), sort_keys=True, default=str) != json.dumps(current.get(k), sort_keys=True,
                                                                                      default=str)]
    if diffs:
        raise ConfigError([f"{ckpt} was trained under another config; resuming it would splice two different runs:"]
                          + diffs + ["train into another output_dir, or pass --no-resume to set the old run's "
                                     "outputs aside (moved to previous-<time>/)"])


def check_last_checkpoint(out: Path, identity: dict[str, Any]) -> None:
    """Refuse to resume the run's last complete checkpoint under a config that changes its trajectory."""
    done = complete_checkpoints(out)
    if done:
        check_resumable(done[-1], identity)


def set_aside_previous(out: Path) -> Path | None:
    """A fresh start (``--no-resume``) in a folder that holds a run: move that run's checkpoints and results
    into ``previous-<time>/`` rather than mixing them with (or overwriting them by) the new run's."""
    old = checkpoint_dirs(out) + [out / n for n in PREVIOUS_OUTPUTS if (out / n).exists()]
    if not old:
        return None
    dest = out / time.strftime("previous-%Y%m%d-%H%M%S")
    n = 1
    while dest.exists():
        dest = out / f"{time.strftime('previous-%Y%m%d-%H%M%S')}-{n}"
        n += 1
    dest.mkdir()
    for p in old:
        os.replace(p, dest / p.name)
    log.warning("starting afresh: the previous run's %d checkpoints and results were moved to %s",
                sum(is_checkpoint_name(p) for p in old), dest)
    return dest


def prepare_output_dir(cfg: TrainConfig, resume: bool) -> Path:
    """The run folder, made; a fresh start sets an old run in it aside."""
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        set_aside_previous(out)
    return out


def resume_point(out: Path, resume: bool, trainer: Any) -> str | None:
    """The last complete checkpoint to resume from (None: from scratch), with the trainer's counters put back."""
    last = complete_checkpoints(out)
    resume_from = str(last[-1]) if (resume and last) else None
    if resume_from:
        log.info("resuming from %s", resume_from)
        counters = read_marker(Path(resume_from)).get("counters") or {}
        trainer.tokens_seen = int(counters.get("tokens_seen", 0))
        trainer.padded_tokens_seen = int(counters.get("padded_tokens_seen", 0))
        trainer.skipped_batches = int(counters.get("skipped_batches", 0))
    return resume_from


def call_record(done_step: int, dtype: str, precision_reason: str, use_cuda: bool, forward: str,
                allocator: str) -> dict[str, Any]:
    """This call's row of train_calls.jsonl: what it trains in and on, from which step. A run resumed on another
    machine can train its steps in two precisions (``dtype: auto``: bf16 on an AMX CPU, fp32 on an AVX2 one): the
    rows say which steps trained in which."""
    return {"from_step": done_step + 1, "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "dtype": dtype, "precision_reason": precision_reason, "device": "cuda" if use_cuda else "cpu",
            "cpu": cpu_model(), "bf16_capability": None if use_cuda else cpu_bf16_capability(),
            "torch_threads": torch.get_num_threads(), "forward": forward, "allocator": allocator}


def warn_precision_change(resume_from: str | None, dtype: str, precision_reason: str) -> None:
    """Say so when a resume trains in another precision than the checkpoint it goes on from (``dtype: auto`` on
    another kind of CPU): the run's steps will be in two precisions, which train_calls.jsonl records."""
    if not resume_from:
        return
    before = read_marker(Path(resume_from)).get("dtype")
    if before and before != dtype:
        log.warning("%s was trained in %s; this call trains in %s (%s): the run's steps will be in two precisions "
                    "(recorded in train_calls.jsonl); set dtype in the config, or LORANK_BF16, to keep one",
                    resume_from, before, dtype, precision_reason)
