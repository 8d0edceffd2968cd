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

from lorank.lora.factors import is_dora
from lorank.lora.sites import lora_layers


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
    mods = lora_layers(model)
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


def merge_blocker(modules: list[Any]) -> str | None:
    """Why :class:`LoraMerger` cannot merge these modules (DoRA: its merge is not base + delta), else None."""
    for m in modules:
        if is_dora(m):
            return "DoRA adapters are scored unmerged (their merge is not the base weight plus B A)"
    return None


class LoraMerger:
    """Merged weights for many LoRA states of one model in turn (an ablation sweep's configurations): each
    :meth:`merge` sets the chosen modules' base weights to a pristine copy plus their delta as the modules now
    stand (scaling, enable flag, truncated factors), so merges never pile up; :meth:`restore` puts the pristine
    weights back (the same storage, the same bits) and marks nothing merged. Disabled modules get the pristine
    weight and stay unmerged, so PEFT's forward runs them as the bare base layer."""

    def __init__(self, modules: list[Any]):
        why = merge_blocker(modules)
        if why:
            raise ValueError(why)
        self.modules = list(modules)
        with torch.no_grad():
            self.pristine = {id(m): m.base_layer.weight.detach().clone() for m in self.modules}
        self.merges = 0  # module merges done (for cost accounting)

    def merge(self, modules: list[Any] | None = None) -> None:
        with torch.no_grad():
            for m in self.modules if modules is None else modules:
                w = m.base_layer.weight
                w.data.copy_(self.pristine[id(m)])
                m.merged_adapters.clear()
                if m.disable_adapters:
                    continue
                active = [a for a in m.active_adapters if a in m.lora_A]
                for a in active:
                    w.data.add_(m.get_delta_weight(a).to(w.dtype))
                m.merged_adapters.extend(active)
                self.merges += 1

    def restore(self) -> None:
        with torch.no_grad():
            for m in self.modules:
                m.base_layer.weight.data.copy_(self.pristine[id(m)])
                m.merged_adapters.clear()
