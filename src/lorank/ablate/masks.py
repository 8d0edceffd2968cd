"""Masks over trained LoRA deltas, applied at inference time without retraining.

A :class:`Mask` selects LoRA modules (by component, projection or alias, and layer set) and says
what to do with their delta B·A: switch it ``off``, ``keep`` only the selection (everything else
off), ``scale`` it, ``truncate`` it to its top-k singular directions, or keep its ``prefix``: the first k rows of A
and columns of B at the scale alpha/k (a DyLoRA adapter at rank k: :func:`lorank.lora.dylora.prefix_factors`).

- Switching off uses each ``LoraLayer``'s own enable flag (:func:`lorank.lora.sites.set_delta_enabled`), never
  ``disable_adapter()`` (which would also swap the trained score head back to its untrained original) and never a
  merge. This is exact for DoRA too, where a zero scale would *not* give back the base weight.
- Masks compose (apply several), and removing them restores every flag, scaling and weight that was
  changed to the saved original objects: scores after removal equal the unablated model's bit for bit.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from lorank.errors import ConfigError
from lorank.lora.dylora import prefix_factors
from lorank.lora.factors import delta_svd, factors, is_dora
from lorank.lora.sites import (DeltaState, LoraSite, adapter_names, delta_state, lora_sites, refuse_adalora,
                               restore_delta_state, scale_delta, set_delta_enabled)
from lorank.lora.spec import parse_layers
from lorank.models.arch import arch_for

OPS = ("off", "keep", "scale", "truncate", "prefix")
#: the ops that change the factors (and need ``rank``)
RANK_OPS = ("truncate", "prefix")


@dataclass
class Mask:
    """What to ablate. Empty selectors select everything. ``op``: off | keep | scale | truncate | prefix."""

    op: str = "off"
    components: list[str] | None = None
    projections: list[str] | None = None
    layers: str | list[int] | None = None
    factor: float = 0.0
    rank: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"unknown ablation op {self.op!r} (use one of {', '.join(OPS)})")
        if self.op == "truncate" and (self.rank is None or self.rank < 0):
            raise ConfigError("op 'truncate' needs rank >= 0")
        if self.op == "prefix" and (self.rank is None or self.rank < 1):
            raise ConfigError("op 'prefix' needs rank >= 1")

    def selects(self, model: Any) -> list[LoraSite]:
        arch = arch_for(model.config)
        sites = lora_sites(model)
        n_layers = arch.num_layers(model.config)
        layers = set(parse_layers(self.layers, n_layers)) if self.layers not in (None, "all") else None
        projs: set[str] | None = None
        if self.projections:
            projs = set()
            for p in self.projections:
                projs.update(arch.resolve_projection(p))
        comps = set(self.components) if self.components else None
        if comps and not comps <= {"mha", "mlp", "all"}:
            raise ConfigError(f"unknown component(s) {sorted(comps - {'mha', 'mlp', 'all'})}: use mha, mlp, all")
        if comps and "all" in comps:
            comps = None
        return [s for s in sites if (layers is None or s.layer in layers)
                and (projs is None or s.projection in projs) and (comps is None or s.component in comps)]

    def describe(self) -> str:
        if self.label:
            return self.label
        sel = []
        if self.components:
            sel.append("+".join(self.components))
        if self.projections:
            sel.append("+".join(self.projections))
        if self.layers not in (None, "all"):
            sel.append(f"L{self.layers}")
        what = ",".join(sel) or "all"
        extra = f"x{self.factor:g}" if self.op == "scale" else (f"k={self.rank}" if self.op in RANK_OPS else "")
        return f"{self.op}({what}){extra}"


@dataclass
class _Saved:
    states: dict[int, DeltaState] = field(default_factory=dict)  # enable flag, scaling, requires_grad
    weights: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


class Ablation:
    """Applied masks on one model; :meth:`remove` restores it exactly."""

    def __init__(self, model: Any, masks: list[Mask]):
        self.model = model
        self.masks = masks
        self.saved = _Saved()
        self.sites = {id(s.module): s for s in lora_sites(model)}
        self.applied = False

    def _save(self, mod: Any) -> None:
        key = id(mod)
        if key not in self.saved.states:
            self.saved.states[key] = delta_state(mod)

    def apply(self) -> "Ablation":
        """Apply the masks; a mask that cannot be applied (DoRA scaled, AdaLoRA truncated) puts back what the ones
        before it changed, then raises."""
        try:
            self._apply()
        except BaseException:
            self.remove()
            raise
        self.applied = True
        return self

    def _apply(self) -> None:
        for mask in self.masks:
            chosen = {id(s.module) for s in mask.selects(self.model)}
            if mask.op == "keep":
                targets = [s for k, s in self.sites.items() if k not in chosen]
                op = "off"
            else:
                targets = [self.sites[k] for k in chosen]
                op = mask.op
            for s in targets:
                self._save(s.module)
                if op == "off" or (op == "scale" and mask.factor == 0.0):
                    set_delta_enabled(s.module, False)
                elif op == "scale":
                    if is_dora(s.module) and mask.factor != 1.0:
                        raise ConfigError(f"{s.name}: scaling a DoRA delta by {mask.factor} is not defined; "
                                          "use op 'off' or factor 0/1")
                    scale_delta(s.module, mask.factor)
                elif op == "truncate":
                    self._truncate(s.module, int(mask.rank or 0))
                elif op == "prefix":
                    self._prefix(s.module, int(mask.rank or 0))

    def _truncate(self, mod: Any, k: int) -> None:
        if is_dora(mod):
            raise ConfigError("rank truncation of DoRA adapters is not supported")
        refuse_adalora(mod, "rank truncation (op 'truncate', sweep rank-truncation)")
        for a in adapter_names(mod):
            A, B = factors(mod, a)  # A: (r, in), B: (out, r)
            key = id(mod)
            if key not in self.saved.weights:
                self.saved.weights[key] = (A.data, B.data)
            r = A.shape[0]
            if k >= r:
                continue
            U, S, Vh = delta_svd(B.data, A.data)
            k = min(k, S.shape[0])
            newB = torch.zeros_like(B.data)
            newA = torch.zeros_like(A.data)
            newB[:, :k] = (U[:, :k] * S[:k]).to(B.dtype)
            newA[:k, :] = Vh[:k, :].to(A.dtype)
            A.data, B.data = newA, newB

    def _prefix(self, mod: Any, k: int) -> None:
        """The first ``k`` rows of A / columns of B, the scale times r/k (alpha/k): a DyLoRA adapter at rank k."""
        if is_dora(mod):
            raise ConfigError("prefix truncation of DoRA adapters is not supported")
        refuse_adalora(mod, "prefix truncation (op 'prefix', sweep rank-prefix)")
        self._save(mod)  # the scaling, put back by remove()
        for a in adapter_names(mod):
            A, B = factors(mod, a)
            key = id(mod)
            if key not in self.saved.weights:
                self.saved.weights[key] = (A.data, B.data)
            if k >= A.shape[0]:
                continue
            A.data, B.data, factor = prefix_factors(A.data, B.data, k)
            mod.scaling[a] = mod.scaling[a] * factor

    def remove(self) -> None:
        for key, s in self.sites.items():
            mod = s.module
            if key in self.saved.weights:
                for a in adapter_names(mod):
                    A, B = factors(mod, a)
                    A.data, B.data = self.saved.weights[key]
            if key in self.saved.states:
                restore_delta_state(mod, self.saved.states[key])
        self.saved = _Saved()
        self.applied = False


@contextlib.contextmanager
def ablated(model: Any, *masks: Mask) -> Iterator[Ablation]:
    """``with ablated(model, Mask('off', components=['mlp'])): scores = ...`` — restored on exit."""
    ab = Ablation(model, list(masks)).apply()
    try:
        yield ab
    finally:
        ab.remove()
