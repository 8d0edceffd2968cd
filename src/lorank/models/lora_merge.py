"""LoRA merged into the base weights for a while, then the base weights restored bit for bit.

Scoring a merged model costs one matmul per projection instead of base + A + B + scale + add (1.37x on DL19
top-50 in fp32, session 13). PEFT's ``unmerge_adapter`` subtracts the delta again, which leaves the frozen
weights off by rounding; a model that goes on training (checkpoint evaluation inside ``lorank train``) must get
its exact weights back, so :func:`merged_lora` keeps a copy of every base weight it merges into and copies it
back. The copy costs the LoRA-wrapped weights' memory once more (~0.4 GB for SmolLM2-135M in fp32), which is
why :func:`merge_by_default` takes it on CPUs only.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


def lora_modules(model: Any) -> list[Any]:
    """PEFT LoRA layers of ``model`` (modules with a ``base_layer`` and ``lora_A``)."""
    return [m for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A") and len(m.lora_A)]


def merge_by_default(device: Any) -> bool:
    """Merge for checkpoint evaluation unless told: on CPUs, where the per-projection LoRA matmuls weigh most and
    the weight copy is cheap in RAM; not on GPUs, where the copy takes accelerator memory for little gain."""
    return torch.device(device).type == "cpu"


@contextlib.contextmanager
def merged_lora(model: Any) -> Iterator[int]:
    """Inside: every LoRA delta merged into its base weight (``model.merge_adapter()``). On exit, even on an error:
    every base weight is the very tensor it was (same object, so views of fused weights stay views) holding the
    very values it held, and no layer counts as merged. Yields how many layers were merged (0: nothing to merge,
    or already merged, and then nothing is touched)."""
    mods = lora_modules(model)
    if not mods or not hasattr(model, "merge_adapter") or any(getattr(m, "merged", False) for m in mods):
        yield 0
        return
    saved = []
    with torch.no_grad():
        for m in mods:
            w = m.base_layer.weight
            saved.append((m, w, w.data, w.data.clone()))
    try:
        model.merge_adapter()
        yield len(mods)
    finally:
        with torch.no_grad():
            for m, w, data, copy in saved:
                if w.data_ptr() != data.data_ptr():  # a merge that assigned a new tensor: put the old one back
                    w.data = data
                data.copy_(copy)
                m.merged_adapters.clear()
