"""Tiny saved adapters (random-init backbones, LoRA B given nonzero random values) and a tiny TREC set."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch

from tests.tinydata import make_trec_dir, save_tiny_model


def randomize_lora(pm, seed: int, std: float = 0.2, head: bool = True) -> None:
    """PEFT initialises B = 0 (a zero delta); give A and B random values (and the head, as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if "lora_A" in n or "lora_B" in n or (head and "modules_to_save" in n):
                p.copy_(torch.randn(p.shape, generator=g) * std)


def save_adapter(model_dir: Path, out: Path, seed: int, rank: int = 4, alpha: float = 8, variant: str = "lora",
                 layers: str = "all") -> Path:
    """A lorank-style checkpoint dir: PEFT adapter (safetensors) + lorank_checkpoint.json."""
    from transformers import AutoModelForSequenceClassification

    from lorank.lora import LoraSpec, apply_lora

    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1)
    spec = LoraSpec(rank=rank, alpha=alpha, dropout=0.0, variant=variant, layers=layers)
    pm = apply_lora(base, spec)
    randomize_lora(pm, seed)
    pm.save_pretrained(out)
    meta = {"base_model": str(model_dir), "model_path": str(model_dir), "input": {"max_len": 64, "query_max_len": 16},
            "lora": spec.to_dict(), "dtype": "fp32", "pad_token_id": 1, "step": seed}
    (out / "lorank_checkpoint.json").write_text(json.dumps(meta))
    return out


@contextlib.contextmanager
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine a busy neighbour makes
    torch's second thread spin (measured: a 64x128 linear at 8 ms with 2 threads vs 0.07 ms with 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """One torch thread for every test of the package that imports this fixture (:func:`one_torch_thread`)."""
    with one_torch_thread():
        yield


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """model dir, two checkpoints of one 'run' (seeds 1 and 2), a TREC folder."""
    root = tmp_path_factory.mktemp("analyze")
    model = save_tiny_model(root / "model")
    run = root / "run"
    a = save_adapter(model, run / "checkpoint-1", seed=1)
    b = save_adapter(model, run / "checkpoint-2", seed=2)
    data = make_trec_dir(root / "data", n_queries=6, n_cands=12)
    return {"root": root, "model": model, "a": a, "b": b, "run": run, "data": data}
