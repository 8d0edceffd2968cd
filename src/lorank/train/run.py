"""``lorank.train(config)``: the Python twin of ``lorank train CONFIG.yaml``."""
from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lorank.atomic import atomic_write_json
from lorank.train.callbacks import COMPLETE_MARKER, CheckpointMeta, EvalOnSave, JsonlLog, RichProgress
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


def complete_checkpoints(out_dir: Path) -> list[Path]:
    """Checkpoints whose lorank marker was written (a checkpoint without it is half-written: ignored)."""
    out = []
    for d in Path(out_dir).glob("checkpoint-*"):
        if not d.is_dir() or not d.name.split("-")[-1].isdigit():
            continue
        if (d / COMPLETE_MARKER).is_file() and (d / "adapter_model.safetensors").is_file():
            out.append(d)
        else:
            log.warning("ignoring incomplete checkpoint %s (no %s)", d, COMPLETE_MARKER)
    return sorted(out, key=lambda d: int(d.name.split("-")[-1]))


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
    from lorank.train.trainer import CheckpointSchedule, RerankTrainer

    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_yaml(config, overrides)
    from lorank.models.loading import resolve_dtype_name

    dtype = resolve_dtype_name(cfg.dtype)
    set_threads()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pools, stats = build_pools(cfg.data, cfg.data_root)
    fmt = InputFormat(**cfg.input.model_dump())
    loaded = load_reranker(cfg.model, dtype=dtype, head_init=cfg.head_init,
                           trust_remote_code=cfg.trust_remote_code, seed=cfg.seed)
    spec = cfg.lora.spec()
    model = apply_lora(loaded.model, spec)
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    if cfg.gradient_checkpointing:
        model.enable_input_require_grads()  # else no grad reaches LoRA through checkpointed blocks
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    encoder = PairEncoder(loaded.tokenizer, fmt)
    pad_id = int(loaded.tokenizer.pad_token_id)
    dataset = GroupDataset(pools, cfg.group_size, cfg.seed, cfg.unit)
    resolved = {"config": cfg.model_dump(), "model_path": loaded.path, "model_source": loaded.source.describe(),
                "arch": loaded.arch.family, "pad_token_id": pad_id, "lora_targets": _targets(model),
                "pools": stats.__dict__, "versions": software_versions()}
    atomic_write_json(out / "config.json", resolved)
    meta = {"base_model": cfg.model, "model_path": loaded.path, "input": cfg.input.model_dump(),
            "lora": spec.to_dict(), "dtype": dtype, "head_init": cfg.head_init, "pad_token_id": pad_id}

    use_cuda = torch.cuda.is_available()
    save_every = cfg.checkpoints.every if cfg.checkpoints.every and not cfg.checkpoints.steps else None
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.batch_queries,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio if cfg.warmup_ratio < 1 else int(cfg.warmup_ratio),
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps, seed=cfg.seed,
        data_seed=cfg.seed, bf16=dtype == "bf16", use_cpu=not use_cuda, save_strategy="steps",
        save_steps=10**9, logging_steps=1, report_to=cfg.report_to, remove_unused_columns=False,
        dataloader_num_workers=cfg.dataloader_workers, ddp_find_unused_parameters=False,
        disable_tqdm=True, lr_scheduler_type="linear", save_total_limit=None,
    )
    optimizers = (None, None)
    if cfg.head_lr is not None:
        head = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
        lora = [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
        optimizers = (torch.optim.AdamW([{"params": lora, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr}],
                                        lr=cfg.lr, weight_decay=cfg.weight_decay), None)
    trainer_box: list[RerankTrainer] = []
    callbacks: list[Any] = [CheckpointSchedule(cfg.checkpoints.steps, save_every), CheckpointMeta(meta),
                            JsonlLog(out / "train_log.jsonl", lambda: trainer_box[0]),
                            RichProgress(lambda: trainer_box[0], enabled=progress)]
    evaluator = None
    if cfg.eval.sets:
        evaluator = CheckpointEvaluator(encoder, pad_id, cfg.eval, out, cfg.data_root)
        if cfg.eval.during_training:
            callbacks.append(EvalOnSave(evaluator))
    trainer = RerankTrainer(model=model, args=args, train_dataset=dataset,
                            data_collator=GroupCollator(encoder, pad_id, cfg.chunk_tokens),
                            loss_fn=get_loss(cfg.loss), temperature=cfg.temperature,
                            skip_nonfinite=cfg.skip_nonfinite, grad_cache=cfg.grad_cache, callbacks=callbacks,
                            optimizers=optimizers)
    trainer_box.append(trainer)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):  # lorank's own progress and JSONL log replace them
        trainer.remove_callback(cb)
    last = complete_checkpoints(out)
    resume_from = str(last[-1]) if (resume and last) else None
    if resume_from:
        log.info("resuming from %s", resume_from)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    wall = time.perf_counter() - t0
    ckpts = complete_checkpoints(out)
    if evaluator is not None:  # evaluate checkpoints not yet evaluated (after-training mode, or resumed runs)
        _evaluate_missing(evaluator, model, ckpts)
    plot = (plot_checkpoint_curve(out, title=f"{cfg.model} LoRA {spec.short_name()}", baselines=evaluator.first_stage())
            if evaluator else None)
    eval_s = evaluator.total_s if (evaluator and cfg.eval.during_training) else 0.0
    train_s = max(wall - eval_s, 1e-9)
    res = TrainResult(out, trainer.state.global_step, wall, trainer.tokens_seen, trainer.padded_tokens_seen,
                      trainer.tokens_seen / train_s, ckpts, read_metrics(out), plot, trainer.skipped_batches)
    atomic_write_json(out / "train_summary.json", {
        "steps": res.steps, "wall_s": round(wall, 2), "eval_in_training_s": round(eval_s, 2),
        "train_s": round(train_s, 2), "tokens": res.tokens, "padded_tokens": res.padded_tokens,
        "tokens_per_s": round(res.tokens_per_s, 1), "skipped_batches": res.skipped_batches,
        "checkpoints": [c.name for c in ckpts], "resumed_from": resume_from})
    return res


def _evaluate_missing(evaluator: Any, model: Any, ckpts: list[Path]) -> None:
    from lorank.adapters import load_adapter_weights

    done = evaluator.done_steps()
    todo = [c for c in ckpts if any((int(c.name.split("-")[-1]), s) not in done for s in evaluator.sets)]
    if not todo:
        return
    current = {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k or "modules_to_save" in k}
    for c in todo:
        load_adapter_weights(model, c)
        evaluator(model, int(c.name.split("-")[-1]), c)
    model.load_state_dict(current, strict=False)


def _targets(model: Any) -> dict[str, int]:
    from collections import Counter

    names = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
    return dict(Counter(n.split(".")[-2] for n in names))
