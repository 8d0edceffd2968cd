"""Training speed and memory: the plain HF+PEFT loop, a Tevatron-style Trainer, and lorank, in one run.

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/train_speed.py          # ~13 min on 2 cores, ~6 of them the one bf16 step
    .venv/bin/python benchmarks/train_speed.py --configs plain,lorank-2x8 --steps 3            # a quick look

Every configuration runs in a fresh subprocess (so its peak RSS is its own: ``ru_maxrss`` of that
process, model load included), on the same DL20 training groups in the same order (1 positive at
grade >= 2 + hard negatives: judged-0 and unjudged BM25 top-100 candidates, as ../shared/BASELINES.md),
``--warmup`` steps first, then ``--steps`` measured steps. SmolLM2-135M-Instruct (the embedded GGUF,
dequantized to fp32 once by lorank), LoRA r=8 alpha=64 on all 7 projections, AdamW lr 1e-4.

Configurations (``--configs``, comma-separated; default: plain, plain-fp32, tevatron-fp32, lorank-2x8,
lorank-1x16-ckpt):

- ``plain``: the naive recipe of BASELINES.md exactly: template ``query: {q} document: {p}</s>``
  tokenized as one string, padded to the longest of the step's 16 pairs (max 196), 2 queries x 8,
  LoRA dropout 0.1, forward and backward under ``torch.autocast("cpu", bfloat16)``, a hand-written loop.
  On this AVX2 CPU with torch 2.13 a bf16 activation-gradient matmul runs at ~2 GFLOP/s (the forward at
  ~15, fp32 at ~100), so one step takes minutes: bf16 configurations are timed on ``--bf16-steps`` (1)
  steps without warm-up.
- ``plain-fp32``: the same loop without autocast (separates the dtype from everything else).
- ``tevatron-fp32`` / ``tevatron``: a Tevatron/RankLLaMA-style HF ``Trainer``: ``query: `` / ``document: ``
  pair tokenization + EOS, padded to max length 196, gradient checkpointing (as the RankLLaMA recipe),
  2 x 8, dropout 0.1; fp32, or ``bf16=True`` (CPU autocast; not in the default set: ~10 min a step here).
- ``lorank-*``: ``lorank.train`` itself (dtype auto = fp32 on this CPU, length-sorted chunks, FastDropout),
  with the groups fed in the same fixed order (the only patch: a sequential sampler). See ``LORANK`` below:
  ``-1x16`` = G=16 with 1 query (the same 16 pairs per step as the baselines' 2 x 8), ``-ckpt`` = gradient
  checkpointing, ``-selective`` = selective checkpointing, ``-nn-dropout`` = PEFT's nn.Dropout.

- ``lorank-2x8-hf``, ``dylora-r32``, ``adalora-12to8``: SmolLM2 with the HF forward, DyLoRA r=32 and AdaLoRA 12 -> 8
  (issue 44: both variants train with the HF forward), against ``lorank-2x8`` in the same run (headline ``variants``):

    nice -n 5 .venv/bin/python benchmarks/train_speed.py --configs lorank-2x8,lorank-2x8-hf,dylora-r32,adalora-12to8 \
        --out results/train_speed_variants.json

- ``gemma-2x8`` / ``gemma-2x8-hf``: ``lorank-2x8`` on Gemma 3 270M (``model: gemma3-270m``; issue 43) with the
  packed forward (auto) and with ``forward: hf``, in the same run; the headline's ``gemma`` gives their ratio:

    nice -n 5 .venv/bin/python benchmarks/train_speed.py --configs gemma-2x8,gemma-2x8-hf,lorank-2x8 \
        --out results/train_speed_gemma.json

Figures per configuration: real (non-pad) tokens/s and pairs/s over the measured steps, padded tokens,
peak RSS, CPU use (process CPU seconds / wall seconds / threads: < 0.9 means other jobs took cores),
ratio to ``plain``, and MFU.

MFU (model FLOPs utilisation) = useful FLOPs per second / the CPU's peak. Useful FLOPs per real token
of a training step, frozen base + LoRA (padding counts as waste): 4*N + 6*L*d*T + 6*N_lora, with
N = 106.2M (the blocks' linear weights), L = 30 layers, d = 576, T = the token-weighted mean sequence
length (causal attention), N_lora = 2.44M (Gemma 3 270M: N = 100.3M, L = 18, d = 4 heads x 256 = 1024,
N_lora = 1.90M; ``SHAPES``): the forward is 2*N + 2*L*d*T, the backward computes only
activation gradients for the frozen linears (1x forward) and 2x for attention, LoRA adds its 6*N_lora.
Recomputation (gradient checkpointing, grad_cache) is not useful work. The peak is the fastest
measured fp32 matmul rate of this CPU (``peak``: 1024^3 matmul and a 2048x576x1536 linear's forward
``x @ W^T`` and activation-gradient ``g @ W``, fp32 and bf16, measured before and after the configurations).

Writes results/train_speed.json and train_speed.png.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "train_speed.json"
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

#: lorank configurations: (group size, queries per step, TrainConfig overrides)
LORANK: dict[str, tuple[int, int, dict[str, Any]]] = {
    "lorank-2x8": (8, 2, {}),
    "lorank-2x8-nn-dropout": (8, 2, {"fast_dropout": False}),
    "lorank-2x8-nodrop": (8, 2, {"lora.dropout": 0.0}),
    "lorank-1x16": (16, 1, {}),
    "lorank-1x16-ckpt": (16, 1, {"gradient_checkpointing": True}),
    "lorank-1x16-selective": (16, 1, {"gradient_checkpointing": "selective"}),
    "lorank-1x16-gradcache": (16, 1, {"grad_cache": True, "chunk_tokens": 512}),
    "lorank-2x16-ckpt": (16, 2, {"gradient_checkpointing": True}),
    # Gemma 3 270M (issue 43): the packed forward (auto picks it on a CPU) and the HF forward, in the same run
    "gemma-2x8": (8, 2, {"model": "gemma3-270m"}),
    "gemma-2x8-hf": (8, 2, {"model": "gemma3-270m", "forward": "hf"}),
    # the seeds' other methods (issue 44) train with the HF forward (the packed one reads plain LoRA layers only):
    # SmolLM2's HF forward, DyLoRA r=32 and AdaLoRA 12 -> 8 (its schedule shrunk to fit a few steps), against
    # lorank-2x8 in the same run; the headline's ``variants`` gives their ratios (the study's cost model uses them)
    "lorank-2x8-hf": (8, 2, {"forward": "hf"}),
    "dylora-r32": (8, 2, {"lora.rank": 32, "lora.variant": "dylora", "lora.dylora": {"mode": "full"}}),
    "adalora-12to8": (8, 2, {"lora.rank": 12, "lora.variant": "adalora",
                             "lora.adalora": {"target_r": 8, "tinit": 1, "tfinal": 1, "deltaT": 1}}),
}
BASELINES = ("plain", "plain-fp32", "tevatron", "tevatron-fp32")
DEFAULT = "plain,plain-fp32,tevatron-fp32,lorank-2x8,lorank-1x16-ckpt"
#: bf16 autocast configurations: a step takes minutes on an AVX2 CPU (bf16 activation-gradient matmuls run at
#: ~2 GFLOP/s here), so they are timed on ``--bf16-steps`` steps without warm-up (one-time costs are noise there)
BF16 = ("plain", "tevatron")

N_LIN, N_LORA, LAYERS, HIDDEN = 106_168_320, 2_442_240, 30, 576
#: per model: (block linear weights, LoRA r=8 weights on all 7 projections, layers, attention width = heads x
#: head_dim). Gemma 3 270M: per layer q/o 640x1024, k/v 640x256, gate/up/down 640x2048 (its 168M embedding
#: parameters are a lookup, no matmul)
SHAPES = {"smollm2-135m": (N_LIN, N_LORA, LAYERS, HIDDEN), "gemma3-270m": (100_270_080, 1_898_496, 18, 1024)}


def train_flops_per_token(mean_len: float, model: str = "smollm2-135m") -> float:
    n_lin, n_lora, layers, width = SHAPES[model]
    return 4 * n_lin + 6 * layers * width * mean_len + 6 * n_lora


# ----------------------------------------------------------------------------------------------- workers
def fixed_groups(group_size: int, n: int, seed: int = 0) -> list[Any]:
    """``n`` DL20 training groups, drawn once with a fixed seed: every configuration of one group size
    trains on the same groups in the same order."""
    from lorank.data import resolve_eval_set
    from lorank.train.groups import GroupDataset, pools_from_qrels

    rs = resolve_eval_set("dl20")
    pools = pools_from_qrels(rs.queries, rs.passages, rs.run, rs.qrels, rel_threshold=2, max_negative_grade=0,
                             depth=100)
    ds = GroupDataset(pools, group_size, seed)
    return [ds[i] for i in random.Random(seed).sample(range(len(ds)), n)]


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1e6  # CPU seconds, peak RSS in GB (ru_maxrss is KiB)


def worker_peak() -> dict[str, Any]:
    import torch

    def rate(m: int, k: int, n: int, dtype: Any) -> float:
        a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        a @ b
        best = 0.0
        for _ in range(5 if dtype == torch.float32 else 2):
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - t0))
        return best / 1e9

    def linear_rate(fwd: bool, dtype: Any) -> float:
        # the two matmuls of a frozen linear in training: forward x @ W^T, activation gradient g @ W
        x, w, g = torch.randn(2048, 576, dtype=dtype), torch.randn(1536, 576, dtype=dtype), torch.randn(2048, 1536, dtype=dtype)
        f = (lambda: torch.nn.functional.linear(x, w)) if fwd else (lambda: g @ w)
        f()
        best = 0.0
        for _ in range(3 if dtype == torch.float32 else 1):
            t0 = time.perf_counter()
            f()
            best = max(best, 2 * 2048 * 576 * 1536 / (time.perf_counter() - t0))
        return round(best / 1e9, 1)

    out = {}
    for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        out[f"{name}_1024_gflops"] = round(rate(*((1024,) * 3 if name == "fp32" else (512,) * 3), dt), 1)
        out[f"{name}_linear_fwd_gflops"] = linear_rate(True, dt)
        out[f"{name}_linear_bwd_gflops"] = linear_rate(False, dt)
    out["peak_gflops"] = max(out["fp32_1024_gflops"], out["fp32_linear_fwd_gflops"], out["fp32_linear_bwd_gflops"])
    out["threads"] = torch.get_num_threads()
    return out


def _plain_model(dropout: float) -> tuple[Any, Any]:
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lorank.models.source import materialize, resolve_model

    path = materialize(resolve_model("smollm2-135m"))  # the embedded GGUF, dequantized to fp32 safetensors
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=64, lora_dropout=dropout,
                                             target_modules=PROJ))
    return model, tok


def worker_plain(a: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    import contextlib

    import torch

    g, bq = 8, 2
    groups = fixed_groups(g, bq * (a.warmup + a.steps))
    model, tok = _plain_model(0.1)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    rows = []
    for step in range(a.warmup + a.steps):
        batch = groups[step * bq:(step + 1) * bq]
        cpu0, wall0 = _usage()[0], time.perf_counter()
        texts = [f"query: {gr.query} document: {p.text}</s>" for gr in batch for p in gr.passages]
        enc = tok(texts, padding=True, truncation=True, max_length=196, return_tensors="pt")
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with ctx:
            logits = model(**enc).logits.view(bq, g)
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.zeros(bq, dtype=torch.long))
            loss.backward()
        opt.step()
        opt.zero_grad()
        m = enc["attention_mask"]
        rows.append({"wall_s": time.perf_counter() - wall0, "cpu_s": _usage()[0] - cpu0, "tokens": int(m.sum()),
                     "padded_tokens": int(m.numel()), "pairs": bq * g,
                     "sq_tokens": int((m.sum(1) ** 2).sum()), "loss": float(loss)})
    return {"rows": rows, "group_size": g, "queries_per_step": bq, "dtype": "bf16 autocast" if bf16 else "fp32",
            "lora_dropout": 0.1, "padding": "longest in step"}


def worker_tevatron(a: argparse.Namespace, bf16: bool) -> dict[str, Any]:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    g, bq, max_len = 8, 2, 196
    groups = fixed_groups(g, bq * (a.warmup + a.steps))
    model, tok = _plain_model(0.1)
    rows: list[dict[str, Any]] = []
    pending: dict[str, Any] = {}

    def collate(batch: list[Any]) -> dict[str, Any]:
        qs = [f"query: {gr.query}" for gr in batch for _ in gr.passages]
        ps = [f"document: {p.text}" for gr in batch for p in gr.passages]
        enc = tok(qs, ps, padding=False, truncation="only_second", max_length=max_len - 1,
                  return_token_type_ids=False)
        enc["input_ids"] = [x + [tok.eos_token_id] for x in enc["input_ids"]]
        enc["attention_mask"] = [x + [1] for x in enc["attention_mask"]]
        out = tok.pad(enc, padding="max_length", max_length=max_len, return_tensors="pt")
        m = out["attention_mask"]
        pending.update(tokens=int(m.sum()), padded_tokens=int(m.numel()), sq_tokens=int((m.sum(1) ** 2).sum()))
        return dict(out)

    class GroupTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            logits = model(**inputs).logits.view(-1, g)
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.zeros(logits.shape[0], dtype=torch.long))
            return (loss, logits) if return_outputs else loss

        def _get_train_sampler(self, *args: Any, **kw: Any) -> Any:
            return torch.utils.data.SequentialSampler(self.train_dataset)

    class Clock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.cpu0, self.t0 = _usage()[0], time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            rows.append({"wall_s": time.perf_counter() - self.t0, "cpu_s": _usage()[0] - self.cpu0,
                         "pairs": bq * g, **pending})

    model.enable_input_require_grads()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_train_batch_size=bq, learning_rate=1e-4, warmup_steps=0,
                                 max_steps=a.warmup + a.steps, bf16=bf16, use_cpu=True, gradient_checkpointing=True,
                                 gradient_checkpointing_kwargs={"use_reentrant": False}, save_strategy="no",
                                 logging_strategy="no", report_to=[], remove_unused_columns=False,
                                 disable_tqdm=True, lr_scheduler_type="linear", dataloader_num_workers=0)
        tr = GroupTrainer(model=model, args=args, train_dataset=groups, data_collator=collate, callbacks=[Clock()])
        tr.train()
    return {"rows": rows, "group_size": g, "queries_per_step": bq,
            "dtype": "bf16 (Trainer bf16=True, CPU autocast)" if bf16 else "fp32",
            "lora_dropout": 0.1, "padding": f"max_length {max_len}", "gradient_checkpointing": True}


def lorank_config(groups: list[Any], tmp: Path, group_size: int, queries: int, steps: int) -> dict[str, Any]:
    """The ``lorank.train`` config of the ``lorank-*`` configurations: ``groups`` written as Tevatron JSONL under
    ``tmp`` (one positive, the rest negatives: the reader draws all G-1 of them), LoRA r=8 alpha=64 dropout 0.1 on
    all projections, AdamW lr 1e-4, no checkpoint or evaluation inside the measured steps."""
    data = tmp / "groups.jsonl"
    with data.open("w") as fh:
        for gr in groups:
            fh.write(json.dumps({"query_id": gr.qid, "query": gr.query,
                                 "positive_passages": [{"docid": gr.passages[0].pid, "title": gr.passages[0].title,
                                                        "text": gr.passages[0].text}],
                                 "negative_passages": [{"docid": p.pid, "title": p.title, "text": p.text}
                                                       for p in gr.passages[1:]]}) + "\n")
    return {"model": "smollm2-135m", "dtype": "auto", "data": [{"kind": "tevatron", "path": str(data)}],
            "group_size": group_size, "batch_queries": queries, "lr": 1e-4, "max_steps": steps,
            "lora": {"rank": 8, "alpha": 64, "dropout": 0.1, "components": "all"},
            "checkpoints": {"every": None, "steps": [10**6]}, "eval": {"sets": []}, "output_dir": str(tmp / "run")}


def worker_lorank(a: argparse.Namespace, name: str) -> dict[str, Any]:
    import torch

    import lorank
    from lorank.train import trainer as trainer_mod
    from lorank.train.config import TrainConfig
    from lorank.train.config import _set_dotted

    g, bq, overrides = LORANK[name]
    groups = fixed_groups(g, bq * (a.warmup + a.steps))
    rows: list[dict[str, Any]] = []

    # the only patch: the groups in the fixed order (HF's sampler would shuffle them)
    trainer_mod.RerankTrainer._get_train_sampler = (  # type: ignore[method-assign]
        lambda self, *args, **kw: torch.utils.data.SequentialSampler(self.train_dataset))
    real_step = trainer_mod.RerankTrainer.training_step

    def timed_step(self: Any, model: Any, inputs: Any, num_items_in_batch: Any = None) -> Any:
        cpu0, t0 = _usage()[0], time.perf_counter()
        loss = real_step(self, model, inputs, num_items_in_batch)
        lens = [int(x) for ch in inputs["chunks"] for x in ch["attention_mask"].sum(1)]
        rows.append({"wall_s": time.perf_counter() - t0, "cpu_s": _usage()[0] - cpu0, "tokens": int(inputs["num_tokens"]),
                     "padded_tokens": int(inputs["padded_tokens"]), "pairs": len(lens),
                     "sq_tokens": sum(n * n for n in lens), "chunks": len(inputs["chunks"]), "loss": float(loss)})
        return loss

    trainer_mod.RerankTrainer.training_step = timed_step  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = lorank_config(groups, Path(tmp), g, bq, a.warmup + a.steps)
        for k, v in overrides.items():
            _set_dotted(cfg, k, v)
        res = lorank.train(TrainConfig.from_dict(cfg), progress=False, resume=False)
        summary = json.loads((Path(tmp) / "run" / "train_summary.json").read_text())
    # the tevatron reader keeps one positive and draws G-1 of G-1 negatives: the same passages (order aside)
    from lorank.models.loading import resolve_dtype_name

    return {"rows": rows, "group_size": g, "queries_per_step": bq, "dtype": resolve_dtype_name("auto"),
            "model": cfg["model"], "lora_dropout": cfg["lora"]["dropout"], "overrides": overrides, "padding": "length-sorted chunks (DP)",
            "steps_done": res.steps, "train_summary_tokens_per_s": summary.get("tokens_per_s"),
            "forward": (summary.get("execution") or {}).get("forward", "hf"),
            "torch_threads": torch.get_num_threads()}


def worker(name: str, a: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, a.src or str(ROOT / "src"))  # --src: another commit's lorank (--against)
    import logging

    logging.disable(logging.WARNING)
    t0 = time.perf_counter()
    if name == "peak":
        res = worker_peak()
    elif name == "plain":
        res = worker_plain(a, bf16=True)
    elif name == "plain-fp32":
        res = worker_plain(a, bf16=False)
    elif name == "tevatron":
        res = worker_tevatron(a, bf16=True)
    elif name == "tevatron-fp32":
        res = worker_tevatron(a, bf16=False)
    elif name in LORANK:
        res = worker_lorank(a, name)
    else:
        raise SystemExit(f"unknown config {name!r}")
    import torch

    res["peak_rss_gb"] = round(_usage()[1], 3)
    res["process_wall_s"] = round(time.perf_counter() - t0, 1)
    res["torch_threads"] = torch.get_num_threads()
    return res


# ------------------------------------------------------------------------------------------------ parent
def peak_for(dtype: str, peaks: list[dict[str, Any]]) -> float:
    """The fastest matmul rate measured in this run for the dtype a configuration computes in (GFLOP/s)."""
    kind = "bf16" if "bf16" in str(dtype) else "fp32"
    return max(p[k] for p in peaks for k in (f"{kind}_1024_gflops", f"{kind}_linear_fwd_gflops",
                                             f"{kind}_linear_bwd_gflops"))


def summarise(name: str, res: dict[str, Any], warmup: int, peaks: list[dict[str, Any]]) -> dict[str, Any]:
    peak_gflops = peak_for(res["dtype"], peaks)
    rows = res["rows"][warmup:]
    wall = sum(r["wall_s"] for r in rows)
    tok = sum(r["tokens"] for r in rows)
    mean_len = sum(r["sq_tokens"] for r in rows) / tok
    flops = train_flops_per_token(mean_len, res.get("model", "smollm2-135m")) * tok
    threads = res.get("torch_threads", 2)
    return {
        "config": name, "model": res.get("model", "smollm2-135m"), "group_size": res["group_size"], "queries_per_step": res["queries_per_step"],
        "dtype": res["dtype"], "lora_dropout": res.get("lora_dropout"), "padding": res.get("padding"),
        "overrides": res.get("overrides"), "steps_measured": len(rows),
        "tokens_per_s": round(tok / wall, 1), "pairs_per_s": round(sum(r["pairs"] for r in rows) / wall, 2),
        "padded_tokens_per_s": round(sum(r["padded_tokens"] for r in rows) / wall, 1),
        "padding_overhead": round(sum(r["padded_tokens"] for r in rows) / tok - 1, 3),
        "step_s": round(wall / len(rows), 2), "tokens_per_step": round(tok / len(rows), 1),
        "peak_rss_gb": res["peak_rss_gb"], "mfu": round(flops / wall / (peak_gflops * 1e9), 3),
        "peak_gflops": peak_gflops, "tree": res.get("tree", "current"), "forward": res.get("forward"),
        "cpu_use": round(sum(r["cpu_s"] for r in rows) / wall / threads, 2),
        "first_step_s": round(res["rows"][0]["wall_s"], 2), "process_wall_s": res["process_wall_s"],
        "load_before": res.get("load_before"), "load_after": res.get("load_after"),
    }


def steps_of(name: str, a: argparse.Namespace) -> tuple[int, int]:
    """(warm-up, measured) steps of a configuration."""
    return (0, a.bf16_steps) if name in BF16 else (a.warmup, a.steps)


def run_config(name: str, a: argparse.Namespace, src: str | None = None) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    warmup, steps = steps_of(name, a) if name != "peak" else (0, 0)
    cmd = [sys.executable, __file__, "--worker", name, "--worker-out", out, "--steps", str(steps),
           "--warmup", str(warmup)] + (["--src", src] if src else [])
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"config {name} failed (exit {proc.returncode})")
    res = json.loads(Path(out).read_text())
    os.unlink(out)
    res["load_before"], res["load_after"] = round(load0, 2), round(os.getloadavg()[0], 2)
    print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return res


def plot(results: list[dict[str, Any]], path: Path, title: str) -> None:
    from lorank.plotting import pyplot, save_figure

    plt = pyplot()
    names = [r["config"] for r in results]
    colors = ["#999999" if not n.startswith("lorank") else "#9ecae1" if "@" in n else "#2b7bba" for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(16, 0.5 * len(names) + 2.2), sharey=True,
                             gridspec_kw={"width_ratios": [1.6, 1, 1]})
    for ax, key, label in ((axes[0], "tokens_per_s", "real tokens/s"), (axes[1], "peak_rss_gb", "peak RSS (GB)"),
                           (axes[2], "mfu", "MFU (vs the measured peak of its dtype)")):
        vals = [r[key] for r in results]
        ax.barh(range(len(names)), vals, color=colors)
        for i, v in enumerate(vals):
            ratios = [f"{results[i][k]:.2f}x {lab}" for k, lab in (("ratio_vs_plain", "plain"),
                      ("ratio_vs_plain_fp32", "plain-fp32")) if results[i].get(k)]
            extra = f"  ({', '.join(ratios)})" if key == "tokens_per_s" and ratios else ""
            ax.text(v, i, f" {v:g}{extra}", va="center", fontsize=8)
        ax.set_xlabel(label)
        ax.set_xlim(0, max(vals) * (2.1 if key == "tokens_per_s" else 1.45))
        if key == "peak_rss_gb":
            ax.axvline(3.0, color="red", lw=0.8, ls="--")
            ax.text(3.0, len(names) - 0.5, " 3 GB target", color="red", fontsize=8)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels([f"{r['config']} ({r['queries_per_step']}x{r['group_size']}, {r['dtype']})"
                             for r in results], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def headline(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue asks for: the plain loop (``baseline``, bf16 autocast as in BASELINES.md),
    lorank at the same 2 x 8 pairs per step (``lorank``), their ratio (``speedup``); and the same against the
    plain loop in fp32, the Tevatron-style Trainer, and lorank at G=16."""
    keys = ("config", "dtype", "group_size", "queries_per_step", "tokens_per_s", "pairs_per_s", "peak_rss_gb",
            "mfu", "step_s", "steps_measured")
    rows = {r["config"]: r for r in table}
    pick = lambda n: {k: rows[n].get(k) for k in keys}  # noqa: E731
    out: dict[str, Any] = {}
    for key, name in (("baseline", "plain"), ("baseline_fp32", "plain-fp32"), ("baseline_tevatron", "tevatron-fp32"),
                      ("baseline_tevatron_bf16", "tevatron"), ("lorank", "lorank-2x8"),
                      ("lorank_g16", "lorank-1x16-ckpt")):
        if name in rows:
            out[key] = pick(name)
    if "gemma-2x8" in rows and "gemma-2x8-hf" in rows:  # issue 43: Gemma's packed forward against its HF one
        out["gemma"] = {"packed": pick("gemma-2x8"), "hf": pick("gemma-2x8-hf"),
                        "forward": rows["gemma-2x8"].get("forward"),
                        "speedup_packed_vs_hf": round(rows["gemma-2x8"]["tokens_per_s"]
                                                      / rows["gemma-2x8-hf"]["tokens_per_s"], 2)}
    variants = {n: rows[n]["tokens_per_s"] for n in ("lorank-2x8-hf", "dylora-r32", "adalora-12to8") if n in rows}
    if variants and "lorank-2x8" in rows:  # issue 44: the HF-forward variants against the packed forward
        base = rows["lorank-2x8"]["tokens_per_s"]
        out["variants"] = {"packed_tokens_per_s": base, "tokens_per_s": variants,
                           "slowdown_vs_packed": {n: round(base / v, 2) for n, v in variants.items()}}
    if "lorank" in out:
        for key, base in (("speedup", "baseline"), ("speedup_vs_fp32", "baseline_fp32"),
                          ("speedup_vs_tevatron", "baseline_tevatron")):
            if base in out:
                out[key] = round(out["lorank"]["tokens_per_s"] / out[base]["tokens_per_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=DEFAULT, help=f"comma-separated; known: {', '.join(BASELINES + tuple(LORANK))}")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per configuration")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--bf16-steps", type=int, default=1, help="measured steps of the bf16 configurations (no warm-up)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--against", metavar="COMMIT",
                    help="also run every lorank configuration on this commit's lorank (a git worktree), in the same run")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the configurations this many times, interleaved with --against's; the median counts")
    ap.add_argument("--src", help=argparse.SUPPRESS)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        res = worker(a.worker, a)
        Path(a.worker_out).write_text(json.dumps(res))
        return 0
    names = [n.strip() for n in a.configs.split(",") if n.strip()]
    t0 = time.perf_counter()
    against = against_tree(a.against) if a.against else None
    print("peak matmul rates ...", flush=True)
    peak = run_config("peak", a)
    runs: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(a.rounds):
        for n in names:
            trees = [(n, None)] + ([(f"{n}@{against['commit'][:7]}", against["src"])]
                                   if against and n in LORANK else [])
            for label, src in trees:
                print(f"round {rnd + 1}/{a.rounds}: {label}", flush=True)
                res = run_config(n, a, src)
                res["tree"] = against["commit"] if src else "current"
                runs.setdefault(label, []).append(res)
    peak_after = run_config("peak", a)
    peaks = [peak, peak_after]
    table = []
    for label, rs in runs.items():
        base_name = label.split("@")[0]
        rows = [summarise(label, r, steps_of(base_name, a)[0], peaks) for r in rs]
        best = sorted(rows, key=lambda r: r["tokens_per_s"])[len(rows) // 2]  # the median round
        best["rounds_tokens_per_s"] = [r["tokens_per_s"] for r in rows]
        table.append(best)
    base = next((r["tokens_per_s"] for r in table if r["config"] == "plain"), None)
    base32 = next((r["tokens_per_s"] for r in table if r["config"] == "plain-fp32"), None)
    for r in table:
        r["ratio_vs_plain"] = round(r["tokens_per_s"] / base, 2) if base else None
        r["ratio_vs_plain_fp32"] = round(r["tokens_per_s"] / base32, 2) if base32 else None
    sys.path.insert(0, str(ROOT / "src"))
    from lorank.atomic import atomic_write_json
    from lorank.train.run import software_versions

    out = {"command": "python benchmarks/train_speed.py " + " ".join(sys.argv[1:]),
           "machine": {"cores": len(os.sched_getaffinity(0)), "cpu_capability": _cpu_cap(),
                       "cpu_bf16": _cpu_bf16(), "peak_before": peak, "peak_after": peak_after,
                       "peak_fp32_gflops": peak_for("fp32", peaks), "peak_bf16_gflops": peak_for("bf16", peaks)},
           "mfu_formula": "train FLOPs per real token = 4*N + 6*L*d*T + 6*N_lora (N=106.2M block linear weights, "
                          "L=30, d=576, T=token-weighted mean length, N_lora=2.44M); MFU = that * tokens/s / peak",
           "limit_fraction_formula": "limit_fraction = lorank's MFU: useful FLOPs/s over the fastest matmul rate "
                                     "measured in this run for the dtype it trains in (bf16 or fp32)",
           "rounds": a.rounds, "steps": a.steps, "warmup": a.warmup, "bf16_steps": a.bf16_steps, "wall_s": round(time.perf_counter() - t0, 1),
           "results": table, "versions": software_versions()}
    out = {**headline(table), **against_headline(table, against), **out}
    atomic_write_json(a.out, out)
    plot(table, a.out.with_suffix(".png"),
         f"SmolLM2-135M LoRA r8 training, {out['machine']['cores']}-core {_cpu_cap()} CPU (peak matmul fp32 "
         f"{peak_for('fp32', peaks):.0f} / bf16 {peak_for('bf16', peaks):.0f} GFLOP/s); "
         + (f"@{against['commit'][:7]} = that commit, same run; " if against else "")
         + f"{a.steps} steps after {a.warmup} warm-up, upper median of {a.rounds} round(s), each a fresh process")
    for r in table:
        print(f"{r['config']:24s} {r['queries_per_step']}x{r['group_size']:<3d} {r['tokens_per_s']:8.1f} tok/s "
              f"{r['pairs_per_s']:6.2f} pairs/s  RSS {r['peak_rss_gb']:5.2f} GB  MFU {r['mfu']:.2f}  "
              f"x{r['ratio_vs_plain']} (x{r['ratio_vs_plain_fp32']} vs plain-fp32)  cpu {r['cpu_use']}")
    print(f"wrote {a.out} ({out['wall_s']:.0f} s)")
    return 0


def against_tree(commit: str) -> dict[str, str]:
    """A git worktree of ``commit`` (made once under /tmp, reused): its ``src`` is put first on the workers'
    ``sys.path``, so the same benchmark code runs that commit's lorank."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", commit], capture_output=True, text=True, check=True
                         ).stdout.strip()
    tree = Path(tempfile.gettempdir()) / f"lorank-against-{sha[:12]}"
    if not (tree / "src" / "lorank").is_dir():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), sha], check=True,
                       capture_output=True)
    return {"commit": sha, "src": str(tree / "src"), "worktree": str(tree)}


def against_headline(table: list[dict[str, Any]], against: dict[str, str] | None) -> dict[str, Any]:
    """``lorank`` / ``against`` on the 2 x 8 configuration, measured in this run, their ratio and the MFU."""
    rows = {r["config"]: r for r in table}
    cur = rows.get("lorank-2x8")
    if cur is None:
        return {}
    keys = ("tokens_per_s", "rounds_tokens_per_s", "mfu", "peak_rss_gb", "dtype", "forward", "step_s")
    out: dict[str, Any] = {"lorank": {k: cur.get(k) for k in keys}, "limit_fraction": cur["mfu"],
                           "peak_rss_gb": cur["peak_rss_gb"], "dtype": cur["dtype"], "cpu_capability": _cpu_cap(),
                           "cpu_bf16": _cpu_bf16()}
    if against:
        old = rows.get(f"lorank-2x8@{against['commit'][:7]}")
        if old is not None:
            out["against"] = {"commit": against["commit"], **{k: old.get(k) for k in keys}}
            out["speedup_vs_against"] = round(cur["tokens_per_s"] / old["tokens_per_s"], 2)
            # each round ran both trees back to back: the ratio within a round cancels slow drifts of the machine
            pairs = sorted(round(x / y, 2) for x, y in zip(cur["rounds_tokens_per_s"], old["rounds_tokens_per_s"]))
            out["speedup_by_round"] = pairs
            out["speedup_median_of_rounds"] = pairs[len(pairs) // 2] if len(pairs) % 2 else round(
                (pairs[len(pairs) // 2 - 1] + pairs[len(pairs) // 2]) / 2, 2)
    return out


def _cpu_bf16() -> str | None:
    from lorank.precision import cpu_bf16_capability

    return cpu_bf16_capability()


def _cpu_cap() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    raise SystemExit(main())
