"""``RerankTrainer``: HF ``Trainer`` with a grouped ranking loss, so torchrun/accelerate/DeepSpeed work unchanged."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable

import torch
from transformers import Trainer

from lorank.batching import causal_mask_arg, chunk_logits  # noqa: F401
from lorank.errors import LorankError
from lorank.layout.checkpoints import checkpoint_dir, discard_incomplete, marker_file, save_failure_message
from lorank.lora.adalora import is_adalora, load_training_state, save_training_state
from lorank.train.callbacks import DatasetEpoch, NonFiniteGuard, SaveError

log = logging.getLogger("lorank.train")


class NonFiniteLossError(LorankError):
    pass


def chunk_scores(model: Any, ch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The scores of a collated chunk's real rows (1-D, ``len(ch["index"])``): dummy rows that bucketed the
    chunk's row count (:func:`lorank.train.collator.pad_chunk`) are cut off here, so nothing reads them."""
    return chunk_logits(model, ch["input_ids"], ch["attention_mask"])[: ch["index"].numel()]


def forward_scores(model: Any, chunks: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Forward every chunk; return the scores in the collator's original order (1-D)."""
    parts, index = [], []
    for ch in chunks:
        parts.append(chunk_scores(model, ch))
        index.append(ch["index"])
    scores = torch.cat(parts)
    order = torch.cat(index)
    return scores[torch.argsort(order)]


CHECKPOINTING = ("none", "full", "selective")

#: ops whose outputs the selective policy keeps: attention kernels (every backend torch has)
_ATTENTION_OPS = tuple(getattr(torch.ops.aten, n).default for n in (
    "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention") if hasattr(torch.ops.aten, n))
_MATMUL_OPS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default)


def _selective_policy(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> Any:
    """Keep matmul outputs whose inner dimension is large (the frozen projections, LoRA's A: their output is
    rank-sized) and the attention outputs; recompute everything else: norms, activations, rotary, LoRA dropout
    and LoRA's B matmul (inner dimension = the rank, <= 64), which cost little to redo."""
    from torch.utils.checkpoint import CheckpointPolicy

    if op in _MATMUL_OPS:
        a = args[1] if op is torch.ops.aten.addmm.default else args[0]
        if a.shape[-1] > 64:
            return CheckpointPolicy.MUST_SAVE
    elif op in _ATTENTION_OPS:
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def enable_checkpointing(model: Any, mode: str | bool | None) -> str:
    """Activation checkpointing for a (PEFT-wrapped) HF model; returns the mode set.

    - ``full`` (or True): HF gradient checkpointing: each block keeps only its input and is recomputed in
      the backward (least memory, +1 forward).
    - ``selective``: each block keeps the outputs of its big matmuls (the frozen projections) and of
      attention, and recomputes only the cheap ops (norms, activation, rotary, dropout, LoRA's B matmul).
      About a third of the activation memory of no checkpointing, for a small fraction of full
      checkpointing's cost. Dropout masks are replayed exactly (the RNG state is restored), so gradients
      equal the plain step's.
    - ``none`` / False / None: nothing.
    """
    if mode in (None, False, "none"):
        return "none"
    if mode is True:
        mode = "full"
    if mode not in CHECKPOINTING:
        raise LorankError(f"unknown checkpointing mode {mode!r} (use one of {', '.join(CHECKPOINTING)})")
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        import functools

        from torch.utils.checkpoint import create_selective_checkpoint_contexts

        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _selective_policy)
    model.enable_input_require_grads()  # else no gradient reaches LoRA through checkpointed blocks
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return mode


class RerankTrainer(Trainer):
    """Adds: a grouped loss, token accounting, and a guard against NaN/inf losses."""

    def __init__(self, *args: Any, loss_fn: Callable, temperature: float = 1.0,
                 skip_nonfinite: bool = False, grad_cache: bool = False,
                 regulariser: Callable[[], torch.Tensor] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.grad_cache = grad_cache
        #: a term added to each training loss (AdaLoRA's orthogonality penalty: lorank.lora.adalora.orth_penalty)
        self.regulariser = regulariser
        self.loss_fn = loss_fn
        self.temperature = temperature
        self.skip_nonfinite = skip_nonfinite
        self.model_accepts_loss_kwargs = False
        self.tokens_seen = 0
        self.padded_tokens_seen = 0
        self.skipped_batches = 0
        #: None: check each loss on the host at once (CPU: no cost). True: on CUDA without skip_nonfinite, keep
        #: the check on the device and read it once at logging/saving/the end (:class:`NonFiniteGuard`), so a
        #: step has no host sync between its forward and backward
        self.defer_nonfinite_check: bool | None = None
        self._first_bad_step: torch.Tensor | None = None  # on the device: first non-finite step, -1 if none
        self.add_callback(DatasetEpoch(self))
        self.add_callback(NonFiniteGuard(self))

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        if "packed" in inputs:  # lorank.models.packed, installed on the model (works through DDP wrappers)
            scores = model(packed_batch=inputs["packed"]).view(inputs["n_groups"], inputs["group_size"])
        else:
            scores = forward_scores(model, inputs["chunks"]).view(inputs["n_groups"], inputs["group_size"])
        loss = self.loss_fn(scores, inputs.get("teacher"), temperature=self.temperature)
        if self.regulariser is not None and model.training:
            loss = loss + self.regulariser().to(loss.device, loss.dtype)
        self._count_tokens(inputs)
        if not self._finite_or_skip(loss):
            # a fresh zero with no path to the weights: no gradient reaches them (NaN * 0 would still be NaN)
            loss = torch.zeros((), device=scores.device, requires_grad=True)
        return (loss, {"scores": scores}) if return_outputs else loss

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        """HF's save, with a failure (full disk, I/O error) turned into a clear error; the half-written
        folder is removed (it would be ignored anyway: it has no completeness marker)."""
        ckpt = checkpoint_dir(self._get_output_dir(trial=trial), self.state.global_step)
        if marker_file(ckpt).exists():  # overwritten in place: incomplete until the new marker is written
            log.warning("overwriting %s", ckpt)
            marker_file(ckpt).unlink()
        try:
            super()._save_checkpoint(model, trial)
            if is_adalora(self.model) and self.args.should_save:  # PEFT's adapter is resized to the kept ranks
                save_training_state(self.model, ckpt)
        except LorankError:
            raise
        except Exception as e:  # a full disk shows as OSError, SafetensorError or torch's RuntimeError
            raise SaveError(save_failure_message(ckpt, e, discard_incomplete(ckpt))) from e

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        """HF's, except for AdaLoRA: its full-size training state (:func:`lorank.lora.adalora.load_training_state`),
        as PEFT's resized adapter does not load into the training modules."""
        if is_adalora(self.model):
            load_training_state(self.model, resume_from_checkpoint)
            return
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _prepare_input(self, data: Any) -> Any:
        """HF's, with pinned host tensors (the DataLoader pins batches on CUDA) copied ``non_blocking``: a
        blocking copy waits for the GPU to finish the previous step, so the host could not prepare the next
        one meanwhile. Safe: each batch is a fresh tensor that nothing writes after the copy is queued."""
        if (isinstance(data, torch.Tensor) and data.device.type == "cpu" and self.args.device.type == "cuda"
                and not self.is_deepspeed_enabled and data.is_pinned()):
            return data.to(self.args.device, non_blocking=True)
        return super()._prepare_input(data)

    def _count_tokens(self, inputs: dict[str, Any]) -> None:
        self.tokens_seen += int(inputs["num_tokens"])
        self.padded_tokens_seen += int(inputs["padded_tokens"])

    def _defers(self, loss: torch.Tensor) -> bool:
        if self.defer_nonfinite_check is None:
            return loss.device.type == "cuda" and not self.skip_nonfinite
        return bool(self.defer_nonfinite_check) and not self.skip_nonfinite

    def check_finite(self) -> None:
        """Read the deferred non-finite flag (one host sync) and stop if a loss was NaN/inf. Called before
        every save and log, and at the end, so no checkpoint holds weights updated by a non-finite loss."""
        bad = self._first_bad_step
        if bad is None:
            return
        step = int(bad)
        if step >= 0:
            raise NonFiniteLossError(
                f"loss became non-finite at step {step}; training stopped. The last saved checkpoint is intact. "
                "Lower the learning rate, or set skip_nonfinite: true to skip bad batches.")

    def _finite_or_skip(self, loss: torch.Tensor) -> bool:
        """True if the loss is finite. Otherwise count and skip the batch (``skip_nonfinite``) or stop.
        Deferred (:meth:`_defers`): record it on the device and return True; :meth:`check_finite` stops."""
        if self._defers(loss):
            # torch.full: the step number goes to the kernel as an argument (torch.tensor(x, device=cuda)
            # would be a blocking host-to-device copy, i.e. the very sync this avoids)
            step = torch.full((), self.state.global_step + 1, device=loss.device, dtype=torch.long)
            first = self._first_bad_step if self._first_bad_step is not None else torch.full_like(step, -1)
            self._first_bad_step = torch.where((first < 0) & ~torch.isfinite(loss.detach()), step, first)
            return True
        if torch.isfinite(loss):
            return True
        if not self.skip_nonfinite:
            raise NonFiniteLossError(
                f"loss became {loss.item()} at step {self.state.global_step + 1}; training stopped. The last saved "
                "checkpoint is intact. Lower the learning rate, or set skip_nonfinite: true to skip bad batches.")
        self.skipped_batches += 1
        log.warning("non-finite loss at step %d: batch skipped (%d so far)", self.state.global_step + 1,
                    self.skipped_batches)
        return False

    def training_step(self, model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> torch.Tensor:
        """With ``grad_cache``: score every chunk without a graph, take d(loss)/d(scores), then re-run each
        chunk with a graph and backpropagate its share. Peak memory is one chunk's activations instead of
        the whole step's, for the price of one extra forward (GradCache, Gao et al. 2021). Dropout masks are
        replayed exactly (the RNG state is saved per chunk), so gradients equal the plain step's."""
        if not self.grad_cache:
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        inputs = self._prepare_inputs(inputs)
        chunks = inputs["chunks"]
        states, parts = [], []
        devices = [d for d in {p.device for p in model.parameters()} if d.type == "cuda"]
        with torch.no_grad():
            for ch in chunks:
                states.append(_rng_state(devices))
                with self.compute_loss_context_manager():
                    parts.append(chunk_scores(model, ch))
        order = torch.cat([ch["index"] for ch in chunks])
        flat = torch.cat(parts)[torch.argsort(order)].float().detach().requires_grad_(True)
        scores = flat.view(inputs["n_groups"], inputs["group_size"])
        loss = self.loss_fn(scores, inputs.get("teacher"), temperature=self.temperature)
        self._count_tokens(inputs)
        if not self._finite_or_skip(loss):
            return torch.zeros((), device=flat.device)
        scaled = loss / self.current_gradient_accumulation_steps
        (grad,) = torch.autograd.grad(scaled, flat)
        for i, (ch, state) in enumerate(zip(chunks, states)):
            _set_rng_state(state, devices)
            sync = self.accelerator.no_sync(model) if i < len(chunks) - 1 else contextlib.nullcontext()
            with sync:
                with self.compute_loss_context_manager():
                    s = chunk_scores(model, ch)
                self.accelerator.backward((s.float() * grad[ch["index"]]).sum())
        return scaled.detach()


def _rng_state(devices: list[torch.device]) -> tuple[Any, list[Any]]:
    return torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in devices]


def _set_rng_state(state: tuple[Any, list[Any]], devices: list[torch.device]) -> None:
    torch.set_rng_state(state[0])
    for d, st in zip(devices, state[1]):
        torch.cuda.set_rng_state(st, d)
