"""``TrainConfig``: everything one training run needs, typed, from YAML."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lorank.config import Checkpoints, EvalSpec, InputSpec, Strict, TrainData, parse_model, read_yaml
from lorank.errors import ConfigError
from lorank.lora.spec import LoraSpec
from lorank.train.losses import LOSSES, NEEDS_TEACHER


class LoraFields(Strict):
    rank: int = 8
    alpha: float | str = 64
    dropout: float = 0.1
    components: Literal["all", "mha", "mlp"] = "all"
    projections: list[str] | str | None = None
    layers: str | int | list[int] = "all"
    variant: Literal["lora", "dora", "rslora"] = "lora"

    def spec(self) -> LoraSpec:
        return LoraSpec.from_dict(self.model_dump())


class TrainConfig(Strict):
    model: str = "smollm2-135m"
    dtype: Literal["bf16", "fp32"] = "bf16"
    head_init: Literal["random", "yes_no"] = "random"
    trust_remote_code: bool = False
    input: InputSpec = Field(default_factory=InputSpec)
    lora: LoraFields = Field(default_factory=LoraFields)
    data: list[TrainData]
    data_root: str | None = None
    group_size: int = 16
    unit: Literal["positive", "query"] = "positive"
    loss: str = "contrastive"
    temperature: float = 1.0
    lr: float = 1e-4
    head_lr: float | None = None
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    batch_queries: int = 8
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int = -1
    seed: int = 42
    gradient_checkpointing: bool = False
    chunk_tokens: int = 4096
    skip_nonfinite: bool = False
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output_dir: str = "runs/default"
    report_to: list[str] = []
    dataloader_workers: int = 0

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        problems = []
        if self.loss not in LOSSES:
            problems.append(f"loss: unknown loss {self.loss!r} (known: {', '.join(LOSSES)})")
        if self.loss in NEEDS_TEACHER and any(d.kind != "hardneg" for d in self.data):
            problems.append(f"loss: {self.loss!r} needs teacher scores: every data source must be kind=hardneg")
        if self.group_size < 2:
            problems.append(f"group_size must be >= 2, got {self.group_size}")
        if self.batch_queries < 1:
            problems.append(f"batch_queries must be >= 1, got {self.batch_queries}")
        if self.lr <= 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not self.data:
            problems.append("data: at least one training source is needed")
        if self.checkpoints.every is not None and self.checkpoints.every < 1:
            problems.append("checkpoints.every must be >= 1")
        if self.checkpoints.steps and any(s < 1 for s in self.checkpoints.steps):
            problems.append("checkpoints.steps must be positive step numbers")
        problems += self.lora.spec().validate()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> "TrainConfig":
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            raise ConfigError("the top level must be a mapping of fields", path)
        for k, v in (overrides or {}).items():
            _set_dotted(data, k, v)
        cfg = parse_model(cls, data, path)
        base = Path(path).resolve().parent
        for d in cfg.data:
            if d.kind != "trec" or Path(d.path).suffix or "/" in d.path:
                p = Path(d.path)
                if not p.is_absolute() and not p.exists() and (base / p).exists():
                    d.path = str(base / p)
        return cfg

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return parse_model(cls, data)


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value
