"""Per-phase timing of one LoRA training forward/backward on a random-init model (GPU diagnosis).

    python benchmarks/gpu_diag.py --shape llama-3.1-8b
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="llama-3.1-8b")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForSequenceClassification

    from lorank.lora import LoraSpec, apply_lora
    from lorank.models.random_init import config_for
    from lorank.lora.dropout import use_fast_dropout
    from lorank.train.trainer import enable_checkpointing

    dev = a.device
    sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)
    cfg = config_for(a.shape)
    cfg.pad_token_id = 1
    with torch.device(dev):
        base = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.bfloat16 if dev == "cuda" else torch.float32,
                                                              attn_implementation="sdpa")
    base.score.float()
    V = cfg.vocab_size

    def batch(b: int, t: int, pad: bool):
        ids = torch.randint(3, V, (b, t), device=dev)
        mask = torch.ones(b, t, dtype=torch.long, device=dev)
        if pad:
            mask[: b // 2, t - 20:] = 0
        return ids, mask

    def timed(model, b, t, pad, train, label):
        ids, mask = batch(b, t, pad)
        sync()
        t0 = time.perf_counter()
        with torch.autocast(dev, dtype=torch.bfloat16), (torch.enable_grad() if train else torch.no_grad()):
            out = model(input_ids=ids, attention_mask=mask).logits.float().sum()
        sync()
        t1 = time.perf_counter()
        if train:
            out.backward()
            sync()
        t2 = time.perf_counter()
        tok = b * t
        print(f"{label:28s} b={b} t={t} pad={pad} fwd {t1-t0:7.3f}s bwd {t2-t1:7.3f}s  fwd {tok/(t1-t0):9.0f} tok/s", flush=True)

    base.eval()
    for t in (196, 196, 150):
        timed(base, 64, t, True, False, "base inference")
    timed(base, 64, 150, False, False, "base inference nopad")
    model = apply_lora(base, LoraSpec(rank=8, alpha=64, dropout=0.1))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model.eval()
    for t in (196, 150):
        timed(model, 64, t, True, False, "lora inference")
    model.train()
    for t in (150, 150, 140):
        timed(model, 64, t, True, True, "lora train nn.Dropout")
    timed(model, 64, 140, False, True, "lora train nopad")
    use_fast_dropout(model)
    for t in (150, 140):
        timed(model, 64, t, True, True, "lora train FastDropout")
    enable_checkpointing(model, "full")
    for t in (150, 140):
        timed(model, 64, t, True, True, "lora train fastdrop+ckpt")
    if dev == "cuda":
        from torch.profiler import ProfilerActivity, profile

        ids, mask = batch(64, 140, True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            with torch.autocast(dev, dtype=torch.bfloat16):
                model(input_ids=ids, attention_mask=mask).logits.float().sum().backward()
            sync()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20, max_name_column_width=50), flush=True)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50), flush=True)


if __name__ == "__main__":
    main()
