"""GPU throughput of lorank's LoRA reranker training and scoring on random-init models of real shapes.

Weights are random (no download): the shapes, module names and FLOPs are those of the real models
(``lorank.models.random_init.SHAPES``), so tokens/s, MFU and memory are what the real ones give.

Run on a GPU machine (H100 / H200; each shape takes ~1-3 min, three shapes fit one 10-min call)::

    python benchmarks/gpu_throughput.py --device cuda --shape llama-3.1-8b,mistral-7b,pythia-6.9b

Smoke mode (any machine, seconds; what the test suite runs)::

    python benchmarks/gpu_throughput.py --device cpu --shape tiny-llama --out /tmp/gpu_smoke.json

Configurations (``--configs``, one JSON row per shape x configuration, same synthetic sequences):

- ``lorank``: as below, with issue 13's GPU path: the SDPA backend chosen on purpose
  (``--attention-backend``, default ``auto`` = flash, never cuDNN, whose per-shape plans cost seconds),
  chunk shapes bucketed to fixed width/row ladders (``--shape-buckets``, default on CUDA), fused AdamW on
  CUDA, no per-step host sync in the loss guard.
- ``baseline``: a Tevatron/RankLLaMA-style HF ``Trainer``: every pair padded to 196 tokens with its
  attention mask, one forward per step, gradient checkpointing, bf16 autocast on CUDA, PEFT's own LoRA
  (same r=8 alpha=64 on all projections, ``nn.Dropout``, PEFT's input cast), HF's default optimizer and
  torch's default SDPA kernels (cuDNN first on Hopper). Scoring: fixed batches of ``--baseline-score-batch``
  pairs, each padded to 196, under ``inference_mode`` + autocast.

What is measured, per shape (bf16 weights on CUDA, fp32 on CPU unless ``--dtype``; sdpa attention, or
flash-attention-2 when the ``flash_attn`` package is installed; LoRA r=8 alpha=64 dropout 0.1 on all
projections; score head trained in fp32):

- training: ``RerankTrainer`` (HF Trainer, bf16 autocast on CUDA) with lorank's length-sorted chunk
  collator, ``--queries`` queries x group ``--group`` per step, contrastive loss, AdamW; synthetic
  sequences with passage-like lengths (mean ~100, max 196 tokens). ``--checkpointing``: ``full`` (HF
  gradient checkpointing, default on CUDA), ``selective`` (keep the big matmuls' outputs), ``none``, or
  lorank's ``grad_cache``. LoRA dropout through lorank's FastDropout (``--no-fast-dropout``: PEFT's).
  A configuration that runs out of GPU memory is recorded as ``"oom": true`` and the run goes on.
  Reported: real tokens/s, pairs/s, step time, MFU, HFU, peak GPU memory (allocated and reserved).
- scoring: ``lorank.inference.engine.Scorer`` (``torch.inference_mode``, length-sorted token-budget
  batches of ``--score-batch-tokens``): pairs/s, tokens/s, MFU.

FLOP model (stated, so MFU can be checked by hand). N = parameters of the blocks' linear layers (no
embedding, no 1-output head), d = hidden size, L = layers, T = the sequence's length:

- forward, per token: 2*N + 2*L*d*T   (matmuls; causal attention QK^T and AV, averaged over positions)
- training step, per token: 4*N + 6*L*d*T + 6*N_lora   (frozen base: the backward computes only the
  activation gradients, ~1x the forward for the linears, 2x for attention; LoRA's own weight gradients)
- MFU = model FLOPs / step time / peak; HFU adds the recomputed forward of gradient checkpointing (or
  grad_cache's extra forward). Peak: 989 TFLOP/s dense bf16 for H100/H200 SXM (``--peak-tflops`` to override).

Writes a JSON (``--out``; default ``results/gpu_throughput_<gpu>.json``) with one row per shape.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEAKS_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0,
                "A10": 125.0, "L4": 121.0}


def synthetic_lengths(n: int, seed: int, max_len: int = 196) -> list[int]:
    """Passage-like lengths (query prefix ~10 + passage): mean ~100, a tail clipped at ``max_len``."""
    import random

    rng = random.Random(seed)
    return [max(16, min(max_len, int(rng.lognormvariate(math.log(90), 0.45)))) for _ in range(n)]


def block_linear_params(model: Any) -> tuple[int, int]:
    """(frozen linear params in the transformer blocks, trainable LoRA params)."""
    import torch

    from lorank.models.arch import backbone

    body = backbone(model)
    frozen = lora = 0
    for name, mod in body.named_modules():
        if isinstance(mod, torch.nn.Linear):  # every linear of the body is a block projection (or LoRA's A/B)
            if "lora_" in name:
                lora += mod.weight.numel()
            else:
                frozen += mod.weight.numel()
    return frozen, lora


def flops_per_token(n_lin: int, n_lora: int, layers: int, d: int, mean_t: float, train: bool) -> float:
    if train:
        return 4 * n_lin + 6 * layers * d * mean_t + 6 * n_lora
    return 2 * n_lin + 2 * layers * d * mean_t + 2 * n_lora


def peak_flops(device: str, override: float | None) -> tuple[float | None, str]:
    import torch

    if override:
        return override * 1e12, f"--peak-tflops {override}"
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for k, v in PEAKS_TFLOPS.items():
            if k in name:
                return v * 1e12, f"{name}: {v} TFLOP/s dense bf16 (datasheet)"
        return None, f"{name}: unknown peak (pass --peak-tflops)"
    a = torch.randn(1024, 1024)
    b = torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.5:
        a @ b
        n += 1
    return 2 * 1024**3 * n / (time.perf_counter() - t0), "CPU fp32 1024^3 matmul, measured now"


def build(shape: str, device: str, dtype: Any, attn: str, seed: int) -> Any:
    import torch
    from transformers import AutoModelForSequenceClassification

    from lorank.models.random_init import config_for

    cfg = config_for(shape)
    cfg.pad_token_id = 1
    torch.manual_seed(seed)
    with torch.device(device):  # initialise on the device: an 8B model never passes through host memory
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=dtype, attn_implementation=attn)
    model.score.float()
    return model


def synthetic_steps(vocab: int, a: argparse.Namespace) -> list[list[list[int]]]:
    """Each step's token sequences (queries x group, passage-like lengths), the same for every configuration."""
    import torch

    gen = torch.Generator().manual_seed(a.seed)
    return [[torch.randint(3, vocab, (n,), generator=gen).tolist()
             for n in synthetic_lengths(a.queries * a.group, a.seed * 1000 + s)] for s in range(a.warmup + a.steps)]


def synthetic_score_seqs(vocab: int, a: argparse.Namespace) -> list[list[int]]:
    import torch

    gen = torch.Generator().manual_seed(a.seed + 7)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in synthetic_lengths(a.score_pairs, a.seed + 7)]


def prepare(shape: str, a: argparse.Namespace, config: str) -> tuple[Any, dict[str, Any]]:
    """A fresh random-init model with LoRA r=``--rank`` alpha=64 on all projections (fp32 adapter weights)
    and the row's common fields."""
    import torch

    from lorank.lora import LoraSpec, apply_lora

    cuda = a.device == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[a.dtype or ("bf16" if cuda else "fp32")]
    attn = "flash_attention_2" if (cuda and importlib.util.find_spec("flash_attn") and dtype == torch.bfloat16) else "sdpa"
    t_build = time.perf_counter()
    model = build(shape, a.device, dtype, attn, a.seed)
    model = apply_lora(model, LoraSpec(rank=a.rank, alpha=64, dropout=a.dropout))
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    n_lin, n_lora = block_linear_params(model)
    peak, peak_src = peak_flops(a.device, a.peak_tflops)
    row: dict[str, Any] = {"shape": shape, "config": config, "command": a.command,
                           "device": torch.cuda.get_device_name() if cuda else "cpu",
                           "dtype": str(dtype).replace("torch.", ""), "attention": attn, "lora_rank": a.rank,
                           "lora_dropout": a.dropout, "block_linear_params": n_lin, "lora_params": n_lora,
                           "build_s": round(time.perf_counter() - t_build, 1), "peak_flops": peak,
                           "peak_source": peak_src}
    return model, row


def step_clock(times: list[float], cuda: bool) -> Any:
    """A Trainer callback appending each optimizer step's wall time (GPU work included: synchronised) to ``times``."""
    import torch
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    return StepClock()


def run_shape(shape: str, a: argparse.Namespace) -> dict[str, Any]:
    """The lorank row (kept under this name: ``--configs lorank``)."""
    import torch
    from transformers import TrainingArguments

    from lorank.models.attention import apply_attention_backend
    from lorank.inference.engine import Scorer
    from lorank.train.collator import length_chunks, pad_chunk, pad_multiple_for
    from lorank.train.losses import get_loss
    from lorank.lora.dropout import use_fast_dropout
    from lorank.lora.sites import disable_input_cast
    from lorank.train.trainer import RerankTrainer, enable_checkpointing

    cuda = a.device == "cuda"
    model, row = prepare(shape, a, "lorank")
    dtype = next(p.dtype for p in model.parameters() if not p.requires_grad)
    row["attention_backend"] = apply_attention_backend(a.attention_backend, a.device, dtype)
    bucketed = a.shape_buckets if a.shape_buckets is not None else cuda
    row["shape_buckets"] = bucketed
    cfg = model.config
    vocab = cfg.vocab_size
    n_lin, n_lora = row["block_linear_params"], row["lora_params"]
    layers, d = cfg.num_hidden_layers, cfg.hidden_size
    peak = row["peak_flops"]

    # ---- training: RerankTrainer.train() on synthetic groups, timed per step by a callback
    g, bq = a.group, a.queries
    steps = a.warmup + a.steps
    batches = []
    shapes_seen: set[tuple[int, int]] = set()
    for seqs in synthetic_steps(vocab, a):
        lens = [len(x) for x in seqs]
        chunks = []
        for idx in length_chunks(lens, a.chunk_tokens, bucketed=bucketed):
            ids, mask = pad_chunk([seqs[i] for i in idx], 1, pad_multiple_for(a.device), bucketed)
            shapes_seen.add(tuple(ids.shape))
            chunks.append({"input_ids": ids, "attention_mask": mask, "index": torch.tensor(idx)})
        batches.append({"chunks": chunks, "n_groups": bq, "group_size": g, "teacher": None,
                        "num_tokens": sum(lens), "padded_tokens": sum(c["input_ids"].numel() for c in chunks),
                        "mean_len": sum(n * n for n in lens) / sum(lens)})  # token-weighted mean context

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> Any:
            return batches[i]

    seen: list[dict[str, Any]] = []

    class BenchTrainer(RerankTrainer):
        def _get_train_sampler(self, *args: Any, **kw: Any) -> Any:  # in order: step i trains on batches[i]
            return torch.utils.data.SequentialSampler(self.train_dataset)

        def training_step(self, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
            seen.append({k: inputs[k] for k in ("num_tokens", "padded_tokens", "mean_len")})
            return super().training_step(model, inputs, num_items_in_batch)

    times: list[float] = []

    ckpt = a.checkpointing or ("full" if cuda else "none")
    optim = "adamw_torch_fused" if cuda else "adamw_torch"
    if ckpt in ("full", "selective"):
        enable_checkpointing(model, ckpt)  # lorank.train.trainer: HF checkpointing, or keep the big matmuls
    n_fast = use_fast_dropout(model) if a.fast_dropout and a.dropout > 0 else 0
    if dtype == torch.bfloat16:  # the Trainer runs under bf16 autocast (as lorank train does)
        disable_input_cast(model)
    args = TrainingArguments(output_dir=str(Path(a.tmp) / f"trainer-{shape}"), per_device_train_batch_size=1,
                             max_steps=steps, learning_rate=1e-4, bf16=dtype == torch.bfloat16, use_cpu=not cuda,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             remove_unused_columns=False, dataloader_num_workers=0, seed=a.seed, optim=optim,
                             logging_nan_inf_filter=not cuda)
    trainer = BenchTrainer(model=model, args=args, train_dataset=Data(), data_collator=lambda xs: xs[0],
                            loss_fn=get_loss("contrastive"), grad_cache=ckpt == "grad_cache", callbacks=[step_clock(times, cuda)])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        if a.profile:
            from torch.profiler import ProfilerActivity, profile

            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
            with profile(activities=acts) as prof:
                trainer.train()
            row["profile"] = profile_excerpt(prof, cuda, a.profile_out, f"{shape}-lorank")
        else:
            trainer.train()
    except torch.cuda.OutOfMemoryError as e:
        row["train"] = {"queries_per_step": bq, "group_size": g, "checkpointing": ckpt, "oom": True,
                        "error": str(e).splitlines()[0][:300]}
        print(json.dumps({shape: row["train"]}), flush=True)
        del trainer, model
        torch.cuda.empty_cache()
        return row
    meas = times[a.warmup:]
    assert len(seen) == len(times) == steps, (len(seen), len(times), steps)
    done = seen[a.warmup:]
    tok = sum(b["num_tokens"] for b in done)
    mean_t = sum(b["mean_len"] * b["num_tokens"] for b in done) / tok
    wall = sum(meas)
    fpt = flops_per_token(n_lin, n_lora, layers, d, mean_t, train=True)
    recompute = 2 * n_lin + 2 * layers * d * mean_t if ckpt in ("full", "grad_cache") else 0.0
    row["train"] = {
        "queries_per_step": bq, "group_size": g, "pairs_per_step": bq * g, "checkpointing": ckpt,
        "fast_dropout_modules": n_fast,
        "chunk_tokens": a.chunk_tokens, "steps_measured": len(meas), "warmup_steps": a.warmup, "optim": optim,
        "distinct_chunk_shapes": len(shapes_seen), "step_s_each": [round(t, 4) for t in times],
        "step_s": round(wall / len(meas), 4), "tokens_per_s": round(tok / wall, 1),
        "padded_tokens_per_s": round(sum(b["padded_tokens"] for b in done) / wall, 1),
        "pairs_per_s": round(bq * g * len(meas) / wall, 2), "train_flops_per_token": fpt,
        "mfu": round(fpt * tok / wall / peak, 4) if peak else None,
        "hfu": round((fpt + recompute) * tok / wall / peak, 4) if peak else None,
    }
    if cuda:
        row["train"]["peak_mem_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["train"]["peak_mem_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    print(json.dumps({shape: row["train"]}), flush=True)
    del trainer
    if ckpt in ("full", "selective"):
        model.gradient_checkpointing_disable()

    # ---- scoring: lorank's Scorer on synthetic pairs
    model.eval()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seqs = synthetic_score_seqs(vocab, a)
    lens = [len(x) for x in seqs]
    scorer = Scorer(model, encoder=None, pad_id=1, batch_tokens=a.score_batch_tokens, bf16=dtype == torch.bfloat16)
    scorer.shape_buckets = bucketed
    scorer.score_ids(seqs[: max(1, len(seqs) // 10)])  # warm-up
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    scores = scorer.score_ids(seqs)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    tok = sum(lens)
    mean_t = sum(n * n for n in lens) / tok
    fpt = flops_per_token(n_lin, n_lora, layers, d, mean_t, train=False)
    row["score"] = {"pairs": len(seqs), "batch_tokens": a.score_batch_tokens, "wall_s": round(wall, 3),
                    "pairs_per_s": round(len(seqs) / wall, 1), "tokens_per_s": round(tok / wall, 1),
                    "mfu": round(fpt * tok / wall / peak, 4) if peak else None,
                    "finite": bool(all(math.isfinite(x) for x in scores)), "oom_backoffs": scorer.oom_backoffs}
    if cuda:
        row["score"]["peak_mem_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps({shape: row["score"]}), flush=True)
    del model, scorer
    if cuda:
        torch.cuda.empty_cache()
    return row


def profile_excerpt(prof: Any, cuda: bool, out: Path | None, tag: str, top: int = 25) -> dict[str, Any]:
    """Top ops by self CUDA time (on GPUs) and self CPU time: printed, written as text to ``out``/<tag>.txt
    when given, and returned as lists for the JSON."""
    res: dict[str, Any] = {}
    text = []
    for key in (["self_cuda_time_total"] if cuda else []) + ["self_cpu_time_total"]:
        table = prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)
        text.append(f"== sorted by {key}\n{table}")
        print(table, flush=True)
        attr = "self_device_time_total" if key == "self_cuda_time_total" else "self_cpu_time_total"
        evs = sorted(prof.key_averages(), key=lambda e: getattr(e, attr, 0.0), reverse=True)[:top]
        res[key] = [{"op": e.key, "self_us": round(float(getattr(e, attr, 0.0)), 1), "calls": e.count} for e in evs]
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"profile-{tag}.txt").write_text("\n".join(text))
        res["text"] = str(out / f"profile-{tag}.txt")
    return res


def run_baseline(shape: str, a: argparse.Namespace) -> dict[str, Any]:
    """The Tevatron/RankLLaMA-style row: HF Trainer, every pair padded to 196 with its mask, one forward per
    step, gradient checkpointing, PEFT's own LoRA forward, torch's default SDPA kernels."""
    import torch
    from transformers import Trainer, TrainingArguments

    from lorank.models.attention import apply_attention_backend

    cuda = a.device == "cuda"
    model, row = prepare(shape, a, "baseline")
    dtype = next(p.dtype for p in model.parameters() if not p.requires_grad)
    # torch's defaults (every kernel allowed; cuDNN first on Hopper): what a plain recipe gets
    row["attention_backend"] = apply_attention_backend("cudnn", a.device, dtype)
    row["attention_backend"]["requested"] = "torch default"
    cfg = model.config
    n_lin, n_lora = row["block_linear_params"], row["lora_params"]
    layers, d, peak = cfg.num_hidden_layers, cfg.hidden_size, row["peak_flops"]
    g, bq, width = a.group, a.queries, 196
    steps = a.warmup + a.steps

    def padded(seqs: list[list[int]]) -> dict[str, Any]:
        ids = torch.full((len(seqs), width), 1, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, x in enumerate(seqs):
            ids[i, : len(x)] = torch.tensor(x[:width])
            mask[i, : len(x)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    step_seqs = synthetic_steps(cfg.vocab_size, a)
    batches = [padded(x) for x in step_seqs]
    times: list[float] = []

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return steps

        def __getitem__(self, i: int) -> Any:
            return batches[i]

    class GroupTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            logits = model(**inputs).logits.view(-1, g)
            target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            loss = torch.nn.functional.cross_entropy(logits.float(), target)
            return (loss, logits) if return_outputs else loss

        def _get_train_sampler(self, *args: Any, **kw: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    model.enable_input_require_grads()
    args = TrainingArguments(output_dir=str(Path(a.tmp) / f"baseline-{shape}"), per_device_train_batch_size=1,
                             max_steps=steps, learning_rate=1e-4, bf16=dtype == torch.bfloat16, use_cpu=not cuda,
                             gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False},
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True,
                             remove_unused_columns=False, dataloader_num_workers=0, seed=a.seed)
    trainer = GroupTrainer(model=model, args=args, train_dataset=Data(), data_collator=lambda xs: xs[0],
                           callbacks=[step_clock(times, cuda)])
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        trainer.train()
    except torch.cuda.OutOfMemoryError as e:
        row["train"] = {"oom": True, "error": str(e).splitlines()[0][:300]}
        del trainer, model
        torch.cuda.empty_cache()
        return row
    meas, done = times[a.warmup:], step_seqs[a.warmup:]
    tok = sum(len(x) for st in done for x in st)
    mean_t = sum(len(x) ** 2 for st in done for x in st) / tok
    wall = sum(meas)
    fpt = flops_per_token(n_lin, n_lora, layers, d, mean_t, train=True)
    hw = flops_per_token(n_lin, n_lora, layers, d, width, train=True) + 2 * n_lin + 2 * layers * d * width
    row["train"] = {
        "queries_per_step": bq, "group_size": g, "pairs_per_step": bq * g, "checkpointing": "full",
        "padding": f"max_length {width}", "optim": args.optim if isinstance(args.optim, str) else args.optim.value,
        "steps_measured": len(meas), "warmup_steps": a.warmup, "step_s": round(wall / len(meas), 4),
        "step_s_each": [round(t, 4) for t in times], "tokens_per_s": round(tok / wall, 1),
        "padded_tokens_per_s": round(bq * g * width * len(meas) / wall, 1),
        "pairs_per_s": round(bq * g * len(meas) / wall, 2), "train_flops_per_token": fpt,
        "mfu": round(fpt * tok / wall / peak, 4) if peak else None,
        "hfu": round(hw * bq * g * width * len(meas) / wall / peak, 4) if peak else None,
    }
    if cuda:
        row["train"]["peak_mem_allocated_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps({f"{shape}/baseline": row["train"]}), flush=True)
    del trainer
    model.gradient_checkpointing_disable()
    model.eval()
    if cuda:
        torch.cuda.empty_cache()
    seqs = synthetic_score_seqs(cfg.vocab_size, a)
    bs = a.baseline_score_batch

    def score_all(part: list[list[int]]) -> list[float]:
        out: list[float] = []
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            for i in range(0, len(part), bs):
                b = padded(part[i: i + bs])
                out += model(**{k: v.to(a.device) for k, v in b.items()}).logits.float().reshape(-1).tolist()
        return out

    score_all(seqs[: max(1, len(seqs) // 10)])
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    scores = score_all(seqs)
    wall = time.perf_counter() - t0
    tok = sum(len(x) for x in seqs)
    mean_t = sum(len(x) ** 2 for x in seqs) / tok
    fpt = flops_per_token(n_lin, n_lora, layers, d, mean_t, train=False)
    row["score"] = {"pairs": len(seqs), "batch_pairs": bs, "padding": f"max_length {width}", "wall_s": round(wall, 3),
                    "pairs_per_s": round(len(seqs) / wall, 1), "tokens_per_s": round(tok / wall, 1),
                    "mfu": round(fpt * tok / wall / peak, 4) if peak else None,
                    "finite": bool(all(math.isfinite(x) for x in scores))}
    print(json.dumps({f"{shape}/baseline": row["score"]}), flush=True)
    model = None  # frees it (not `del`: score_all's closure reads the name, which pyflakes then takes as undefined)
    if cuda:
        torch.cuda.empty_cache()
    return row


def summary_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One line per row: lorank vs baseline side by side in the JSON."""
    out = []
    for r in rows:
        tr, sc = r.get("train") or {}, r.get("score") or {}
        out.append({"shape": r["shape"], "config": r["config"], "train.tokens_per_s": tr.get("tokens_per_s"),
                    "train.mfu": tr.get("mfu"), "train.step_s": tr.get("step_s"), "train.oom": tr.get("oom", False),
                    "score.pairs_per_s": sc.get("pairs_per_s"), "score.mfu": sc.get("mfu"),
                    "attention_backend": (r.get("attention_backend") or {}).get("applied")})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--shape", default="llama-3.1-8b,mistral-7b,pythia-6.9b",
                    help="comma-separated names from lorank.models.random_init.SHAPES")
    ap.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    ap.add_argument("--queries", type=int, default=None, help="queries per step (default 8 on cuda, 2 on cpu)")
    ap.add_argument("--group", type=int, default=16)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=None, help="measured steps (default 8 on cuda, 3 on cpu)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 4 on cuda, 2 on cpu)")
    ap.add_argument("--checkpointing", choices=["none", "full", "selective", "grad_cache"],
                    help="default: full on cuda, none on cpu (selective: keep the big matmuls' outputs, recompute the rest)")
    ap.add_argument("--fast-dropout", action=argparse.BooleanOptionalAction, default=True,
                    help="lorank's FastDropout for the LoRA dropout (lorank train's default); --no-fast-dropout: nn.Dropout")
    ap.add_argument("--chunk-tokens", type=int, default=None, help="training chunk budget (default 16384 cuda, 4096 cpu)")
    ap.add_argument("--score-pairs", type=int, default=None, help="pairs scored (default 4000 cuda, 64 cpu)")
    ap.add_argument("--score-batch-tokens", type=int, default=None, help="default 65536 cuda, 8192 cpu")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default="lorank,baseline",
                    help="comma-separated: lorank (issue 13's GPU path), baseline (Tevatron-style padded HF Trainer)")
    ap.add_argument("--attention-backend", default="auto", choices=["auto", "flash", "efficient", "math", "cudnn"],
                    help="lorank's SDPA kernels on CUDA (lorank.models.attention)")
    ap.add_argument("--shape-buckets", action=argparse.BooleanOptionalAction, default=None,
                    help="lorank's fixed width/row ladders for chunk shapes (default: on for cuda)")
    ap.add_argument("--baseline-score-batch", type=int, default=None, help="baseline scoring pairs per batch "
                    "(default 128 cuda, 16 cpu)")
    ap.add_argument("--profile", action="store_true", help="torch.profiler over the training run: top ops by self time")
    ap.add_argument("--profile-out", type=Path, default=None, help="folder for the profile tables (text)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--tmp", default="/tmp/lorank-gpu-throughput")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    cuda = a.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("--device cuda but no CUDA device is visible (use --device cpu --shape tiny-llama for the smoke mode)",
              file=sys.stderr)
        return 2
    a.queries = a.queries or (8 if cuda else 2)
    a.steps = a.steps or (8 if cuda else 3)
    a.warmup = a.warmup if a.warmup is not None else (4 if cuda else 2)
    a.chunk_tokens = a.chunk_tokens or (16384 if cuda else 4096)
    a.score_pairs = a.score_pairs or (4000 if cuda else 64)
    a.score_batch_tokens = a.score_batch_tokens or (65536 if cuda else 8192)
    a.baseline_score_batch = a.baseline_score_batch or (128 if cuda else 16)
    a.command = "python benchmarks/gpu_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = set(configs) - {"lorank", "baseline"}
    if unknown or not configs:
        print(f"--configs: unknown {sorted(unknown)} (use lorank, baseline)", file=sys.stderr)
        return 2
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for shape in [s.strip() for s in a.shape.split(",") if s.strip()]:
        for c in configs:
            rows.append(run_shape(shape, a) if c == "lorank" else run_baseline(shape, a))
    import platform

    import peft
    import transformers

    out = {"command": a.command, "rows": rows, "table": summary_table(rows), "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                      "peft": peft.__version__, "cuda": torch.version.cuda,
                                      "python": platform.python_version(),
                                      "flash_attn": bool(importlib.util.find_spec("flash_attn"))}}
    path = a.out or ROOT / "results" / (
        "gpu_throughput_" + (torch.cuda.get_device_name().split()[-1].lower() if cuda else "cpu-smoke") + ".json")
    from lorank.atomic import atomic_write_json

    atomic_write_json(path, out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
