"""DyLoRA (Valipour et al., EACL 2023, arXiv:2210.07558): one LoRA of rank r trained to work at every rank b <= r.

Each optimizer step samples ``b`` uniformly from 1..r (:func:`sample_rank`: from the run's seed and the step alone,
so a resumed run draws the same ranks) and the LoRA update of every wrapped projection uses only the first ``b``
rows of A and the first ``b`` columns of B, at the scale ``alpha / b`` (the paper's Eq. for the truncated block,
``W0 x + (alpha/b) W_up[:, :b] W_dw[:b, :] x``). Two modes of the paper:

- ``full`` (lorank's default): every factor of the truncated block, rows/columns 1..b, gets its gradient.
- ``frozen``: only row/column ``b`` (the one that the rank-b block adds to the rank-(b-1) one) gets a gradient;
  rows/columns 1..b-1 take part in the forward detached (the paper's "frozen" DyLoRA, as LyCORIS implements it).

The adapter stays a plain PEFT LoRA of rank r and ``lora_alpha`` alpha: outside training (eval mode) it is the
rank-r LoRA, PEFT's ``alpha / r``, and it saves and loads as any LoRA. Truncated to rank k afterwards
(:func:`prefix_factors`, the ablation op ``prefix``) it is the rank-k LoRA that training saw at ``b = k``.

Like every single-matrix implementation (the authors' too), rows beyond ``b`` get a zero gradient at a step, not
none: AdamW's momentum and weight decay still move them a little.
"""
from __future__ import annotations

import types
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lorank.lora.sites import lora_layers

DYLORA_MODES = ("full", "frozen")


def sample_rank(seed: int, step: int, rank: int) -> int:
    """The rank ``b`` (1..rank, uniform) that DyLoRA trains at optimizer step ``step`` (1-based) of a run seeded
    ``seed``: a function of the two alone (numpy's SeedSequence over them), independent of any other RNG."""
    return int(np.random.default_rng([int(seed), int(step), 0x4459]).integers(1, rank + 1))


def prefix_factors(A: torch.Tensor, B: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(A', B', factor)``: A and B of the same shapes with rows/columns past ``k`` zeroed, and the factor that turns
    the rank-r scale ``alpha / r`` into ``alpha / k`` (``r / k``): the rank-k LoRA of a DyLoRA adapter."""
    r = A.shape[0]
    k = max(0, min(int(k), r))
    newA, newB = torch.zeros_like(A), torch.zeros_like(B)
    newA[:k] = A[:k]
    newB[:, :k] = B[:, :k]
    return newA, newB, (r / k if k else 0.0)


def _rows(w: torch.Tensor, b: int, frozen: bool, dim: int) -> torch.Tensor:
    """The first ``b`` rows (dim 0) or columns (dim 1) of ``w``; ``frozen``: all but the last of them detached."""
    part = w.narrow(dim, 0, b)
    if not frozen or b == 1:
        return part
    return torch.cat([w.narrow(dim, 0, b - 1).detach(), w.narrow(dim, b - 1, 1)], dim=dim)


class DyLoraTruncation:
    """The per-step truncation on a PEFT LoRA model: :meth:`set_rank` chooses ``b``; while a LoRA factor module is
    in training mode, A gives only its first ``b`` outputs and B reads them at ``alpha / b``. In eval mode, or with
    no rank set, the modules are PEFT's own. :meth:`remove` puts their own forwards back."""

    def __init__(self, model: Any, mode: str = "full"):
        if mode not in DYLORA_MODES:
            raise ValueError(f"DyLoRA mode must be one of {DYLORA_MODES}, got {mode!r}")
        self.mode = mode
        self.b: int | None = None
        self.patched: list[Any] = []
        for layer in lora_layers(model):
            for name in layer.lora_A:
                self._patch(layer.lora_A[name], layer.lora_B[name])
        if not self.patched:
            raise ValueError("DyLoRA: the model has no LoRA layers")
        self.rank = max(int(m.weight.shape[0]) for m in self.patched[::2])

    def _patch(self, lin_a: torch.nn.Linear, lin_b: torch.nn.Linear) -> None:
        ctl = self
        r = int(lin_a.weight.shape[0])

        def forward_a(mod: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
            b = ctl.active(mod, r)
            if b is None:
                return F.linear(x, mod.weight, mod.bias)
            return F.linear(x, _rows(mod.weight, b, ctl.mode == "frozen", 0))

        def forward_b(mod: torch.nn.Linear, h: torch.Tensor) -> torch.Tensor:
            b = ctl.active(mod, r)
            if b is None:
                return F.linear(h, mod.weight, mod.bias)
            # PEFT multiplies by alpha / r afterwards: r / b makes it the rank-b block's alpha / b
            return F.linear(h, _rows(mod.weight, b, ctl.mode == "frozen", 1)) * (r / b)

        for mod, fn in ((lin_a, forward_a), (lin_b, forward_b)):
            mod.forward = types.MethodType(fn, mod)
            self.patched.append(mod)

    def active(self, mod: torch.nn.Module, r: int) -> int | None:
        """The rank this forward truncates to, or None for the module's plain forward (eval mode, no rank set, or
        ``b == r`` in full mode, which is the plain forward)."""
        b = self.b
        if b is None or not mod.training or (b >= r and self.mode == "full"):
            return None
        return min(b, r)

    def set_rank(self, b: int | None) -> None:
        if b is not None and not 1 <= b <= self.rank:
            raise ValueError(f"DyLoRA rank {b} is outside 1..{self.rank}")
        self.b = b

    def remove(self) -> None:
        for mod in self.patched:
            del mod.forward  # the instance attribute: the class's forward shows again
        self.patched = []
        self.b = None
