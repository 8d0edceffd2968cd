"""``LoraSpec``: which LoRA to train, in the study's terms, resolved to a PEFT ``LoraConfig``.

Components (``mha``/``mlp``/``all``), projections (model names or aliases such as ``mlp.up``) and
layer sets (``all``, ``5-15``, ``0,3,7``, ``[1, 2]``) go through the architecture map, so the same
spec targets ``q_proj`` on Llama and ``query_key_value`` on GPT-NeoX.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from lorank.errors import ConfigError
from lorank.models.arch import ArchSpec, arch_for

VARIANTS = ("lora", "dora", "rslora")
COMPONENT_CHOICES = ("all", "mha", "mlp")
#: how ``alpha`` follows the rank (:func:`effective_alpha`): fixed = as given; scale = alpha/r held constant;
#: rslora = alpha proportional to sqrt(r) (scale alpha/r proportional to 1/sqrt(r)); both equal the fixed one at ``alpha_rank``
ALPHA_POLICIES = ("fixed", "scale", "rslora")
#: a non-fixed policy's part of run labels (rsscale, not rslora: that names the PEFT variant, another training)
ALPHA_POLICY_LABELS = {"scale": "scale", "rslora": "rsscale"}


def parse_layers(spec: str | int | list | tuple | None, num_layers: int) -> list[int]:
    """``all`` | ``5-15`` | ``0,3,7`` | ``1-3,8`` | ``[1, 2]`` -> sorted layer indices (validated)."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("all", "")):
        return list(range(num_layers))
    items: list[Any]
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, (list, tuple)):
        items = list(spec)
    else:
        items = [x.strip() for x in str(spec).split(",") if x.strip()]
    out: set[int] = set()
    for it in items:
        if isinstance(it, int):
            lo = hi = it
        else:
            m = re.fullmatch(r"\s*(-?\d+)\s*(?:-\s*(-?\d+))?\s*", str(it))
            if not m:
                raise ConfigError(f"bad layer set {spec!r}: {it!r} is not a layer, a range like 5-15, or 'all'")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ConfigError(f"empty layer range {it!r} in {spec!r} (end before start)")
        if lo < 0 or hi >= num_layers:
            raise ConfigError(f"layer range {it!r} is outside 0-{num_layers - 1} (the model has {num_layers} layers)")
        out.update(range(lo, hi + 1))
    if not out:
        raise ConfigError(f"empty layer set {spec!r}")
    return sorted(out)


def parse_alpha(alpha: float | int | str, rank: int) -> float:
    """``64`` (fixed) or ``"8r"`` / ``"8*r"`` (a multiple of the rank)."""
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        value = float(alpha)
    else:
        m = re.fullmatch(r"\s*([0-9.]+)\s*\*?\s*r\s*", str(alpha))
        if not m:
            raise ConfigError(f"bad alpha {alpha!r}: use a number (64) or a multiple of the rank ('8r')")
        value = float(m.group(1)) * rank
    if value <= 0:
        raise ConfigError(f"alpha must be > 0, got {alpha!r}")
    return value


def effective_alpha(alpha: float | int | str, rank: int, policy: str = "fixed", alpha_rank: int = 8) -> float:
    """The numeric ``lora_alpha`` PEFT trains with. ``fixed``: ``alpha`` itself (``"8r"``: 8 x rank); ``scale``:
    the alpha that keeps alpha/r as it is at ``alpha_rank`` (alpha x r / alpha_rank: 64 at alpha_rank 8 gives 8r,
    scale 8); ``rslora``: alpha x sqrt(r / alpha_rank) (scale proportional to 1/sqrt(r), equal to the fixed one at
    ``alpha_rank``). The given alpha of scale and rslora is the alpha at ``alpha_rank`` (``"8r"`` there: 8 x
    alpha_rank)."""
    import math

    if policy == "fixed":
        return parse_alpha(alpha, rank)
    if policy not in ALPHA_POLICIES:
        raise ConfigError(f"lora.alpha_policy must be one of {ALPHA_POLICIES}, got {policy!r}")
    if not isinstance(alpha_rank, int) or isinstance(alpha_rank, bool) or alpha_rank < 1:
        raise ConfigError(f"lora.alpha_rank must be an integer >= 1, got {alpha_rank!r}")
    base = parse_alpha(alpha, alpha_rank)
    return base * rank / alpha_rank if policy == "scale" else base * math.sqrt(rank / alpha_rank)


@dataclass
class LoraSpec:
    rank: int = 8
    alpha: float | str = 64
    dropout: float = 0.1
    components: str = "all"
    projections: list[str] | None = None
    layers: str | list[int] = "all"
    variant: str = "lora"
    alpha_policy: str = "fixed"  # ALPHA_POLICIES: how alpha follows the rank (effective_alpha)
    alpha_rank: int = 8  # the rank at which the given alpha applies (scale / rslora)

    def effective_alpha(self) -> float:
        """The numeric lora_alpha of the PEFT config (:func:`effective_alpha`)."""
        return effective_alpha(self.alpha, self.rank, self.alpha_policy, self.alpha_rank)

    def validate(self, arch: ArchSpec | None = None, num_layers: int | None = None) -> list[str]:
        """Every problem with this spec (empty list when fine)."""
        problems: list[str] = []
        if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
            problems.append(f"lora.rank must be an integer >= 1, got {self.rank!r}")
        else:
            try:
                self.effective_alpha()
            except ConfigError as e:
                problems.append(str(e) if "alpha_" in str(e) else f"lora.alpha: {e}")
        if not 0.0 <= float(self.dropout) < 1.0:
            problems.append(f"lora.dropout must be in [0, 1), got {self.dropout!r}")
        if self.components not in COMPONENT_CHOICES:
            problems.append(f"lora.components must be one of {COMPONENT_CHOICES}, got {self.components!r}")
        if self.variant not in VARIANTS:
            problems.append(f"lora.variant must be one of {VARIANTS}, got {self.variant!r}")
        if arch is not None and not problems:
            try:
                self.target_projections(arch)
            except ConfigError as e:
                problems.append(f"lora.projections: {e}")
        if num_layers is not None:
            try:
                parse_layers(self.layers, num_layers)
            except ConfigError as e:
                problems.append(f"lora.layers: {e}")
        return problems

    def target_projections(self, arch: ArchSpec) -> list[str]:
        allowed = arch.projections_of(self.components)
        if not self.projections:
            return list(allowed)
        chosen: list[str] = []
        for name in self.projections:
            for p in arch.resolve_projection(name):
                if p not in allowed:
                    raise ConfigError(f"projection {name!r} ({p}) is not part of components={self.components!r}")
                if p not in chosen:
                    chosen.append(p)
        if not chosen:
            raise ConfigError("no projection selected")
        return [p for p in arch.projections if p in chosen]

    def targets(self, model_config: Any) -> tuple[list[int], list[str]]:
        arch = arch_for(model_config)
        n = arch.num_layers(model_config)
        problems = self.validate(arch, n)
        if problems:
            raise ConfigError(problems)
        return parse_layers(self.layers, n), self.target_projections(arch)

    def target_regex(self, model_config: Any) -> str:
        layers, projs = self.targets(model_config)
        arch = arch_for(model_config)
        blocks = f"({re.escape(arch.attn_block)}|{re.escape(arch.mlp_block)})"
        return (rf".*\.{arch.layers_attr}\.({'|'.join(map(str, layers))})\.{blocks}\."
                rf"({'|'.join(map(re.escape, projs))})")

    def to_peft(self, model_config: Any, head_modules: tuple[str, ...] = ("score",)) -> Any:
        from peft import LoraConfig, TaskType

        regex = self.target_regex(model_config)
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=self.rank,
            lora_alpha=self.effective_alpha(),  # a plain number: the adapter stays plain PEFT
            lora_dropout=float(self.dropout),
            target_modules=regex,
            use_dora=self.variant == "dora",
            use_rslora=self.variant == "rslora",
            modules_to_save=list(head_modules),
            bias="none",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "LoraSpec":
        d = dict(d or {})
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ConfigError(f"unknown lora field(s): {', '.join(unknown)} "
                              f"(known: {', '.join(cls.__dataclass_fields__)})")
        if isinstance(d.get("projections"), str):
            d["projections"] = [p.strip() for p in d["projections"].split(",") if p.strip()]
        return cls(**d)

    def short_name(self) -> str:
        parts = [f"r{self.rank}", self.components]
        if self.projections:
            parts.append("+".join(p.replace(".", "") for p in self.projections))
        if self.layers not in ("all", None):
            parts.append("L" + str(self.layers).replace(",", "_").replace(" ", "").strip("[]"))
        if self.variant != "lora":
            parts.append(self.variant)
        if self.alpha_policy != "fixed":
            parts.append(ALPHA_POLICY_LABELS.get(self.alpha_policy, self.alpha_policy))
        return "-".join(parts)


def apply_lora(model: Any, spec: LoraSpec) -> Any:
    """Wrap a reranker with PEFT LoRA per ``spec``. The score head is always trained."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, spec.to_peft(model.config))
    return peft_model


