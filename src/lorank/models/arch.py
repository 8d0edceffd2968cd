"""The architecture map: for each model family, which modules are MHA and which are MLP.

A family is described once (an :class:`ArchSpec`) and every later stage — LoRA targeting,
ablation masks, weight analysis, probes — asks the map instead of hard-coding module names.
Register a new family with :func:`register_arch`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from lorank.errors import ConfigError

MHA = "mha"
MLP = "mlp"
COMPONENTS = (MHA, MLP)


@dataclass(frozen=True)
class ArchSpec:
    """How one model family names its transformer blocks.

    - ``model_types``: the ``config.model_type`` values this spec covers.
    - ``mha`` / ``mlp``: projection (leaf module) names of the attention and MLP blocks.
    - ``layer_pattern``: a regex whose group 1 is the layer index in a full module name.
    - ``layers_attr``: dotted path (from the backbone, e.g. ``model``) to the ``ModuleList`` of blocks.
    - ``aliases``: cross-family names (``attn.q``, ``mlp.up``) -> this family's projection names.
    - ``attn_block`` / ``mlp_block``: attribute names of the attention and MLP sub-blocks inside a layer.
    """

    family: str
    model_types: tuple[str, ...]
    mha: tuple[str, ...]
    mlp: tuple[str, ...]
    layer_pattern: str
    layers_attr: str
    attn_block: str
    mlp_block: str
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def projections(self) -> tuple[str, ...]:
        return self.mha + self.mlp

    def component_of(self, projection: str) -> str:
        if projection in self.mha:
            return MHA
        if projection in self.mlp:
            return MLP
        raise ConfigError(f"{projection!r} is not a projection of the {self.family} family "
                          f"(known: {', '.join(self.projections)})")

    def projections_of(self, component: str) -> tuple[str, ...]:
        if component == MHA:
            return self.mha
        if component == MLP:
            return self.mlp
        if component == "all":
            return self.projections
        raise ConfigError(f"unknown component {component!r}: use 'mha', 'mlp' or 'all'")

    def resolve_projection(self, name: str) -> tuple[str, ...]:
        """A projection name or a cross-family alias -> this family's projection names."""
        if name in self.projections:
            return (name,)
        if name in self.aliases:
            return self.aliases[name]
        known = ", ".join(list(self.projections) + sorted(self.aliases))
        raise ConfigError(f"unknown projection {name!r} for the {self.family} family (known: {known})")

    def layer_of(self, module_name: str) -> int | None:
        m = re.search(self.layer_pattern, module_name)
        return int(m.group(1)) if m else None

    def parse(self, module_name: str) -> tuple[int, str] | None:
        """``model.layers.3.self_attn.q_proj`` -> ``(3, 'q_proj')``; None if not a targeted projection."""
        leaf = module_name.rsplit(".", 1)[-1]
        if leaf not in self.projections:
            return None
        layer = self.layer_of(module_name)
        return None if layer is None else (layer, leaf)

    def num_layers(self, config: Any) -> int:
        for attr in ("num_hidden_layers", "n_layer", "num_layers"):
            if getattr(config, attr, None) is not None:
                return int(getattr(config, attr))
        raise ConfigError(f"cannot tell the layer count of a {self.family} config")


_LLAMA_ALIASES = {
    "attn.q": ("q_proj",), "attn.k": ("k_proj",), "attn.v": ("v_proj",), "attn.o": ("o_proj",),
    "attn.qkv": ("q_proj", "k_proj", "v_proj"),
    "mlp.gate": ("gate_proj",), "mlp.up": ("up_proj",), "mlp.down": ("down_proj",),
    "mlp.in": ("gate_proj", "up_proj"), "mlp.out": ("down_proj",),
}

LLAMA_LIKE = ArchSpec(
    family="llama",
    # Gemma 3's text model (gemma3_text) names its blocks as Llama does: MHA q/k/v/o, MLP gate/up/down (its extra
    # q/k norms and four norms per layer are not LoRA targets)
    model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "olmo", "olmo2"),
    mha=("q_proj", "k_proj", "v_proj", "o_proj"),
    mlp=("gate_proj", "up_proj", "down_proj"),
    layer_pattern=r"\.layers\.(\d+)\.",
    layers_attr="layers",
    attn_block="self_attn",
    mlp_block="mlp",
    aliases=_LLAMA_ALIASES,
)

GPT_NEOX = ArchSpec(
    family="gpt_neox",
    model_types=("gpt_neox",),
    mha=("query_key_value", "dense"),
    mlp=("dense_h_to_4h", "dense_4h_to_h"),
    layer_pattern=r"\.layers\.(\d+)\.",
    layers_attr="layers",
    attn_block="attention",
    mlp_block="mlp",
    aliases={
        "attn.qkv": ("query_key_value",), "attn.q": ("query_key_value",), "attn.k": ("query_key_value",),
        "attn.v": ("query_key_value",), "attn.o": ("dense",),
        "mlp.up": ("dense_h_to_4h",), "mlp.in": ("dense_h_to_4h",), "mlp.gate": ("dense_h_to_4h",),
        "mlp.down": ("dense_4h_to_h",), "mlp.out": ("dense_4h_to_h",),
    },
)

_REGISTRY: dict[str, ArchSpec] = {}


def register_arch(spec: ArchSpec) -> None:
    """Register (or replace) the spec for each of its ``model_types``."""
    for mt in spec.model_types:
        _REGISTRY[mt] = spec


for _spec in (LLAMA_LIKE, GPT_NEOX):
    register_arch(_spec)


def known_model_types() -> list[str]:
    return sorted(_REGISTRY)


def arch_for(config_or_type: Any) -> ArchSpec:
    """The spec for a HF config (or a ``model_type`` string)."""
    mt = config_or_type if isinstance(config_or_type, str) else getattr(config_or_type, "model_type", None)
    if mt in _REGISTRY:
        return _REGISTRY[mt]
    raise ConfigError(
        f"model family {mt!r} is not in lorank's architecture map (known: {', '.join(known_model_types())}). "
        "Register it with lorank.models.arch.register_arch(ArchSpec(family=..., model_types=(...,), "
        "mha=(<attention projection names>), mlp=(<MLP projection names>), layer_pattern=r'\\.layers\\.(\\d+)\\.', "
        "layers_attr='layers', attn_block=..., mlp_block=...))."
    )


def decoder_layers(model: Any) -> Any:
    """The ``ModuleList`` of transformer blocks of a (possibly PEFT-wrapped) HF model."""
    spec = arch_for(_config_of(model))
    inner = backbone(model)
    return getattr(inner, spec.layers_attr)


def backbone(model: Any) -> Any:
    """The bare transformer (``LlamaModel``, ``GPTNeoXModel``...) under any task head / PEFT wrapper."""
    m = model
    for _ in range(6):
        if hasattr(m, "get_base_model") and m is not getattr(m, "get_base_model")():
            m = m.get_base_model()
            continue
        prefix = getattr(m, "base_model_prefix", None)
        if prefix and hasattr(m, prefix) and getattr(m, prefix) is not m:
            m = getattr(m, prefix)
            continue
        break
    return m


def _config_of(model: Any) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise ConfigError("object has no HF config")
    return cfg
