"""LoRA's A/B factors and its delta ``scaling * B @ A``: read from a live PEFT layer or from an adapter's saved
state (an AdaLoRA adapter's too, its singular values folded into A), and the delta's thin SVD from the factors (never
the full matrix).

``A`` is ``(r, in)`` and ``B`` is ``(out, r)``, as PEFT keeps them.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from lorank.errors import ConfigError
from lorank.lora.sites import adapter_names, refuse_adalora
from lorank.models.arch import ArchSpec, arch_for, known_model_types

_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B)(?:\.[^.]+)?\.weight$")
_ADALORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>A|B|E)(?:\.[^.]+)?$")  # parameters: no .weight
_MAG_KEY = re.compile(r"^(?P<module>.+)\.lora_magnitude_vector(?:\.[^.]+)?(?:\.weight)?$")
_PEFT_PREFIX = "base_model.model."


# ------------------------------------------------------------------------------------------------ live layers
def factors(mod: Any, adapter: str) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """``(A, B)``: the weight parameters of one adapter of a LoRA layer (assigning their ``.data`` changes it).
    An AdaLoRA layer is refused (its delta has a third factor, E)."""
    refuse_adalora(mod, "an operation on the A/B factors (rank truncation, rank prefix)")
    return mod.lora_A[adapter].weight, mod.lora_B[adapter].weight


def is_dora(mod: Any) -> bool:
    """Whether an active adapter of the layer is DoRA (its delta is not base + B A)."""
    flags = getattr(mod, "use_dora", {})
    return any(flags.get(a, False) for a in adapter_names(mod))


def active_lora(mod: Any) -> tuple[torch.nn.Linear, dict[str, Any] | None]:
    """(the frozen base linear, its LoRA or None) of a (possibly) PEFT-wrapped projection. The LoRA is a dict:
    ``A``, ``B`` (the weights), ``scale`` (float), ``p`` (its dropout probability), ``dora``, ``lora_bias``.
    Raises ValueError for more than one active adapter."""
    base = getattr(mod, "base_layer", None)
    if base is None:
        return mod, None
    names = [n for n in getattr(mod, "active_adapters", ["default"]) if n in mod.lora_A]
    if not names:
        return base, None
    if len(names) > 1:
        raise ValueError("more than one active LoRA adapter")
    n = names[0]
    drop = mod.lora_dropout[n]
    p = float(getattr(drop, "p", 0.0)) if not isinstance(drop, torch.nn.Identity) else 0.0
    return base, {"A": mod.lora_A[n].weight, "B": mod.lora_B[n].weight, "scale": float(mod.scaling[n]), "p": p,
                  "dora": bool(getattr(mod, "use_dora", {}).get(n, False)),
                  "lora_bias": getattr(mod.lora_B[n], "bias", None) is not None}


# ----------------------------------------------------------------------------------------------------- the delta
def delta_svd(B: torch.Tensor, A: torch.Tensor,
              scaling: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The thin SVD ``U, S, Vh`` of ``scaling * B @ A`` (``B``: out x r, ``A``: r x in), in float64, without forming
    the out x in product: with ``B = Qb Rb`` and ``A^T = Qa Ra``, ``B A = Qb (Rb Ra^T) Qa^T``, so only the r x r core
    is decomposed. O((out + in) r^2) instead of O(out in r): the SVD of a full 1536 x 576 product took most of a
    rank-truncation sweep (every configuration, every chunk, every projection)."""
    Qb, Rb = torch.linalg.qr(B.double())
    Qa, Ra = torch.linalg.qr(A.double().T)
    Uc, S, Vch = torch.linalg.svd(scaling * (Rb @ Ra.T), full_matrices=False)
    return Qb @ Uc, S, Vch @ Qa.T


@dataclass
class LoraModule:
    """One LoRA-wrapped projection read from an adapter file: ``delta = scaling * B @ A``."""

    name: str           # module name without PEFT's ``base_model.model.`` prefix
    layer: int
    projection: str
    component: str
    A: torch.Tensor     # (r, in)
    B: torch.Tensor     # (out, r)
    scaling: float
    fan_in_fan_out: bool = False
    magnitude: torch.Tensor | None = None  # DoRA

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])

    @property
    def key(self) -> str:
        return f"L{self.layer}.{self.projection}"


@dataclass
class LowRankSVD:
    """Thin SVD of a module's ``scaling * B @ A`` as its weight holds it (:func:`low_rank_svd`)."""

    U: torch.Tensor   # (out, r) left singular vectors
    S: torch.Tensor   # (r,) singular values, descending, scaling included
    V: torch.Tensor   # (in, r) right singular vectors


def low_rank_svd(mod: LoraModule) -> LowRankSVD:
    """:func:`delta_svd` of a module read from an adapter, oriented as the layer's weight."""
    U, S, Vh = delta_svd(mod.B, mod.A, mod.scaling)
    V = Vh.T
    if mod.fan_in_fan_out:  # the layer computes x @ (B A): the weight is the transpose
        U, V = V, U
    return LowRankSVD(U, S, V)


# ------------------------------------------------------------------------------------------- adapter files
def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup: a key matches the end of the module name."""
    for key, val in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return val
    return default


def infer_arch(leaves: set[str]) -> ArchSpec:
    """The family whose projections most of these module leaves (``q_proj``, ...) are: an adapter file's base."""
    best, best_n = None, 0
    for spec in {arch_for(mt).family: arch_for(mt) for mt in known_model_types()}.values():
        n = len(leaves & set(spec.projections))
        if n > best_n:
            best, best_n = spec, n
    if best is None:
        raise ConfigError(f"cannot tell the model family of these LoRA modules ({sorted(leaves)}): "
                          "none is a projection in lorank's architecture map")
    return best


def _state_parts(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """``{module: {"A": .., "B": .., "m": DoRA magnitude}}`` from an adapter's saved tensors."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for k, t in state.items():
        m = _LORA_KEY.match(k)
        if m:
            parts.setdefault(m.group("module"), {})[m.group("which")] = t
            continue
        m = _MAG_KEY.match(k)
        if m:
            parts.setdefault(m.group("module"), {})["m"] = t
    return parts


def read_factors(state: dict[str, torch.Tensor], config: dict[str, Any],
                 where: Any) -> tuple[dict[tuple[int, str], LoraModule], ArchSpec]:
    """Every LoRA module of an adapter's saved state (``adapter_model.safetensors``) with its PEFT config
    (``adapter_config.json``), keyed by (layer, projection), and the family it maps onto. ``where`` names the
    adapter in errors."""
    if config.get("peft_type") == "ADALORA":
        return read_adalora_factors(state, config, where)
    parts = _state_parts(state)
    if not parts:
        raise ConfigError(f"{where}: the adapter holds no LoRA weights (lora_A / lora_B)")
    spec = infer_arch({n.rsplit(".", 1)[-1] for n in parts})
    r_default, alpha_default = int(config.get("r", 8)), float(config.get("lora_alpha", 8))
    rslora = bool(config.get("use_rslora"))
    modules: dict[tuple[int, str], LoraModule] = {}
    for full, p in parts.items():
        if "A" not in p or "B" not in p:
            raise ConfigError(f"{where}: module {full} has only lora_{'A' if 'A' in p else 'B'}")
        name = full[len(_PEFT_PREFIX):] if full.startswith(_PEFT_PREFIX) else full
        parsed = spec.parse("." + name)
        if parsed is None:
            continue
        layer, proj = parsed
        r = int(p["A"].shape[0])
        alpha = float(_pattern_value(config.get("alpha_pattern", {}), name, alpha_default))
        r_cfg = int(_pattern_value(config.get("rank_pattern", {}), name, r_default))
        if r_cfg != r:
            raise ConfigError(f"{where}: {name} has rank {r} in the weights but {r_cfg} in adapter_config.json")
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        modules[(layer, proj)] = LoraModule(name, layer, proj, spec.component_of(proj), p["A"].float(),
                                            p["B"].float(), scaling, bool(config.get("fan_in_fan_out", False)),
                                            p.get("m"))
    if not modules:
        raise ConfigError(f"{where}: no LoRA module maps onto a {spec.family} layer/projection")
    return modules, spec


def read_adalora_factors(state: dict[str, torch.Tensor], config: dict[str, Any],
                         where: Any) -> tuple[dict[tuple[int, str], LoraModule], ArchSpec]:
    """:func:`read_factors` of a saved AdaLoRA adapter: its delta ``B (E * A) * alpha / ranknum`` as a LoRA module
    with ``A = E * A`` (E, the kept singular values, folded into the rows of A) and ``scaling = alpha /
    (ranknum + 1e-5)``, PEFT's forward: ``ranknum`` is ``init_r`` (PEFT keeps the initial rank as the divisor after
    pruning). A module pruned to rank 0 is kept, with zero-size factors (its delta is zero)."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for k, t in state.items():
        m = _ADALORA_KEY.match(k)
        if m:
            parts.setdefault(m.group("module"), {})[m.group("which")] = t
    if not parts:
        raise ConfigError(f"{where}: the AdaLoRA adapter holds no factors (lora_A / lora_E / lora_B)")
    spec = infer_arch({n.rsplit(".", 1)[-1] for n in parts})
    alpha = float(config.get("lora_alpha") or 0)
    init_r = int(config["init_r"])
    scaling = (alpha if alpha > 0 else float(init_r)) / (init_r + 1e-5)
    modules: dict[tuple[int, str], LoraModule] = {}
    for full, p in parts.items():
        missing = [w for w in "AEB" if w not in p]
        if missing:
            raise ConfigError(f"{where}: AdaLoRA module {full} lacks lora_{', lora_'.join(missing)}")
        if not p["A"].shape[0] == p["E"].shape[0] == p["B"].shape[1]:
            raise ConfigError(f"{where}: AdaLoRA module {full}: lora_A, lora_E and lora_B disagree on the rank "
                              f"({p['A'].shape[0]}, {p['E'].shape[0]}, {p['B'].shape[1]})")
        name = full[len(_PEFT_PREFIX):] if full.startswith(_PEFT_PREFIX) else full
        parsed = spec.parse("." + name)
        if parsed is None:
            continue
        layer, proj = parsed
        A = p["E"].float().reshape(-1, 1) * p["A"].float()
        modules[(layer, proj)] = LoraModule(name, layer, proj, spec.component_of(proj), A, p["B"].float(), scaling,
                                            bool(config.get("fan_in_fan_out", False)))
    if not modules:
        raise ConfigError(f"{where}: no AdaLoRA module maps onto a {spec.family} layer/projection")
    return modules, spec


def is_lora_a_key(key: str, projection: str = "q_proj") -> bool:
    """Whether a state-dict key is the LoRA A factor of ``projection`` (its input width is the base's hidden size
    for q_proj): how an adapter's weights file is read for its base's shape without loading it."""
    return f"{projection}.lora_A" in key
