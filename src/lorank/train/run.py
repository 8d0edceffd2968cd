"""``lorank.train(config)``: the Python twin of ``lorank train CONFIG.yaml``.

:func:`train` reads as its steps: decide the precision, prepare the output folder, build the training pools, put
LoRA on the base model, refuse a checkpoint trained under another config, record the run's config, set up the
trainer and its callbacks, train (or resume), evaluate what is still to evaluate, write the summary.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
from transformers import TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from lorank import __version__
from lorank.adapters import load_adapter_weights
from lorank.allocator import active_allocator
from lorank.atomic import atomic_write_json
from lorank.errors import ConfigError, LorankError
from lorank.layout.checkpoints import complete_checkpoints, read_marker, step_of
from lorank.layout.run import append_train_call, config_file, read_metrics, summary_file, train_log_file
from lorank.lora.spec import LoraSpec, apply_lora
from lorank.models.attention import apply_attention_backend
from lorank.models.inputs import InputFormat, PairEncoder
from lorank.models.loading import load_reranker
from lorank.models.packed import install_packed_forward, packed_support, window_limit
from lorank.precision import decide
from lorank.lora.adalora import orth_penalty
from lorank.lora.dylora import DyLoraTruncation
from lorank.train.callbacks import (AdaLoraBudget, CheckpointMeta, CheckpointSchedule, DyLoraRanks, EvalOnSave,
                                   GracefulStop, JsonlLog, RichProgress, SaveError, TrainingDivergedStop)
from lorank.train.checkpoint_eval import CheckpointEvaluator, plot_checkpoint_curve
from lorank.train.collator import GroupCollator, pad_multiple_for
from lorank.train.config import TrainConfig
from lorank.train.curve import CurveEvaluator, CurveOnStep
from lorank.train.data_sources import build_pools
from lorank.train.groups import GroupDataset
from lorank.train.losses import get_loss
from lorank.lora.dropout import use_fast_dropout
from lorank.lora.sites import disable_input_cast, target_counts
from lorank.train.resume import (call_record, check_last_checkpoint, prepare_output_dir, resume_identity,
                                 resume_point, warn_precision_change)
from lorank.train.trainer import RerankTrainer, enable_checkpointing

log = logging.getLogger("lorank.train")


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    wall_s: float
    tokens: int
    padded_tokens: int
    tokens_per_s: float
    checkpoints: list[Path]
    metrics: list[dict[str, Any]] = field(default_factory=list)
    plot: Path | None = None
    skipped_batches: int = 0
    interrupted: str | None = None  # the signal's name when Ctrl-C / SIGTERM stopped training early


class TrainingDiverged(LorankError):
    """The divergence guard stopped training: the loss climbed back (``divergence_guard`` in the config)."""

    def __init__(self, message: str, result: "TrainResult"):
        super().__init__(message)
        self.result = result


class TrainingInterrupted(LorankError):
    """Training stopped early on Ctrl-C / SIGTERM, after saving a checkpoint; the same command resumes."""

    def __init__(self, message: str, result: "TrainResult"):
        super().__init__(message)
        self.result = result

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as shells expect: 130 after Ctrl-C (SIGINT), 143 after SIGTERM."""
        try:
            return 128 + signal.Signals[str(self.result.interrupted)].value
        except KeyError:
            return 130


@dataclass
class _Model:
    """The model as this call trains it, and the choices made on the way (config.json records them)."""
    loaded: Any  # lorank.models.loading.LoadedModel: the base with its score head, its tokenizer, source and arch
    spec: LoraSpec
    model: Any  # the PEFT model
    dtype: str
    precision_reason: str
    checkpointing: str  # none / full / selective
    use_cuda: bool
    forward: str  # packed / hf
    forward_reason: str

    @property
    def pad_id(self) -> int:
        return int(self.loaded.tokenizer.pad_token_id)


@dataclass
class _Session:
    """This call's trainer, what the end of training reads back from its callbacks (the stop signal, the divergence
    guard, the evaluators), and the execution choices the summary records."""
    trainer: RerankTrainer
    stop: GracefulStop
    guard: TrainingDivergedStop | None
    evaluator: CheckpointEvaluator | None
    curve: CurveEvaluator | None
    attention: Any
    optim: str
    allocator: str
    dylora: DyLoraRanks | None = None  # DyLoRA's rank per step (lora.variant: dylora)


@dataclass
class _Call:
    """This call's share of the run: the checkpoint it resumed from, and what it trained and spent."""
    resume_from: str | None
    done_step: int  # the step of that checkpoint (0 from scratch)
    tokens0: int  # the tokens seen before this call: its rate counts its own
    wall: float = 0.0
    eval_s: float = 0.0  # dev and curve scoring, which is not training time
    planned: int = 0  # the optimizer steps the run is to make (HF's count)

    @property
    def train_s(self) -> float:
        return max(self.wall - self.eval_s, 1e-9)


def software_versions() -> dict[str, str]:
    return {"lorank": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def set_threads() -> None:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, n))


def train(config: TrainConfig | str | Path, *, resume: bool = True, progress: bool = True,
          overrides: dict[str, Any] | None = None) -> TrainResult:
    """Train the LoRA reranker ``config`` describes into its ``output_dir``. ``resume``: go on from the last complete
    checkpoint there (else the old run's outputs are set aside). Raises :class:`TrainingDiverged` or
    :class:`TrainingInterrupted` (each with the result) when training stopped early."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_yaml(config, overrides)
    dtype, precision_reason = _precision(cfg)
    set_threads()
    # mining guards every set this run evaluates on, beside the protocol's (lorank.mine.protocol)
    pools, stats = build_pools(cfg.data, cfg.data_root, evaluated=[*cfg.eval.sets, *cfg.eval.test_sets],
                               test_sets=cfg.eval.test_sets)
    fmt = InputFormat(**cfg.input.model_dump())
    m = _model_to_train(cfg, dtype, precision_reason)
    out = prepare_output_dir(cfg, resume)  # after the data and the model load: a bad path leaves no empty folder
    identity = {**resume_identity(cfg), "forward": m.forward}
    if resume:  # before anything is written into the run folder: its config.json must stay the old run's if refused
        check_last_checkpoint(out, identity)
    if m.forward == "packed":
        install_packed_forward(m.model)
    encoder = PairEncoder(m.loaded.tokenizer, fmt)
    dataset = GroupDataset(pools, cfg.group_size, cfg.seed, cfg.unit)
    atomic_write_json(config_file(out), _resolved_config(cfg, m, stats))
    s = _session(cfg, m, out, dataset, encoder, _checkpoint_meta(cfg, m, identity), progress)
    resume_from = resume_point(out, resume, s.trainer)
    call = _Call(resume_from, step_of(Path(resume_from)) if resume_from else 0, s.trainer.tokens_seen)
    call.planned = _planned_steps(s.trainer, cfg)
    if s.trainer.is_world_process_zero() and call.done_step < call.planned:  # a call with steps to train
        append_train_call(out, call_record(call.done_step, m.dtype, m.precision_reason, m.use_cuda, m.forward,
                                           s.allocator))
        warn_precision_change(call.resume_from, m.dtype, m.precision_reason)
    t0 = time.perf_counter()
    _fit(s, cfg, out, call)
    steps = max(s.trainer.state.global_step, call.done_step)
    call.wall = time.perf_counter() - t0
    ckpts = complete_checkpoints(out)
    _evaluate_after_training(s, cfg, m.model, ckpts, steps)
    plot = (plot_checkpoint_curve(out, title=f"{cfg.model} LoRA {m.spec.short_name()}",
                                  baselines=s.evaluator.first_stage()) if s.evaluator else None)
    call.eval_s = _eval_seconds(s, cfg)
    res = _result(s, call, out, steps, ckpts, plot)
    atomic_write_json(summary_file(out), _summary(res, s, cfg, m, stats, call))
    _raise_if_stopped(res, s, cfg, out)
    return res


def _precision(cfg: TrainConfig) -> tuple[str, str]:
    """The dtype to train in and why: the config's, else the one precision decision ($LORANK_BF16, else the
    hardware: lorank.precision)."""
    if cfg.dtype != "auto":
        return cfg.dtype, "set in the config"
    decision = decide(None)
    return decision.name, decision.reason


def _model_to_train(cfg: TrainConfig, dtype: str, precision_reason: str) -> _Model:
    """The base model with its score head and LoRA, trainable parameters in fp32, and the execution choices made:
    fast dropout, the LoRA input cast, activation checkpointing, the training forward."""
    loaded = load_reranker(cfg.model, dtype=dtype, head_init=cfg.head_init,
                           trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    spec = cfg.lora
    model = apply_lora(loaded.model, spec, total_step=cfg.max_steps if cfg.max_steps > 0 else None)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.fast_dropout:
        use_fast_dropout(model)  # LoRA dropout masks from 64-bit random words: ~2x cheaper on CPU, 1-byte masks
    if dtype == "bf16":  # the Trainer runs under bf16 autocast: PEFT's fp32 input copies are waste
        disable_input_cast(model)
    checkpointing = enable_checkpointing(model, cfg.gradient_checkpointing)  # none / full / selective
    use_cuda = torch.cuda.is_available()
    forward, forward_reason = choose_forward(cfg, model, checkpointing, use_cuda)
    return _Model(loaded, spec, model, dtype, precision_reason, checkpointing, use_cuda, forward, forward_reason)


def _resolved_config(cfg: TrainConfig, m: _Model, stats: Any) -> dict[str, Any]:
    """What the run's config.json records: the config, the model as loaded, the pools, the versions, the LoRA scale,
    the precision and the execution choices."""
    spec = m.spec
    return {"config": cfg.model_dump(), "model_path": m.loaded.path, "model_source": m.loaded.source.describe(),
            "arch": m.loaded.arch.family, "pad_token_id": m.pad_id, "lora_targets": target_counts(m.model),
            "pools": stats.__dict__, "versions": software_versions(),
            # the LoRA scale as trained: PEFT's lora_alpha is the policy's number at this rank
            "lora_alpha": {"policy": spec.alpha_policy, "given": spec.alpha, "alpha_rank": spec.alpha_rank,
                           "effective": spec.effective_alpha(), "scaling": spec.effective_alpha() / spec.rank},
            "precision": {"dtype": m.dtype, "reason": m.precision_reason},
            "execution": {"forward": m.forward, "forward_reason": m.forward_reason,
                          "gradient_checkpointing": m.checkpointing, "grad_cache": cfg.grad_cache,
                          "memory_gb": _memory_gb()}}


def _checkpoint_meta(cfg: TrainConfig, m: _Model, identity: dict[str, Any]) -> dict[str, Any]:
    """What every checkpoint's marker records beside its files and counters: what loading and resuming it need."""
    return {"base_model": cfg.model, "model_path": m.loaded.path, "input": cfg.input.model_dump(),
            "lora": {**m.spec.to_dict(), "effective_alpha": m.spec.effective_alpha()}, "dtype": m.dtype,
            "head_init": cfg.head_init, "pad_token_id": m.pad_id,
            "resume_identity": identity}


def _session(cfg: TrainConfig, m: _Model, out: Path, dataset: GroupDataset, encoder: PairEncoder,
             meta: dict[str, Any], progress: bool) -> _Session:
    """The attention kernel, the HF arguments and optimizer, the callbacks (checkpoint schedule, Ctrl-C, the marker,
    the JSONL log, progress, the divergence guard, the evaluators) and the trainer over them."""
    attention = apply_attention_backend(cfg.attention_backend, "cuda" if m.use_cuda else "cpu",
                                        torch.bfloat16 if m.dtype == "bf16" else torch.float32)
    optim = cfg.resolved_optim(m.use_cuda)
    args = _training_args(cfg, out, m, optim)
    optimizers = _optimizers(cfg, m.model, optim)
    trainer_box: list[RerankTrainer] = []
    save_every = cfg.checkpoints.every if cfg.checkpoints.every and not cfg.checkpoints.steps else None
    schedule = CheckpointSchedule(cfg.checkpoints.steps, save_every)
    stop = GracefulStop()
    callbacks: list[Any] = [schedule, stop, CheckpointMeta(meta, lambda: trainer_box[0], schedule.is_scheduled),
                            JsonlLog(train_log_file(out), lambda: trainer_box[0]),
                            RichProgress(lambda: trainer_box[0], enabled=progress)]
    guard = (TrainingDivergedStop(**cfg.divergence_guard.model_dump()) if cfg.divergence_guard is not None else None)
    if guard is not None:
        callbacks.append(guard)
    evaluator, curve, eval_callbacks = _evaluators(cfg, out, encoder, m.pad_id, schedule.is_scheduled)
    variant_callbacks, regulariser = _variant_steps(cfg, m.model)
    callbacks += variant_callbacks
    trainer = RerankTrainer(model=m.model, args=args, train_dataset=dataset,
                            data_collator=GroupCollator(encoder, m.pad_id, cfg.resolved_chunk_tokens(m.use_cuda),
                                                        pad_multiple_for("cuda" if m.use_cuda else "cpu"),
                                                        cfg.resolved_shape_buckets(m.use_cuda),
                                                        packed=m.forward == "packed"),
                            loss_fn=get_loss(cfg.loss), temperature=cfg.temperature,
                            skip_nonfinite=cfg.skip_nonfinite, grad_cache=cfg.grad_cache, regulariser=regulariser,
                            callbacks=callbacks + eval_callbacks, optimizers=optimizers)
    trainer_box.append(trainer)
    for cb in (PrinterCallback, ProgressCallback):  # lorank's own progress and JSONL log replace them
        trainer.remove_callback(cb)
    dylora = next((cb for cb in variant_callbacks if isinstance(cb, DyLoraRanks)), None)
    return _Session(trainer, stop, guard, evaluator, curve, attention, optim, _allocator(m.use_cuda), dylora)


def _variant_steps(cfg: TrainConfig, model: Any) -> tuple[list[Any], Any]:
    """The LoRA variant's part of each step: DyLoRA's rank per step (its truncation installed on the model),
    AdaLoRA's budget update after each optimizer step and its orthogonality penalty in the loss; else nothing."""
    spec = cfg.lora
    if spec.variant == "dylora":
        mode = spec.dylora.mode if spec.dylora is not None else "full"
        return [DyLoraRanks(DyLoraTruncation(model, mode), cfg.seed)], None
    if spec.variant == "adalora":
        return [AdaLoraBudget(model)], lambda: orth_penalty(model)
    return [], None


def _training_args(cfg: TrainConfig, out: Path, m: _Model, optim: str) -> TrainingArguments:
    """HF's arguments; lorank's schedule decides the saves (``save_steps`` only keeps HF from saving on its own)."""
    use_cuda = m.use_cuda
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_queries,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio if cfg.warmup_ratio < 1 else int(cfg.warmup_ratio),
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, seed=cfg.seed,
        data_seed=cfg.seed, bf16=m.dtype == "bf16", use_cpu=not use_cuda, save_strategy="steps",
        save_steps=10**9, logging_steps=cfg.resolved_log_every(use_cuda), report_to=cfg.report_to, optim=optim,
        torch_compile=cfg.compile,  # off by default: unmeasured; shapes recompile unless bucketed
        logging_nan_inf_filter=not use_cuda,  # its per-step isnan() is a host sync; RerankTrainer guards the loss
        remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_workers, ddp_find_unused_parameters=False,
        disable_tqdm=True, lr_scheduler_type="linear", save_total_limit=None,
    )


def _optimizers(cfg: TrainConfig, model: Any, optim: str) -> tuple[Any, Any]:
    """(None, None): HF builds the optimizer; with ``head_lr``, an AdamW with the score head's own learning rate."""
    if cfg.head_lr is None:
        return None, None
    head = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    return (torch.optim.AdamW([{"params": lora, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                              lr=cfg.lr, weight_decay=cfg.weight_decay, fused=optim == "adamw_torch_fused"), None)


def _evaluators(cfg: TrainConfig, out: Path, encoder: PairEncoder, pad_id: int, scheduled: Any
                ) -> tuple[CheckpointEvaluator | None, CurveEvaluator | None, list[Any]]:
    """The checkpoints' evaluator (dev sets at each scheduled checkpoint, test sets once trained), the dense curve's,
    and the callbacks that call them during training."""
    evaluator, curve, callbacks = None, None, []
    if cfg.eval.sets or cfg.eval.test_sets:
        evaluator = CheckpointEvaluator(encoder, pad_id, cfg.eval, out, cfg.data_root)
        if cfg.eval.during_training and cfg.eval.sets:
            callbacks.append(EvalOnSave(evaluator, scheduled))
    if cfg.eval.curve is not None:  # the dense cheap curve of the model in memory (curve.jsonl), not checkpoints
        curve = CurveEvaluator(encoder, pad_id, cfg.eval, out, cfg.data_root)
        callbacks.append(CurveOnStep(curve))
    return evaluator, curve, callbacks


def _allocator(use_cuda: bool) -> str:
    allocator = active_allocator()
    if allocator == "glibc" and not use_cuda:
        log.warning("training on glibc's malloc, which fragments and slows a long CPU run as it ages (~1.3x here: "
                    "lorank.allocator); the lorank command preloads tcmalloc when libtcmalloc-minimal4 is installed")
    return allocator


def _fit(s: _Session, cfg: TrainConfig, out: Path, call: _Call) -> None:
    """Train up to the planned step, under the Ctrl-C / SIGTERM handlers; nothing when resumed from the last."""
    planned = call.planned
    if call.resume_from and call.done_step >= planned:
        # HF would run one step past the end when resumed from the final checkpoint: nothing left to train
        log.info("%s is the final checkpoint (%d of %d steps): nothing left to train", call.resume_from,
                 call.done_step, planned)
        return
    try:
        with s.stop:
            s.trainer.train(resume_from_checkpoint=call.resume_from)
    except OSError as e:  # writing an evaluation run / metrics / log failed (checkpoint saves raise SaveError)
        raise SaveError(_write_failure_message(out, e)) from e


def _evaluate_after_training(s: _Session, cfg: TrainConfig, model: Any, ckpts: list[Path], steps: int) -> None:
    """The checkpoints not evaluated yet (after-training mode, or resumed runs), then the test sets once, when
    training finished."""
    ev = s.evaluator
    if ev is not None and s.stop.signum is None:
        _evaluate_missing(ev, model, ckpts)
    finished = s.stop.signum is None and not (s.guard is not None and s.guard.tripped is not None)
    if ev is not None and ev.test_sets and finished and ckpts and step_of(ckpts[-1]) >= steps:
        _evaluate_on_test(ev, model, ckpts, cfg.eval.test_steps)  # once, on frozen weights; skipped when done


def _eval_seconds(s: _Session, cfg: TrainConfig) -> float:
    """The scoring time spent inside the training loop: checkpoint evaluations during training, curve points."""
    eval_s = s.evaluator.total_s if (s.evaluator and cfg.eval.during_training) else 0.0
    return eval_s + (s.curve.total_s if s.curve is not None else 0.0)  # curve points are scored during training too


def _result(s: _Session, call: _Call, out: Path, steps: int, ckpts: list[Path], plot: Path | None) -> TrainResult:
    tr = s.trainer
    return TrainResult(out, steps, call.wall, tr.tokens_seen, tr.padded_tokens_seen,
                       (tr.tokens_seen - call.tokens0) / call.train_s, ckpts, read_metrics(out), plot,
                       tr.skipped_batches, s.stop.signal_name or None)


def _summary(res: TrainResult, s: _Session, cfg: TrainConfig, m: _Model, stats: Any, call: _Call) -> dict[str, Any]:
    """train_summary.json: the run's totals and this call's rates, the scoring time, the execution choices."""
    ev, wall, eval_s, cuda = s.evaluator, call.wall, call.eval_s, m.use_cuda
    return {
        "steps": res.steps, "wall_s": round(wall, 2), "eval_in_training_s": round(eval_s, 2),
        "train_s": round(call.train_s, 2), "tokens": res.tokens, "padded_tokens": res.padded_tokens,
        "tokens_per_s": round(res.tokens_per_s, 1), "skipped_batches": res.skipped_batches,
        # steps and tokens are the run's totals; wall_s, train_s and tokens_per_s are this call's, which on a
        # resume is only what it trained since its checkpoint (the earlier calls' rates are in train_log.jsonl)
        "steps_this_call": res.steps - call.done_step, "tokens_this_call": s.trainer.tokens_seen - call.tokens0,
        "eval_share": round(eval_s / wall, 4) if wall > 0 else 0.0,
        **({"curve_s": round(s.curve.total_s, 2)} if s.curve is not None else {}),
        **({"test_eval_s": round(ev.test_s, 2)} if ev is not None and ev.test_sets else {}),
        **({"protocol": stats.protocol} if stats.protocol else {}),  # per msmarco source: sets guarded, dropped
        "execution": {"device": "cuda" if cuda else "cpu", "attention_backend": s.attention,
                      "shape_buckets": cfg.resolved_shape_buckets(cuda),
                      "chunk_tokens": cfg.resolved_chunk_tokens(cuda), "optim": s.optim,
                      "log_every": cfg.resolved_log_every(cuda), "compile": cfg.compile, "forward": m.forward,
                      "allocator": s.allocator},
        **({"dylora_ranks": dict(sorted(s.dylora.drawn.items()))} if s.dylora is not None else {}),
        "checkpoints": [c.name for c in res.checkpoints], "resumed_from": call.resume_from,
        "interrupted": res.interrupted, "diverged": s.guard.tripped if s.guard is not None else None}


def _raise_if_stopped(res: TrainResult, s: _Session, cfg: TrainConfig, out: Path) -> None:
    """TrainingDiverged when the divergence guard stopped training, TrainingInterrupted on Ctrl-C / SIGTERM."""
    ckpts = res.checkpoints
    if s.guard is not None and s.guard.tripped is not None:
        t = s.guard.tripped
        raise TrainingDiverged(
            f"{out}: training stopped at step {t['step']}: the mean loss of steps {t['window']} ({t['mean_loss']}) has "
            f"climbed back {t['climbed']:.0%} of the way from the lowest {cfg.divergence_guard.window}-step mean "
            f"({t['lowest_mean_loss']}, steps {t['lowest_window']}) to the first ({t['first_mean_loss']}; limit "
            f"{t['climb']:.0%}): the scorer is collapsing. Checkpoints saved after step "
            f"{int(t['window'].split('-')[0]) - 1} were trained while the loss rose ({[c.name for c in ckpts][-3:]} are the "
            "last). Lower lr (and head_lr) and train again into a new output_dir; divergence_guard: null turns "
            "this check off.", res)
    if s.stop.signum is not None:
        last = ckpts[-1] if ckpts else None
        saved = (f"{last} is saved" if last is not None and step_of(last) == res.steps
                 else f"the last complete checkpoint is {last}" if last else "no checkpoint was saved")
        raise TrainingInterrupted(f"training interrupted by {res.interrupted} at step {res.steps}/"
                                  f"{s.trainer.state.max_steps}: {saved}; run the same command to resume.", res)


def choose_forward(cfg: TrainConfig, model: Any, checkpointing: str, cuda: bool) -> tuple[str, str]:
    """The training forward (``packed`` or ``hf``, :mod:`lorank.models.packed`) and why."""
    if cfg.forward == "hf":
        return "hf", "set in the config"
    variant = cfg.lora.variant
    if variant in ("dylora", "adalora"):  # before packed_support, which reads plain LoRA layers only
        why = (f"lora.variant: {variant} (the packed forward reads each projection's full A and B; "
               + ("DyLoRA's per-step truncation" if variant == "dylora" else "AdaLoRA's SVD layers (P, Lambda, Q)")
               + " run in PEFT's forward)")
        if cfg.forward == "packed":
            raise ConfigError(f"forward: packed is not available here: {why} (use forward: auto or hf)")
        log.info("training forward: hf, %s", why)
        return "hf", "auto: " + why
    window = window_limit(model.config)
    blockers = [why for why in (packed_support(model),
                                f"input.max_len {cfg.input.max_len} > the sliding window ({window} tokens), which the "
                                "packed forward does not apply" if window and cfg.input.max_len > window else None,
                                f"gradient_checkpointing: {checkpointing}" if checkpointing != "none" else None,
                                "grad_cache: true" if cfg.grad_cache else None,
                                "compile: true" if cfg.compile else None) if why]
    if cfg.forward == "packed":
        if blockers:
            raise ConfigError(f"forward: packed is not available here: {'; '.join(blockers)} (use forward: auto or hf)")
        return "packed", "set in the config"
    if blockers:
        return "hf", "auto: " + "; ".join(blockers)
    if cuda:
        return "hf", "auto: CUDA (the packed forward is measured on CPU only; set forward: packed to use it)"
    return "packed", "auto: CPU, model covered"


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _planned_steps(trainer: Any, cfg: TrainConfig) -> int:
    """The optimizer steps this run is to make (``max_steps``, or the epochs' worth), as HF computes it."""
    if hasattr(trainer, "set_initial_training_values"):
        return int(trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1])
    # a transformers version without it: the same arithmetic, single process
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(len(trainer.train_dataset) / cfg.batch_queries)
    return math.ceil(cfg.epochs * max(math.ceil(batches / cfg.grad_accum), 1))


def _write_failure_message(out: Path, e: OSError) -> str:
    why = "the disk is full" if e.errno == errno.ENOSPC else f"{type(e).__name__}: {e}"
    done = complete_checkpoints(out, warn=False)
    safe = (f"the checkpoints are intact (last complete: {done[-1].name}); free space and run the same command "
            "to resume") if done else "no complete checkpoint was saved yet"
    return f"could not write {getattr(e, 'filename', None) or 'a result file'} in {out}: {why}. Files are written " \
           f"atomically, so none is half-written; {safe}."


def _evaluate_missing(evaluator: Any, model: Any, ckpts: list[Path]) -> None:
    done = evaluator.done_steps()
    todo = [c for c in ckpts if read_marker(c).get("scheduled", True)  # not the checkpoints saved on Ctrl-C
            and any((step_of(c), s) not in done for s in evaluator.sets)]
    if not todo:
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
    for c in todo:
        load_adapter_weights(model, c)
        evaluator(model, step_of(c), c)
    model.load_state_dict(current, strict=False)


def _evaluate_on_test(evaluator: Any, model: Any, ckpts: list[Path], test_steps: Any = "final") -> None:
    """Score the test sets (``eval.test_sets``) once per chosen checkpoint, after training has finished: the final one
    (``test_steps: final``) or the saved steps listed, each on its own weights (loaded: a run resumed from its final
    checkpoint trained nothing in this call), unless that is already done; the model's weights are put back."""
    by_step = {step_of(c): c for c in ckpts}
    wanted = [step_of(ckpts[-1])] if test_steps == "final" else sorted(set(test_steps) | {step_of(ckpts[-1])})
    missing = [s for s in wanted if s not in by_step]
    if missing:
        log.warning("eval.test_steps: no saved checkpoint at step(s) %s; the test sets score the others", missing)
    done = evaluator.done_steps()
    todo = [s for s in wanted if s in by_step and not all((s, t) in done for t in evaluator.test_sets)]
    if not todo:
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
    for step in todo:
        load_adapter_weights(model, by_step[step])
        evaluator.score_test(model, step)
    model.load_state_dict(current, strict=False)

