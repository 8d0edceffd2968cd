"""``lorank.train(config)``: the Python twin of ``lorank train CONFIG.yaml``."""
from __future__ import annotations


import json
import logging
import os
import platform
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lorank.allocator import active_allocator
from lorank.atomic import atomic_write_json
from lorank.errors import ConfigError, LorankError
from lorank.lora.dropout import use_fast_dropout
from lorank.lora.sites import disable_input_cast, target_counts
from lorank.train.callbacks import (CheckpointMeta, EvalOnSave, GracefulStop, JsonlLog, RichProgress, SaveError,
                                   TrainingDivergedStop)
from lorank.train.checkpoints import COMPLETE_MARKER, complete_checkpoints, read_marker, step_of  # noqa: F401
from lorank.train.config import TrainConfig

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


def software_versions() -> dict[str, str]:
    import peft
    import transformers

    import lorank

    return {"lorank": lorank.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def set_threads() -> None:
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(max(1, n))


def train(config: TrainConfig | str | Path, *, resume: bool = True, progress: bool = True,
          overrides: dict[str, Any] | None = None) -> TrainResult:
    from transformers import TrainingArguments

    from lorank.lora.spec import apply_lora
    from lorank.models.inputs import InputFormat, PairEncoder
    from lorank.models.loading import load_reranker
    from lorank.train.checkpoint_eval import CheckpointEvaluator, plot_checkpoint_curve, read_metrics
    from lorank.train.collator import GroupCollator
    from lorank.train.data_sources import build_pools
    from lorank.train.groups import GroupDataset
    from lorank.train.losses import get_loss
    from lorank.train.collator import pad_multiple_for
    from lorank.models.attention import apply_attention_backend
    from lorank.train.trainer import CheckpointSchedule, RerankTrainer, enable_checkpointing

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_yaml(config, overrides)
    from lorank.precision import decide

    # the one precision decision ($LORANK_BF16, else the hardware) unless the config names a dtype
    dtype = decide(None).name if cfg.dtype == "auto" else cfg.dtype
    precision_reason = decide(None).reason if cfg.dtype == "auto" else "set in the config"
    set_threads()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not resume:
        set_aside_previous(out)
    # mining guards every set this run evaluates on, beside the protocol's (lorank.mine.protocol)
    pools, stats = build_pools(cfg.data, cfg.data_root, evaluated=[*cfg.eval.sets, *cfg.eval.test_sets],
                               test_sets=cfg.eval.test_sets)
    fmt = InputFormat(**cfg.input.model_dump())
    loaded = load_reranker(cfg.model, dtype=dtype, head_init=cfg.head_init,
                           trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    spec = cfg.lora
    model = apply_lora(loaded.model, spec)
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
    identity = {**resume_identity(cfg), "forward": forward}
    if resume:  # before anything is written into the run folder: its config.json must stay the old run's if refused
        done = complete_checkpoints(out)
        if done:
            check_resumable(done[-1], identity)
    if forward == "packed":
        from lorank.models.packed import install_packed_forward

        install_packed_forward(model)
    encoder = PairEncoder(loaded.tokenizer, fmt)
    pad_id = int(loaded.tokenizer.pad_token_id)
    dataset = GroupDataset(pools, cfg.group_size, cfg.seed, cfg.unit)
    resolved = {"config": cfg.model_dump(), "model_path": loaded.path, "model_source": loaded.source.describe(),
                "arch": loaded.arch.family, "pad_token_id": pad_id, "lora_targets": target_counts(model),
                "pools": stats.__dict__, "versions": software_versions(),
                # the LoRA scale as trained: PEFT's lora_alpha is the policy's number at this rank
                "lora_alpha": {"policy": spec.alpha_policy, "given": spec.alpha, "alpha_rank": spec.alpha_rank,
                               "effective": spec.effective_alpha(), "scaling": spec.effective_alpha() / spec.rank},
                "precision": {"dtype": dtype, "reason": precision_reason},
                "execution": {"forward": forward, "forward_reason": forward_reason,
                              "gradient_checkpointing": checkpointing, "grad_cache": cfg.grad_cache,
                              "memory_gb": _memory_gb()}}
    atomic_write_json(out / "config.json", resolved)
    meta = {"base_model": cfg.model, "model_path": loaded.path, "input": cfg.input.model_dump(),
            "lora": {**spec.to_dict(), "effective_alpha": spec.effective_alpha()}, "dtype": dtype,
            "head_init": cfg.head_init, "pad_token_id": pad_id,
            "resume_identity": identity}

    attention = apply_attention_backend(cfg.attention_backend, "cuda" if use_cuda else "cpu",
                                        torch.bfloat16 if dtype == "bf16" else torch.float32)
    optim = cfg.resolved_optim(use_cuda)
    save_every = cfg.checkpoints.every if cfg.checkpoints.every and not cfg.checkpoints.steps else None
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_queries,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio if cfg.warmup_ratio < 1 else int(cfg.warmup_ratio),
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, seed=cfg.seed,
        data_seed=cfg.seed, bf16=dtype == "bf16", use_cpu=not use_cuda, save_strategy="steps",
        save_steps=10**9, logging_steps=cfg.resolved_log_every(use_cuda), report_to=cfg.report_to, optim=optim,
        torch_compile=cfg.compile,  # off by default: unmeasured; shapes recompile unless bucketed
        logging_nan_inf_filter=not use_cuda,  # its per-step isnan() is a host sync; RerankTrainer guards the loss
        remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_workers, ddp_find_unused_parameters=False,
        disable_tqdm=True, lr_scheduler_type="linear", save_total_limit=None,
    )
    optimizers = (None, None)
    if cfg.head_lr is not None:
        head = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
        lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
        optimizers = (torch.optim.AdamW([{"params": lora, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                                        lr=cfg.lr, weight_decay=cfg.weight_decay,
                                        fused=optim == "adamw_torch_fused"), None)
    trainer_box: list[RerankTrainer] = []
    schedule = CheckpointSchedule(cfg.checkpoints.steps, save_every)
    stop = GracefulStop()
    callbacks: list[Any] = [schedule, stop, CheckpointMeta(meta, lambda: trainer_box[0], schedule.is_scheduled),
                            JsonlLog(out / "train_log.jsonl", lambda: trainer_box[0]),
                            RichProgress(lambda: trainer_box[0], enabled=progress)]
    guard = (TrainingDivergedStop(**cfg.divergence_guard.model_dump()) if cfg.divergence_guard is not None else None)
    if guard is not None:
        callbacks.append(guard)
    evaluator = None
    if cfg.eval.sets or cfg.eval.test_sets:
        evaluator = CheckpointEvaluator(encoder, pad_id, cfg.eval, out, cfg.data_root)
        if cfg.eval.during_training and cfg.eval.sets:
            callbacks.append(EvalOnSave(evaluator, schedule.is_scheduled))
    curve = None
    if cfg.eval.curve is not None:  # the dense cheap curve of the model in memory (curve.jsonl), not checkpoints
        from lorank.train.curve import CurveEvaluator, CurveOnStep

        curve = CurveEvaluator(encoder, pad_id, cfg.eval, out, cfg.data_root)
        callbacks.append(CurveOnStep(curve))
    trainer = RerankTrainer(model=model, args=args, train_dataset=dataset,
                            data_collator=GroupCollator(encoder, pad_id, cfg.resolved_chunk_tokens(use_cuda),
                                                        pad_multiple_for("cuda" if use_cuda else "cpu"),
                                                        cfg.resolved_shape_buckets(use_cuda), packed=forward == "packed"),
                            loss_fn=get_loss(cfg.loss), temperature=cfg.temperature,
                            skip_nonfinite=cfg.skip_nonfinite, grad_cache=cfg.grad_cache, callbacks=callbacks,
                            optimizers=optimizers)
    trainer_box.append(trainer)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # lorank's own progress and JSONL log replace them
        trainer.remove_callback(cb)
    allocator = active_allocator()
    if allocator == "glibc" and not use_cuda:
        log.warning("training on glibc's malloc, which fragments and slows a long CPU run as it ages (~1.3x here: "
                    "lorank.allocator); the lorank command preloads tcmalloc when libtcmalloc-minimal4 is installed")
    last = complete_checkpoints(out)
    resume_from = str(last[-1]) if (resume and last) else None
    if resume_from:
        log.info("resuming from %s", resume_from)
        counters = read_marker(Path(resume_from)).get("counters") or {}
        trainer.tokens_seen = int(counters.get("tokens_seen", 0))
        trainer.padded_tokens_seen = int(counters.get("padded_tokens_seen", 0))
        trainer.skipped_batches = int(counters.get("skipped_batches", 0))
    tokens0 = trainer.tokens_seen  # restored from the checkpoint on a resume: this call's rate counts its own tokens
    t0 = time.perf_counter()
    done_step = step_of(Path(resume_from)) if resume_from else 0
    planned = _planned_steps(trainer, cfg)
    if resume_from and done_step >= planned:
        # HF would run one step past the end when resumed from the final checkpoint: nothing left to train
        log.info("%s is the final checkpoint (%d of %d steps): nothing left to train", resume_from, done_step, planned)
    else:
        try:
            with stop:
                trainer.train(resume_from_checkpoint=resume_from)
        except OSError as e:  # writing an evaluation run / metrics / log failed (checkpoint saves raise SaveError)
            raise SaveError(_write_failure_message(out, e)) from e
    steps = max(trainer.state.global_step, done_step)
    wall = time.perf_counter() - t0
    ckpts = complete_checkpoints(out)
    if evaluator is not None and stop.signum is None:  # evaluate checkpoints not yet evaluated (after-training mode, or resumed runs)
        _evaluate_missing(evaluator, model, ckpts)
    finished = stop.signum is None and not (guard is not None and guard.tripped is not None)
    if evaluator is not None and evaluator.test_sets and finished and ckpts and step_of(ckpts[-1]) >= steps:
        _evaluate_on_test(evaluator, model, ckpts, cfg.eval.test_steps)  # once, on frozen weights; skipped when done
    plot = (plot_checkpoint_curve(out, title=f"{cfg.model} LoRA {spec.short_name()}", baselines=evaluator.first_stage())
            if evaluator else None)
    eval_s = evaluator.total_s if (evaluator and cfg.eval.during_training) else 0.0
    eval_s += curve.total_s if curve is not None else 0.0  # curve points are scored during training too
    train_s = max(wall - eval_s, 1e-9)
    res = TrainResult(out, steps, wall, trainer.tokens_seen, trainer.padded_tokens_seen,
                      (trainer.tokens_seen - tokens0) / train_s, ckpts, read_metrics(out), plot, trainer.skipped_batches,
                      stop.signal_name or None)
    atomic_write_json(out / "train_summary.json", {
        "steps": res.steps, "wall_s": round(wall, 2), "eval_in_training_s": round(eval_s, 2),
        "train_s": round(train_s, 2), "tokens": res.tokens, "padded_tokens": res.padded_tokens,
        "tokens_per_s": round(res.tokens_per_s, 1), "skipped_batches": res.skipped_batches,
        # steps and tokens are the run's totals; wall_s, train_s and tokens_per_s are this call's, which on a
        # resume is only what it trained since its checkpoint (the earlier calls' rates are in train_log.jsonl)
        "steps_this_call": res.steps - done_step, "tokens_this_call": trainer.tokens_seen - tokens0,
        "eval_share": round(eval_s / wall, 4) if wall > 0 else 0.0,
        **({"curve_s": round(curve.total_s, 2)} if curve is not None else {}),
        **({"test_eval_s": round(evaluator.test_s, 2)} if evaluator is not None and evaluator.test_sets else {}),
        **({"protocol": stats.protocol} if stats.protocol else {}),  # per msmarco source: sets guarded, dropped
        "execution": {"device": "cuda" if use_cuda else "cpu", "attention_backend": attention,
                      "shape_buckets": cfg.resolved_shape_buckets(use_cuda),
                      "chunk_tokens": cfg.resolved_chunk_tokens(use_cuda), "optim": optim,
                      "log_every": cfg.resolved_log_every(use_cuda), "compile": cfg.compile, "forward": forward,
                      "allocator": allocator},
        "checkpoints": [c.name for c in ckpts], "resumed_from": resume_from, "interrupted": res.interrupted,
        "diverged": guard.tripped if guard is not None else None})
    if guard is not None and guard.tripped is not None:
        t = guard.tripped
        raise TrainingDiverged(
            f"{out}: training stopped at step {t['step']}: the mean loss of steps {t['window']} ({t['mean_loss']}) has "
            f"climbed back {t['climbed']:.0%} of the way from the lowest {cfg.divergence_guard.window}-step mean "
            f"({t['lowest_mean_loss']}, steps {t['lowest_window']}) to the first ({t['first_mean_loss']}; limit "
            f"{t['climb']:.0%}): the scorer is collapsing. Checkpoints saved after step "
            f"{int(t['window'].split('-')[0]) - 1} were trained while the loss rose ({[c.name for c in ckpts][-3:]} are the "
            "last). Lower lr (and head_lr) and train again into a new output_dir; divergence_guard: null turns "
            "this check off.", res)
    if stop.signum is not None:
        last = ckpts[-1] if ckpts else None
        saved = (f"{last} is saved" if last is not None and int(last.name.rsplit("-", 1)[-1]) == res.steps
                 else f"the last complete checkpoint is {last}" if last else "no checkpoint was saved")
        raise TrainingInterrupted(f"training interrupted by {res.interrupted} at step {res.steps}/"
                                  f"{trainer.state.max_steps}: {saved}; run the same command to resume.", res)
    return res


PREVIOUS_OUTPUTS = ("metrics.jsonl", "runs_trec", "train_log.jsonl", "train_summary.json", "checkpoints.png",
                    "curve.jsonl")


def set_aside_previous(out: Path) -> Path | None:
    """A fresh start (``--no-resume``) in a folder that holds a run: move that run's checkpoints and results
    into ``previous-<time>/`` rather than mixing them with (or overwriting them by) the new run's."""
    old = [p for p in out.glob("checkpoint-*") if p.is_dir()] + [out / n for n in PREVIOUS_OUTPUTS if (out / n).exists()]
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
                sum(p.name.startswith("checkpoint-") for p in old), dest)
    return dest


#: what fixes a run's trajectory: resuming a checkpoint under other values would splice two different runs
#: (max_steps/epochs, checkpoints, eval and execution settings may change between calls)
RESUME_KEYS = ("model", "dtype", "head_init", "input", "lora", "data", "group_size", "unit", "loss", "lr",
               "head_lr", "warmup_ratio", "weight_decay", "batch_queries", "grad_accum", "seed", "temperature")


def resume_identity(cfg: TrainConfig) -> dict[str, Any]:
    ident = cfg.identity()
    return {k: ident[k] for k in RESUME_KEYS if k in ident}


def choose_forward(cfg: TrainConfig, model: Any, checkpointing: str, cuda: bool) -> tuple[str, str]:
    """The training forward (``packed`` or ``hf``, :mod:`lorank.models.packed`) and why."""
    from lorank.models.packed import packed_support

    if cfg.forward == "hf":
        return "hf", "set in the config"
    blockers = [why for why in (packed_support(model),
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


def _planned_steps(trainer: Any, cfg: TrainConfig) -> int:
    """The optimizer steps this run is to make (``max_steps``, or the epochs' worth), as HF computes it."""
    import math

    if hasattr(trainer, "set_initial_training_values"):
        return int(trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[-1])
    # a transformers version without it: the same arithmetic, single process
    if cfg.max_steps > 0:
        return cfg.max_steps
    batches = math.ceil(len(trainer.train_dataset) / cfg.batch_queries)
    return math.ceil(cfg.epochs * max(math.ceil(batches / cfg.grad_accum), 1))


def _write_failure_message(out: Path, e: OSError) -> str:
    import errno

    why = "the disk is full" if e.errno == errno.ENOSPC else f"{type(e).__name__}: {e}"
    done = complete_checkpoints(out, warn=False)
    safe = (f"the checkpoints are intact (last complete: {done[-1].name}); free space and run the same command "
            "to resume") if done else "no complete checkpoint was saved yet"
    return f"could not write {getattr(e, 'filename', None) or 'a result file'} in {out}: {why}. Files are written " \
           f"atomically, so none is half-written; {safe}."


def _evaluate_missing(evaluator: Any, model: Any, ckpts: list[Path]) -> None:
    from lorank.adapters import load_adapter_weights

    done = evaluator.done_steps()
    todo = [c for c in ckpts if read_marker(c).get("scheduled", True)  # not the checkpoints saved on Ctrl-C
            and any((int(c.name.split("-")[-1]), s) not in done for s in evaluator.sets)]
    if not todo:
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
    for c in todo:
        load_adapter_weights(model, c)
        evaluator(model, int(c.name.split("-")[-1]), c)
    model.load_state_dict(current, strict=False)


def _evaluate_on_test(evaluator: Any, model: Any, ckpts: list[Path], test_steps: Any = "final") -> None:
    """Score the test sets (``eval.test_sets``) once per chosen checkpoint, after training has finished: the final one
    (``test_steps: final``) or the saved steps listed, each on its own weights (loaded: a run resumed from its final
    checkpoint trained nothing in this call), unless that is already done; the model's weights are put back."""
    from lorank.adapters import load_adapter_weights

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
