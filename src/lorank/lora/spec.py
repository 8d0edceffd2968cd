"""``LoraSpec``: the LoRA settings (the one type for them: a training config's ``lora:`` block, a study's LoRA
axes, the checkpoint metadata), resolved to a PEFT ``LoraConfig``.

Components (``mha``/``mlp``/``all``), projections (model names or aliases such as ``mlp.up``) and
layer sets (``all``, ``5-15``, ``0,3,7``, ``[1, 2]``) go through the architecture map, so the same
spec targets ``q_proj`` on Llama and ``query_key_value`` on GPT-NeoX.
"""
from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from lorank.config import Strict, format_validation_error
from lorank.errors import ConfigError
from lorank.models.arch import ArchSpec, arch_for

#: how ``alpha`` follows the rank (:func:`effective_alpha`): fixed = as given; scale = alpha/r held constant;
#: rslora = alpha proportional to sqrt(r) (scale alpha/r proportional to 1/sqrt(r)); both equal the fixed one at ``alpha_rank``
ALPHA_POLICIES = ("fixed", "scale", "rslora")
#: a non-fixed policy's part of run labels (rsscale, not rslora: that names the PEFT variant, another training)
ALPHA_POLICY_LABELS = {"scale": "scale", "rslora": "rsscale"}


#: the variants PEFT's LoraConfig trains (dylora is a LoRA too: its truncation is lorank.lora.dylora's)
VARIANTS = ("lora", "dora", "rslora", "dylora", "adalora")
#: the variants' own settings blocks inside ``lora:`` (absent from config.json and the hashes when unset)
VARIANT_BLOCKS = ("dylora", "adalora")


class DyLoraSettings(Strict):
    """DyLoRA's settings (``lora.dylora``; :mod:`lorank.lora.dylora`): each step trains the first ``b`` ranks,
    ``b`` uniform in 1..``lora.rank``, at scale alpha/b. ``mode``: ``full`` updates rows/columns 1..b of A/B,
    ``frozen`` only row/column b (the paper's two modes)."""

    mode: Literal["full", "frozen"] = "full"


class AdaLoraSettings(Strict):
    """AdaLoRA's budget schedule (``lora.adalora``; PEFT's ``AdaLoraConfig``, Zhang et al., ICLR 2023). The adapter
    starts at ``lora.rank`` per module (PEFT's ``init_r``) and is pruned to an average of ``target_r``: no pruning
    for the first ``tinit`` steps, the budget falling cubically to the target until ``total_step - tfinal`` (total
    steps: the run's ``max_steps``), then the final allocation fixed for the last ``tfinal`` steps; the importance
    is re-allocated every ``deltaT`` steps from sensitivities smoothed by ``beta1`` / ``beta2``.
    ``orth_reg_weight``: the weight of the orthogonality penalty on P and Q added to the training loss."""

    target_r: int = Field(8, ge=1)
    tinit: int = Field(0, ge=0)
    tfinal: int = Field(0, ge=0)
    deltaT: int = Field(1, ge=1)
    beta1: float = Field(0.85, gt=0.0, lt=1.0)  # PEFT asserts 0 < beta < 1
    beta2: float = Field(0.85, gt=0.0, lt=1.0)
    orth_reg_weight: float = Field(0.5, ge=0.0)

    def check_steps(self, total_step: int) -> None:
        """Refuse a schedule that does not fit ``total_step`` optimizer steps (PEFT needs tinit < total - tfinal)."""
        if total_step < 1:
            raise ConfigError("lora.adalora: AdaLoRA needs the run's number of steps: set max_steps")
        if self.tinit >= total_step - self.tfinal:
            raise ConfigError(f"lora.adalora: tinit ({self.tinit}) must be below max_steps - tfinal "
                              f"({total_step} - {self.tfinal} = {total_step - self.tfinal}): no step would prune")


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
    if policy == "fixed":
        return parse_alpha(alpha, rank)
    if policy not in ALPHA_POLICIES:
        raise ConfigError(f"lora.alpha_policy must be one of {ALPHA_POLICIES}, got {policy!r}")
    if not isinstance(alpha_rank, int) or isinstance(alpha_rank, bool) or alpha_rank < 1:
        raise ConfigError(f"lora.alpha_rank must be an integer >= 1, got {alpha_rank!r}")
    base = parse_alpha(alpha, alpha_rank)
    return base * rank / alpha_rank if policy == "scale" else base * math.sqrt(rank / alpha_rank)


class LoraSpec(Strict):
    """The LoRA settings, the one type for them: the ``lora:`` block of a training config (YAML keys, defaults and
    validation messages as there), the run's ``config.json`` and identity hash (:meth:`model_dump`, as given:
    ``projections: "q,v"`` stays a string), and the PEFT config it resolves to (:meth:`to_peft`).

    A bad value is refused when the spec is made (pydantic's ``ValidationError``; :meth:`from_dict` raises
    :class:`ConfigError` with the messages a config gets, ``lora.rank: ...``); what needs the model (projections of its
    family, layers within its depth) is checked by :meth:`validate` / :meth:`targets`."""

    rank: int = Field(8, ge=1)
    alpha: float | str = 64
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    components: Literal["all", "mha", "mlp"] = "all"
    projections: list[str] | str | None = None
    layers: str | int | list[int] = "all"
    variant: Literal["lora", "dora", "rslora", "dylora", "adalora"] = "lora"
    #: how alpha follows the rank (:func:`effective_alpha`): fixed = alpha as given; scale = alpha x r /
    #: alpha_rank (alpha/r held constant); rslora = alpha x sqrt(r / alpha_rank). PEFT gets the effective number
    alpha_policy: Literal["fixed", "scale", "rslora"] = "fixed"
    alpha_rank: int = Field(8, ge=1)  # the rank at which the given alpha applies
    #: the variants' own settings (filled with their defaults for their variant, refused for another); left out of
    #: the dump when unset, so the configs of the other variants serialise and hash as before they existed
    dylora: DyLoraSettings | None = None
    adalora: AdaLoraSettings | None = None

    @model_validator(mode="after")
    def _variant_blocks(self) -> "LoraSpec":
        for name in VARIANT_BLOCKS:
            if getattr(self, name) is not None and self.variant != name:
                raise ValueError(f"the {name}: block is for variant: {name}, not {self.variant!r}")
        if self.variant == "dylora" and self.dylora is None:
            self.dylora = DyLoraSettings()
        if self.variant == "adalora" and self.adalora is None:
            self.adalora = AdaLoraSettings()
        if self.adalora is not None and self.adalora.target_r > self.rank:
            raise ValueError(f"adalora.target_r ({self.adalora.target_r}) must not exceed rank ({self.rank}), "
                             "the rank every module starts at")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: Any) -> dict[str, Any]:
        d = handler(self)
        for name in VARIANT_BLOCKS:
            if d.get(name) is None:
                d.pop(name, None)
        return d

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: Any) -> Any:
        try:  # syntax and empty ranges now; the layer count is checked once the model is known
            parse_layers(v, 10**6)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: Any) -> Any:
        try:
            parse_alpha(v, 1)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return v

    def effective_alpha(self) -> float:
        """The numeric lora_alpha this LoRA trains with (its policy applied at its rank; :func:`effective_alpha`)."""
        return effective_alpha(self.alpha, self.rank, self.alpha_policy, self.alpha_rank)

    def projection_names(self) -> list[str]:
        """The projections as a list (``"q,v"`` -> ``["q", "v"]``); empty: every projection of the components."""
        if isinstance(self.projections, str):
            return [p.strip() for p in self.projections.split(",") if p.strip()]
        return list(self.projections or [])

    def validate(self, arch: ArchSpec | None = None, num_layers: int | None = None) -> list[str]:
        """Every problem of this spec on a model of ``arch`` with ``num_layers`` layers (empty list when fine)."""
        problems: list[str] = []
        if arch is not None:
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
        names = self.projection_names()
        if not names:
            return list(allowed)
        chosen: list[str] = []
        for name in names:
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

    def to_peft(self, model_config: Any, head_modules: tuple[str, ...] = ("score",),
                total_step: int | None = None) -> Any:
        """The PEFT config: a ``LoraConfig`` (DyLoRA too: its adapter is a plain LoRA of rank r), or for AdaLoRA an
        ``AdaLoraConfig`` over ``total_step`` optimizer steps (the run's ``max_steps``)."""
        from peft import LoraConfig, TaskType  # peft stays lazy: the spec is read on light paths (configs, plans)

        regex = self.target_regex(model_config)
        if self.variant == "adalora":
            return self._adalora_config(regex, head_modules, total_step)
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

    def _adalora_config(self, regex: str, head_modules: tuple[str, ...], total_step: int | None) -> Any:
        from peft import AdaLoraConfig, TaskType

        ada = self.adalora or AdaLoraSettings()
        ada.check_steps(int(total_step or 0))
        return AdaLoraConfig(
            task_type=TaskType.SEQ_CLS, init_r=self.rank, target_r=ada.target_r, tinit=ada.tinit,
            tfinal=ada.tfinal, deltaT=ada.deltaT, beta1=ada.beta1, beta2=ada.beta2,
            orth_reg_weight=ada.orth_reg_weight, total_step=int(total_step or 0),
            lora_alpha=self.effective_alpha(), lora_dropout=float(self.dropout), target_modules=regex,
            modules_to_save=list(head_modules), bias="none")

    def to_dict(self) -> dict[str, Any]:
        """The form a checkpoint's metadata records (``lora`` in ``lorank_meta.json``): as :meth:`model_dump`, with a
        comma-separated ``projections`` string as its list."""
        d = self.model_dump()
        if isinstance(self.projections, str):
            d["projections"] = self.projection_names()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "LoraSpec":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.model_fields))
        if unknown:
            raise ConfigError(f"unknown lora field(s): {', '.join(unknown)} "
                              f"(known: {', '.join(cls.model_fields)})")
        try:
            return cls.model_validate(d)
        except ValidationError as e:
            raise ConfigError([f"lora.{p}" for p in format_validation_error(e)]) from None

    def short_name(self) -> str:
        parts = [f"r{self.rank}", self.components]
        names = self.projection_names()
        if names:
            parts.append("+".join(p.replace(".", "") for p in names))
        if self.layers not in ("all", None):
            parts.append("L" + str(self.layers).replace(",", "_").replace(" ", "").strip("[]"))
        if self.variant != "lora":
            parts.append(self.variant)
        if self.dylora is not None and self.dylora.mode != "full":
            parts.append(self.dylora.mode)
        if self.adalora is not None:
            parts.append(f"t{self.adalora.target_r}")
        if self.alpha_policy != "fixed":
            parts.append(ALPHA_POLICY_LABELS.get(self.alpha_policy, self.alpha_policy))
        return "-".join(parts)


def apply_lora(model: Any, spec: LoraSpec, total_step: int | None = None) -> Any:
    """Wrap a reranker with PEFT LoRA per ``spec``. The score head is always trained. ``total_step``: the run's
    optimizer steps, which AdaLoRA's budget schedule needs."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, spec.to_peft(model.config, total_step=total_step))
    return peft_model


