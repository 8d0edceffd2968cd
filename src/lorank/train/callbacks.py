"""Trainer callbacks: JSONL log, rich progress, checkpoint metadata + checks, checkpoint evaluation."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from lorank.atomic import atomic_write_json

log = logging.getLogger("lorank.train")
COMPLETE_MARKER = "lorank_checkpoint.json"


class JsonlLog(TrainerCallback):
    """Appends one JSON object per logging step to ``train_log.jsonl`` (loss, lr, tokens/s)."""

    def __init__(self, path: Path, trainer_ref: Callable[[], Any]):
        self.path = path
        self.trainer_ref = trainer_ref
        self.t0 = time.perf_counter()
        self.tok0 = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.t0 = time.perf_counter()
        self.tok0 = self.trainer_ref().tokens_seen

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        tr = self.trainer_ref()
        el = time.perf_counter() - self.t0
        row = {"step": state.global_step, "epoch": state.epoch, **{k: v for k, v in logs.items()},
               "tokens": tr.tokens_seen, "padded_tokens": tr.padded_tokens_seen, "elapsed_s": round(el, 2),
               "tokens_per_s": round((tr.tokens_seen - self.tok0) / el, 1) if el > 0 else None,
               "skipped_batches": tr.skipped_batches}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class RichProgress(TrainerCallback):
    def __init__(self, trainer_ref: Callable[[], Any], enabled: bool = True):
        self.trainer_ref = trainer_ref
        self.enabled = enabled
        self.progress = None
        self.task = None
        self.t0 = 0.0
        self.tok0 = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not self.enabled or not state.is_world_process_zero:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
        self.progress.start()
        self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step, info="")
        self.t0 = time.perf_counter()
        self.tok0 = self.trainer_ref().tokens_seen

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if self.progress is None or not logs:
            return
        tr = self.trainer_ref()
        el = max(time.perf_counter() - self.t0, 1e-9)
        loss = logs.get("loss")
        info = (f"loss {loss:.4f} " if isinstance(loss, (int, float)) else "") + f"{(tr.tokens_seen - self.tok0) / el:,.0f} tok/s"
        self.progress.update(self.task, completed=state.global_step, info=info)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)
            self.progress.stop()
            self.progress = None


class CheckpointMeta(TrainerCallback):
    """After each save: check the adapter is not empty (ZeRO-3 trap) and write lorank's metadata
    marker last, so a checkpoint without the marker is known to be incomplete."""

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        check_adapter_nonempty(ckpt)
        atomic_write_json(ckpt / COMPLETE_MARKER, {**self.meta, "step": state.global_step})


def check_adapter_nonempty(ckpt: Path) -> int:
    from safetensors import safe_open

    from lorank.errors import LorankError

    f = ckpt / "adapter_model.safetensors"
    if not f.is_file():
        raise LorankError(f"{ckpt}: no adapter_model.safetensors was saved")
    with safe_open(str(f), "pt") as fh:
        keys = list(fh.keys())
        n = sum(_prod(fh.get_slice(k).get_shape()) for k in keys)
    if not keys or n == 0 or not any("lora_" in k for k in keys):
        raise LorankError(
            f"{f} holds an empty adapter ({len(keys)} tensors, {n} values). This is the known ZeRO-3 + LoRA "
            "saving bug (PEFT/DeepSpeed): gather the parameters before saving (stage3_gather_16bit_weights_on_model_save).")
    return n


def _prod(shape: Any) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class EvalOnSave(TrainerCallback):
    """Evaluate each checkpoint as it is saved (``eval.during_training``)."""

    def __init__(self, evaluate_fn: Callable[[Any, int, Path], None]):
        self.evaluate_fn = evaluate_fn

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if state.is_world_process_zero and model is not None:
            self.evaluate_fn(model, state.global_step, Path(args.output_dir) / f"checkpoint-{state.global_step}")
