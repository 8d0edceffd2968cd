"""Trainer callbacks: the checkpoint schedule, JSONL log, rich progress, checkpoint metadata + checks, checkpoint
evaluation, Ctrl-C, the divergence and non-finite-loss guards, the dataset's epoch, and the LoRA variants' steps
(DyLoRA's rank per step, AdaLoRA's budget)."""
from __future__ import annotations

import json
import logging
import math
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback

from lorank.atomic import append_line, atomic_write_text, atomic_write_json, read_jsonl
from lorank.errors import LorankError
from lorank.layout.adapter import WEIGHTS, weights_file
from lorank.layout.checkpoints import (checkpoint_dir, discard_incomplete, fsync_files, marker_file,
                                      save_failure_message)
from lorank.lora.adalora import update_budget
from lorank.lora.dylora import DyLoraTruncation, sample_rank

log = logging.getLogger("lorank.train")


class SaveError(LorankError):
    """A checkpoint or a result file could not be written (full disk, quota, I/O error)."""


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
        if state.is_world_process_zero and self.path.is_file():
            # a resumed run: drop the rows of steps redone after the checkpoint, and a line cut by a crash
            rows, bad = read_jsonl(self.path, missing_ok=True)
            keep = [r for r in rows if isinstance(r, dict) and r.get("step", 0) <= state.global_step]
            if bad or len(keep) != len(rows):
                atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if not logs or not state.is_world_process_zero:
            return
        tr = self.trainer_ref()
        el = time.perf_counter() - self.t0
        row = {"step": state.global_step, "epoch": state.epoch, **{k: v for k, v in logs.items()},
               "tokens": tr.tokens_seen, "padded_tokens": tr.padded_tokens_seen, "elapsed_s": round(el, 2),
               "tokens_per_s": round((tr.tokens_seen - self.tok0) / el, 1) if el > 0 else None,
               "skipped_batches": tr.skipped_batches}
        append_line(self.path, json.dumps(row))


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
    """After each save: check the adapter is not empty (ZeRO-3 trap), fsync every file, and write
    lorank's metadata marker last (with each file's size and the trainer's counters), so a checkpoint
    without a matching marker is known to be incomplete (see ``lorank.layout.checkpoints``)."""

    def __init__(self, meta: dict[str, Any], trainer_ref: Callable[[], Any] | None = None,
                 scheduled: Callable[[int, int], bool] | None = None):
        self.meta = meta
        self.trainer_ref = trainer_ref
        self.scheduled = scheduled

    def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        ckpt = checkpoint_dir(args.output_dir, state.global_step)
        tr = self.trainer_ref() if self.trainer_ref else None
        counters = ({"tokens_seen": tr.tokens_seen, "padded_tokens_seen": tr.padded_tokens_seen,
                     "skipped_batches": tr.skipped_batches} if tr is not None else {})
        scheduled = self.scheduled(state.global_step, state.max_steps) if self.scheduled else True
        try:
            check_adapter_nonempty(ckpt)
            files = fsync_files(ckpt)
            atomic_write_json(marker_file(ckpt), {**self.meta, "step": state.global_step, "scheduled": scheduled,
                                                       "counters": counters, "files": files})
        except OSError as e:
            raise SaveError(save_failure_message(ckpt, e, discard_incomplete(ckpt))) from e


class GracefulStop(TrainerCallback):
    """Ctrl-C (SIGINT) or SIGTERM during training: finish the current step, save a checkpoint, stop.
    A second Ctrl-C stops at once (the checkpoint being written, if any, stays incomplete and is ignored).

    Use as a context manager around ``trainer.train()``: the handlers are installed for that span only
    (and only from the main thread, where Python allows signal handlers)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.__exit__()
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: finishing this step, saving a checkpoint, then stopping "
                    "(Ctrl-C again stops at once, without the checkpoint)", self.signal_name)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        if self.signum is not None:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control


def check_adapter_nonempty(ckpt: Path) -> int:
    from safetensors import safe_open

    f = weights_file(ckpt)
    if not f.is_file():
        raise LorankError(f"{ckpt}: no {WEIGHTS} was saved")
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
    """Evaluate each scheduled checkpoint as it is saved (``eval.during_training``); a checkpoint saved only
    because training was interrupted is a resume point, not an evaluation point."""

    def __init__(self, evaluate_fn: Callable[[Any, int, Path], None],
                 scheduled: Callable[[int, int], bool] | None = None):
        self.evaluate_fn = evaluate_fn
        self.scheduled = scheduled

    def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
        if self.scheduled is not None and not self.scheduled(state.global_step, state.max_steps):
            return
        if state.is_world_process_zero and model is not None:
            self.evaluate_fn(model, state.global_step, checkpoint_dir(args.output_dir, state.global_step))


class TrainingDivergedStop(TrainerCallback):
    """The :class:`~lorank.train.config.DivergenceGuard` at work: after each logged loss, the mean of the last
    ``window`` steps' losses against the first full window's mean and the lowest so far. When it has climbed back
    more than ``climb`` of the way from that low to the first (after ``after`` steps, and once that low is at least
    ``min_fall`` of the first below it), training stops, and a
    checkpoint the schedule asked for at that step is not saved: the collapsed model must not become the resume
    point. :attr:`tripped` then describes what was seen."""

    def __init__(self, window: int, climb: float, after: int, min_fall: float = 0.25):
        self.window, self.climb, self.after, self.min_fall = window, climb, after, min_fall
        self.recent: deque[tuple[int, float]] = deque()  # the logged (step, loss) of the last ``window`` steps
        self.first: float | None = None  # the mean of the first full window
        self.best: tuple[float, int] | None = None  # (mean, last step of its window)
        self.tripped: dict[str, Any] | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        # a resumed run: the logged losses up to the checkpoint count (HF keeps them in state.log_history)
        self.recent.clear()
        self.first = self.best = None
        for r in state.log_history:
            if "loss" in r and "step" in r and r["step"] <= state.global_step:
                self._push(int(r["step"]), float(r["loss"]), check=False)

    def _push(self, step: int, loss: float, check: bool) -> bool:
        """Add one logged loss; True when the guard trips on it."""
        self.recent.append((step, loss))
        while self.recent[0][0] <= step - self.window:
            self.recent.popleft()
        if step < self.window:  # not a full window yet
            return False
        mean = sum(v for _, v in self.recent) / len(self.recent)
        if mean != mean:  # NaN: NonFiniteGuard's business
            return False
        if self.first is None:
            self.first = mean
        fell = self.best is not None and self.first - self.best[0] >= self.min_fall * self.first
        climbed = (mean - self.best[0]) / (self.first - self.best[0]) if fell and self.first > self.best[0] else 0.0
        if check and step > self.after and climbed > self.climb:
            self.tripped = {"step": step, "window": f"{step - self.window + 1}-{step}", "mean_loss": round(mean, 4),
                            "lowest_mean_loss": round(self.best[0], 4),
                            "lowest_window": f"{self.best[1] - self.window + 1}-{self.best[1]}",
                            "first_mean_loss": round(self.first, 4),
                            "climbed": round(climbed, 3),
                            "climb": self.climb}
            return True
        if self.best is None or mean < self.best[0]:
            self.best = (mean, step)
        return False

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> Any:
        if not logs or "loss" not in logs or self.tripped is not None:
            return control
        if self._push(state.global_step, float(logs["loss"]), check=True):
            log.error("the loss climbed back: steps %s mean %.3f is %.0f%% of the way from the lowest %d-step mean %.3f "
                      "(steps %s) back to the first %.3f (limit %.0f%%); stopping without saving this step",
                      self.tripped["window"], self.tripped["mean_loss"], 100 * self.tripped["climbed"], self.window,
                      self.tripped["lowest_mean_loss"], self.tripped["lowest_window"], self.tripped["first_mean_loss"],
                      100 * self.climb)
            control.should_save = False
            control.should_training_stop = True
        return control


class NonFiniteGuard(TrainerCallback):
    """Reads the trainer's deferred non-finite-loss flag (:meth:`RerankTrainer.check_finite`) at the steps
    where the host waits anyway: before a log or a save (the save comes after ``on_step_end``), and at the
    end of training. Added last, so it sees the ``should_save`` set by the checkpoint schedule."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        if (control.should_save or control.should_log or control.should_training_stop
                or state.global_step >= state.max_steps):
            self.trainer.check_finite()
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.trainer.check_finite()


class DatasetEpoch(TrainerCallback):
    """Tell the training dataset its epoch at the start of every epoch.

    accelerate forwards ``set_epoch`` to the dataset only when no sampler in the chain takes it; after a
    mid-epoch resume the dataloader is rebuilt around a ``SkipBatchSampler``, whose inner sampler does take
    it, so the dataset kept epoch 0 and a run resumed in epoch >= 1 drew other negatives than the
    uninterrupted run. Setting it here makes the resumed run bit-identical."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        ds = self.trainer.train_dataset
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(math.floor((state.epoch or 0) + 1e-6))


class CheckpointSchedule(TrainerCallback):
    """Save at an explicit list of steps (e.g. 10,25,50,100,200) and at the last step."""

    def __init__(self, steps: list[int] | None, every: int | None):
        self.steps = set(steps or [])
        self.every = every

    def is_scheduled(self, step: int, max_steps: int) -> bool:
        return step in self.steps or bool(self.every and step % self.every == 0) or step >= max_steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        if self.is_scheduled(state.global_step, state.max_steps):
            control.should_save = True
        return control


class DyLoraRanks(TrainerCallback):
    """DyLoRA: before each optimizer step (all its micro-batches), the rank ``b`` it trains at, drawn from the run's
    seed and the step alone (:func:`lorank.lora.dylora.sample_rank`), so a resumed run draws the same ranks.
    ``drawn`` counts the ranks of this call's steps (the summary records it)."""

    def __init__(self, truncation: DyLoraTruncation, seed: int):
        self.truncation = truncation
        self.seed = seed
        self.drawn: dict[int, int] = {}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        b = sample_rank(self.seed, state.global_step + 1, self.truncation.rank)
        self.truncation.set_rank(b)
        self.drawn[b] = self.drawn.get(b, 0) + 1

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.truncation.set_rank(None)


class AdaLoraBudget(TrainerCallback):
    """AdaLoRA: PEFT's ``update_and_allocate`` after each optimizer step, before the gradients are zeroed (its
    importance scores read them), at the step's 0-based index, as PEFT's example loop calls it."""

    def __init__(self, model: Any):
        self.model = model

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        update_budget(self.model, state.global_step)
