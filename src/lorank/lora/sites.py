"""The LoRA sites of a PEFT model: every LoRA-wrapped projection, named by (layer, projection) through the
architecture map, and the per-site switches the rest of lorank needs (the delta on/off, its scale, the input cast).

Every reader of "which modules carry LoRA" asks here, so PEFT's layer attributes (``lora_A``, ``scaling``,
``active_adapters``, ``enable_adapters`` ...) are named in :mod:`lorank.lora` only.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from lorank.errors import ConfigError
from lorank.models.arch import arch_for

#: what a latent feature is (:func:`latent_modules`): the meta of a feature table records it
LATENT_ACTIVATION = "lora_A output (A x), eval mode: no dropout, before scaling and B"


@dataclass(frozen=True)
class LoraSite:
    name: str
    layer: int
    projection: str
    component: str
    module: Any


def is_lora_layer(mod: Any) -> bool:
    """A PEFT LoRA layer with at least one adapter (a ``base_layer`` and a non-empty ``lora_A``)."""
    lora_a = getattr(mod, "lora_A", None)
    return hasattr(mod, "base_layer") and isinstance(lora_a, torch.nn.ModuleDict) and len(lora_a) > 0


def is_adalora_layer(mod: Any) -> bool:
    """A PEFT AdaLoRA layer (``SVDLinear``) with at least one adapter: its factors ``lora_A`` (P), ``lora_E``
    (the singular values) and ``lora_B`` (Q) are parameters, not modules; its delta is
    ``B (E * A) * scaling / ranknum``."""
    lora_e = getattr(mod, "lora_E", None)
    return hasattr(mod, "base_layer") and isinstance(lora_e, torch.nn.ParameterDict) and len(lora_e) > 0


def is_delta_layer(mod: Any) -> bool:
    """A layer whose delta the dissection switches off, keeps or scales: a LoRA or an AdaLoRA layer."""
    return is_lora_layer(mod) or is_adalora_layer(mod)


def refuse_adalora(mod: Any, what: str) -> None:
    """Refuse, naming ``what``, an operation on a layer's LoRA factors that AdaLoRA's three-factor delta does not
    support (the delta's on/off and scale work on both)."""
    if is_adalora_layer(mod):
        raise ConfigError(f"{what} is not supported for AdaLoRA adapters (their delta is B (E * A) / ranknum, "
                          "three factors, not LoRA's B A); switching deltas off, keeping or scaling them is "
                          "(sweeps components, projections, layers-*, scale), and lorank analyze adalora shows the "
                          "ranks each module kept")


def adapter_names(mod: Any) -> list[str]:
    """The active adapters of a LoRA layer (PEFT's ``active_adapters``)."""
    return list(getattr(mod, "active_adapters", []))


def lora_layers(model: Any) -> list[Any]:
    """Every PEFT LoRA layer of ``model``, in module order (whether the map knows its projection or not); AdaLoRA
    layers are not among them (:func:`is_adalora_layer`)."""
    return [m for m in model.modules() if is_lora_layer(m)]


def _sites(model: Any) -> Iterator[LoraSite]:
    arch = arch_for(model.config)
    for name, mod in model.named_modules():
        if not is_delta_layer(mod):
            continue
        parsed = arch.parse(name)
        if parsed is None:
            continue
        layer, proj = parsed
        yield LoraSite(name, layer, proj, arch.component_of(proj), mod)


def lora_sites(model: Any) -> list[LoraSite]:
    """Every LoRA-wrapped projection of a PEFT model (LoRA or AdaLoRA), with its layer, projection and
    component."""
    sites = list(_sites(model))
    if not sites:
        raise ConfigError("the model has no LoRA modules to ablate (is it a PEFT model with a LoRA adapter?)")
    return sites


def latent_modules(model: Any) -> dict[tuple[int, str], Any]:
    """``{(layer, projection): lora_A module of the active adapter}`` of every LoRA-wrapped projection: its output
    is ``A x`` (:data:`LATENT_ACTIVATION`). A merged layer never computes it, so it is refused."""
    out: dict[tuple[int, str], Any] = {}
    for s in _sites(model):
        refuse_adalora(s.module, "latent LoRA features (A x)")
        lora_a = s.module.lora_A
        if getattr(s.module, "merged", False):
            raise ConfigError(f"{s.name}: the LoRA delta is merged into the base weight, so A x is never computed; "
                              "unmerge it (model.unmerge_adapter()) or load the adapter unmerged")
        active = [a for a in (getattr(s.module, "active_adapters", None) or list(lora_a)) if a in lora_a]
        if active:
            out[(s.layer, s.projection)] = lora_a[active[0]]
    return out


def target_counts(model: Any) -> dict[str, int]:
    """``{projection: how many layers wrap it}``, as a run's ``config.json`` records them (``lora_targets``)."""
    return dict(Counter(name.rsplit(".", 1)[-1] for name, m in model.named_modules() if is_lora_layer(m)))


def adapter_ranks(mod: Any) -> list[int]:
    """The rank of each active adapter of a LoRA layer."""
    return [mod.r[a] for a in adapter_names(mod)]


def set_delta_enabled(mod: Any, on: bool) -> None:
    """Switch a layer's LoRA delta on or off with its own enable flag (never ``disable_adapter()``, which would also
    swap the trained score head back, and never a merge). Exact for DoRA too. Flips the adapter's requires_grad."""
    mod.enable_adapters(on)


def scale_delta(mod: Any, factor: float) -> None:
    """Multiply the scaling of each active adapter of a layer by ``factor``."""
    for a in adapter_names(mod):
        mod.scaling[a] = mod.scaling[a] * factor


@dataclass
class DeltaState:
    """What :func:`set_delta_enabled` and :func:`scale_delta` change on one layer, to put back."""

    disabled: bool
    scaling: dict[str, float]
    requires_grad: list[tuple[torch.nn.Parameter, bool]]


def delta_state(mod: Any) -> DeltaState:
    return DeltaState(bool(mod.disable_adapters), dict(mod.scaling), [(p, p.requires_grad) for p in mod.parameters()])


def restore_delta_state(mod: Any, state: DeltaState) -> None:
    """The scaling, the enable flag and every parameter's requires_grad as in ``state``."""
    mod.scaling.clear()
    mod.scaling.update(state.scaling)
    mod.enable_adapters(not state.disabled)
    for p, rg in state.requires_grad:  # enable_adapters() flips requires_grad
        p.requires_grad_(rg)


def disable_input_cast(model: Any) -> int:
    """Stop PEFT from casting each LoRA layer's input to the adapter's dtype (fp32 master weights).

    Under bf16 autocast the cast is pure waste: every LoRA-wrapped projection made an fp32 copy of its
    bf16 input (2x its size, kept for the backward; 7 per block) that autocast then cast back to bf16 for
    the matmul. Use only when the forward runs under autocast (HF Trainer ``bf16=True``). Returns how many
    layers were changed."""
    n = 0
    for mod in model.modules():
        if hasattr(mod, "lora_A") and hasattr(mod, "_cast_input_dtype"):
            mod.cast_input_dtype_enabled = False
            n += 1
    return n
