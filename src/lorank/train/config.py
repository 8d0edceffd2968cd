"""``TrainConfig``: everything one training run needs, typed, from YAML, with its sections (inputs, data and
mining, checkpoints, evaluation and the dense curve)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lorank.config import Strict, parse_model, read_yaml
from lorank.data.roles import is_default_test_set, set_key
from lorank.errors import ConfigError
from lorank.lora.spec import LoraSpec
from lorank.mine.window import RankWindow
from lorank.train.losses import LOSSES, NEEDS_TEACHER


class InputSpec(Strict):
    query_template: str = "query: {query}"
    doc_template: str = " document: {title} {passage}"
    max_len: int = 196
    query_max_len: int = 32


class MineSpec(Strict):
    """Hard-negative mining on the fly for a ``kind: msmarco`` source (the options of ``lorank mine``)."""

    collections: list[str] = ["self"]
    window: str = "10-100"
    exclude_eval: list[str] = ["dl19"]
    max_negatives: int | None = Field(None, ge=1)
    teacher: bool = False
    teacher_filter: bool = False
    miner: Literal["bm25", "teacher"] = "bm25"

    @model_validator(mode="after")
    def _teacher_needed(self) -> "MineSpec":
        if self.teacher_filter and not self.teacher:
            raise ValueError("teacher_filter needs teacher scores: set teacher: true")
        if self.miner == "teacher" and not self.teacher:
            raise ValueError("miner: teacher ranks the pool with the bi-encoder teacher: set teacher: true")
        return self

    @field_validator("window")
    @classmethod
    def _window(cls, v: str) -> str:
        try:
            return str(RankWindow.parse(v))
        except ConfigError as e:
            raise ValueError(str(e)) from None


class TrainData(Strict):
    """One training source. ``kind``: trec (qrels + first-stage run: ``dl20`` or a directory),
    tevatron (JSONL), triples (MS MARCO TSV), hardneg (JSONL with teacher scores), msmarco (a folder of
    ``queries.tsv`` + ``qrels.txt`` + ``collection.tsv``, such as ``msmarco-train-12k``, with negatives from
    ``negatives:`` (a ``lorank mine`` JSONL) or mined on the fly with ``mine: {...}``)."""

    kind: Literal["trec", "tevatron", "triples", "hardneg", "msmarco"] = "trec"
    path: str
    rel_threshold: int | None = None  # trec: 2 (TREC DL graded); msmarco: 1 (MS MARCO qrels are binary)
    max_negative_grade: int = 0
    judged_negatives: bool = True
    unjudged_negatives: bool = True
    depth: int = 100
    negatives: str | None = None
    mine: MineSpec | None = None
    max_queries: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _msmarco(self) -> "TrainData":
        if self.kind == "msmarco":
            if (self.negatives is None) == (self.mine is None):
                raise ValueError("a 'msmarco' source needs exactly one of negatives: FILE (from `lorank mine`) "
                                 "or mine: {collections, window, exclude_eval, ...}")
        elif self.negatives is not None or self.mine is not None or self.max_queries is not None:
            raise ValueError(f"negatives/mine/max_queries are for kind 'msmarco', not {self.kind!r}")
        return self

    def has_teacher_scores(self) -> bool:
        """Whether this source can carry teacher scores (checked again when the file is read)."""
        return self.kind == "hardneg" or (self.kind == "msmarco" and (self.negatives is not None or
                                                                      bool(self.mine and self.mine.teacher)))

    def threshold(self) -> int:
        return self.rel_threshold if self.rel_threshold is not None else (1 if self.kind == "msmarco" else 2)


class Checkpoints(Strict):
    every: int | None = 50
    steps: list[int] | None = None

    @field_validator("steps", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return [v]
        if isinstance(v, str):
            try:
                return [int(x) for x in v.replace(" ", "").split(",") if x]
            except ValueError:
                raise ValueError(f"checkpoint steps must be comma-separated integers, got {v!r}") from None
        return v


class CurveSpec(Strict):
    """A cheap evaluation schedule beside the full one of saved checkpoints (``eval.curve``): every ``every``
    optimizer steps and at the last, the model in memory is scored on ``sets`` (null: ``eval.sets``) at ``depth``,
    into ``curve.jsonl`` and ``runs_trec/curve-{step}.{set}.run`` (lorank.train.curve). Dev sets only; a curve point
    never selects anything (no checkpoint is chosen on it)."""

    every: int = Field(100, ge=1)
    depth: int = Field(20, ge=1)
    sets: list[str] | None = None

    @field_validator("sets")
    @classmethod
    def _dev_only(cls, v: list[str] | None) -> list[str] | None:
        bad = [s for s in v or [] if is_default_test_set(s)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: a test set is never scored on intermediate models; curve sets are dev "
                             "sets")
        return v


class EvalSpec(Strict):
    #: the dev sets (lorank.data.roles): every scheduled checkpoint is scored on them, and they may choose anything
    sets: list[str] = []
    depth: int = 100
    during_training: bool = True
    batch_tokens: int = 8192
    bf16: bool | None = None  # None: the one decision of lorank.precision ($LORANK_BF16, else the hardware)
    #: score each checkpoint with LoRA merged into the base weights (exact weights restored after; None: on CPUs)
    merge_lora: bool | None = None
    rel_threshold: int = 2
    write_runs: bool = True
    #: also report reranker+BM25 fusions: alpha * z(reranker) + (1 - alpha) * z(first stage), per query
    interpolate: list[float] = []
    #: evaluate on the first N judged queries only (sorted by qid): quick looks and CPU demos
    max_queries: int | None = Field(None, ge=1)
    #: dense, cheap checkpoint curves ({every: 100, depth: 20, sets: null}: CurveSpec); null = off (left out of a
    #: run's identity, so run ids made before it existed stay the same)
    curve: CurveSpec | None = None
    #: the test sets (lorank.data.roles): scored once, on the final model of a finished training run (never on an
    #: intermediate checkpoint; rows with role "test"), and never used to choose anything. Empty: none (left out of
    #: a run's identity, so run ids made before it existed stay the same)
    test_sets: list[str] = []
    #: which saved checkpoints the test sets score, once training has finished (all frozen by then, so nothing can
    #: be chosen on them): "final" (default), or a list of steps (e.g. [250, 1000]: the first and last, for finding
    #: 1's rise on the test queries). A step that was not saved is skipped and named
    test_steps: list[int] | Literal["final"] = "final"

    @model_validator(mode="after")
    def _roles(self) -> "EvalSpec":
        problems = [f"eval.sets: {name} is the protocol's test set (TREC DL 2022): it is scored once, on the final "
                    "model, and never on the checkpoints one chooses among; list it under eval.test_sets"
                    for name in self.sets if is_default_test_set(name)]
        tests = {set_key(t) for t in self.test_sets}
        problems += [f"eval: {name} is in both sets and test_sets: a set is dev (eval.sets: scored on every "
                     "checkpoint, to choose by) or test (eval.test_sets: scored once on the final model), not both"
                     for name in self.sets if not is_default_test_set(name) and set_key(name) in tests]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DivergenceGuard(Strict):
    """Stop a run whose loss climbs back (the scorer collapsing to a constant, as lr 1e-3 did on the 135M
    reference run at step ~720: results/reference_progress.json): when the mean loss of the last
    ``window`` steps has climbed back more than ``climb`` of the way from the lowest such mean to the first one
    (the untrained scorer's), once ``after`` steps are trained and once the loss has fallen: the lowest mean at
    least ``min_fall`` below the first. A fraction of the way back, not a ratio to the lowest mean: per-step losses
    are heavy-tailed (one hard group scores 5-8 where most score under 0.5), so a ratio to a low mean trips on
    noise (2.5x did, at step 1398 of run 2, whose median loss had not moved). And only after a real fall: on the
    plateau before the loss starts to fall, the lowest mean sits just under the first, so noise is "most of the way
    back" (seed 44 of the seeded study tripped at step 113: lowest 3.83, first 4.12, 7% below it;
    results/seeds_s44_plateau_guard_trip_log.jsonl); a loss that has not fallen has nothing to collapse from.
    The step it trips at is not saved as a checkpoint (those saved earlier in the rising window are, and the error
    names them); the run stops with :class:`TrainingDiverged`."""

    window: int = Field(50, ge=2)
    climb: float = Field(0.6, gt=0.0, lt=1.0)
    after: int = Field(100, ge=0)
    min_fall: float = Field(0.25, ge=0.0, lt=1.0)


class TrainConfig(Strict):
    model: str = "smollm2-135m"
    dtype: Literal["auto", "bf16", "fp32"] = "auto"
    head_init: Literal["random", "yes_no"] = "random"
    trust_remote_code: bool = False
    input: InputSpec = Field(default_factory=InputSpec)
    lora: LoraSpec = Field(default_factory=LoraSpec)  # the LoRA settings: lorank.lora.spec
    data: list[TrainData]
    data_root: str | None = None
    group_size: int = Field(16, ge=2)
    unit: Literal["positive", "query"] = "positive"
    loss: str = "contrastive"

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        if v not in LOSSES:
            raise ValueError(f"unknown loss {v!r} (known: {', '.join(LOSSES)})")
        return v
    temperature: float = 1.0
    lr: float = Field(1e-4, gt=0)
    head_lr: float | None = None
    warmup_ratio: float = 0.0  # fraction of steps (< 1)
    weight_decay: float = 0.0
    batch_queries: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float = 1.0
    max_steps: int = -1
    seed: int = 42
    #: false / true (= full: keep block inputs, +1 forward) / selective (keep the big matmuls' outputs,
    #: recompute the cheap ops: ~1/3 of the activation memory for a few % of the time; lorank.train.trainer)
    gradient_checkpointing: bool | Literal["full", "selective"] = False
    fast_dropout: bool = True  # LoRA dropout via lorank.lora.dropout.FastDropout (p rounded to 1/65536)
    #: padded tokens per forward chunk; auto: 4096 on CPU, 16384 on CUDA (fewer, larger launches)
    chunk_tokens: int | Literal["auto"] = "auto"
    grad_cache: bool = False  # one chunk's activations in memory instead of the step's (+1 forward)
    skip_nonfinite: bool = False
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    output_dir: str = "runs/default"
    report_to: list[str] = []
    dataloader_workers: int = 0
    # ---- execution settings (speed only; at their defaults they are left out of a study's run hash)
    #: SDPA kernels on CUDA (lorank.models.attention): auto = flash (else memory-efficient), never cuDNN,
    #: which plans per shape; recorded in train_summary.json
    attention_backend: Literal["auto", "flash", "efficient", "math", "cudnn"] = "auto"
    #: chunk widths and rows padded to fixed ladders (lorank.train.collator.bucket_width/bucket_rows):
    #: auto = on CUDA only
    shape_buckets: bool | Literal["auto"] = "auto"
    #: auto = adamw_torch_fused on CUDA, adamw_torch elsewhere
    optim: Literal["auto", "adamw_torch", "adamw_torch_fused"] = "auto"
    #: a train_log.jsonl row every N steps (each log reads the loss from the GPU: a host sync); auto = 1 on
    #: CPU, 10 on CUDA
    log_every: int | Literal["auto"] = "auto"
    #: torch.compile the model (off: unmeasured; recompiles per new shape unless shape_buckets is on)
    compile: bool = False
    #: the training forward: packed = lorank.models.packed (real tokens only, fused q/k/v and gate/up matmuls and
    #: LoRA, one dropout mask per shared input); hf = the model's own forward on padded chunks; auto = packed on
    #: CPU where the model is covered (Llama/Mistral/Qwen2 families, no checkpointing or grad_cache), else hf.
    #: The resolved choice is part of a run's resume identity and is recorded in config.json
    forward: Literal["auto", "packed", "hf"] = "auto"
    #: stop when the loss climbs back (:class:`DivergenceGuard`); null = off. It decides only when training
    #: stops, not the trajectory: not part of a run's resume identity
    divergence_guard: DivergenceGuard | None = Field(default_factory=DivergenceGuard)

    @field_validator("chunk_tokens", "log_every")
    @classmethod
    def _positive_or_auto(cls, v: Any) -> Any:
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"must be a positive integer or 'auto', got {v!r}")
        return v

    def resolved_chunk_tokens(self, cuda: bool) -> int:
        return (16384 if cuda else 4096) if self.chunk_tokens == "auto" else int(self.chunk_tokens)

    def resolved_log_every(self, cuda: bool) -> int:
        return (10 if cuda else 1) if self.log_every == "auto" else int(self.log_every)

    def resolved_optim(self, cuda: bool) -> str:
        return ("adamw_torch_fused" if cuda else "adamw_torch") if self.optim == "auto" else self.optim

    def resolved_shape_buckets(self, cuda: bool) -> bool:
        return cuda if self.shape_buckets == "auto" else bool(self.shape_buckets)

    def identity(self) -> dict[str, Any]:
        """The config as it defines an experiment (a study's run hash): execution settings at their defaults
        are left out, and ``chunk_tokens: auto`` reads as 4096 (its CPU value, and the old default), so run
        ids made before these settings existed stay the same."""
        d = self.model_dump()
        for name in EXECUTION_SETTINGS:
            default = type(self).model_fields[name].get_default(call_default_factory=True)
            if isinstance(default, Strict):
                default = default.model_dump()
            if d.get(name) == default:
                d.pop(name)
        if d.get("chunk_tokens") == "auto":
            d["chunk_tokens"] = 4096
        # the LoRA scale: a fixed alpha as before the policy existed; another policy by the alpha it resolves to,
        # so r=8 under `scale` (alpha_rank 8) is the same run as r=8 under `fixed`
        lora = d["lora"]
        policy = lora.pop("alpha_policy", "fixed")
        lora.pop("alpha_rank", None)
        if policy != "fixed":
            lora["alpha"] = self.lora.effective_alpha()
        if d.get("eval", {}).get("curve", "unset") is None:  # no curve evaluations: as before they existed
            d["eval"].pop("curve")
        if not d.get("eval", {}).get("test_sets", True):  # no test sets: as before eval.test_sets existed
            d["eval"].pop("test_sets")
        if d.get("eval", {}).get("test_steps") == "final":  # the default: as before eval.test_steps existed
            d["eval"].pop("test_steps")
        for src, spec in zip(d.get("data", []), self.data):  # msmarco-only fields unset: as before they existed
            for key in ("negatives", "mine", "max_queries"):
                if src.get(key) is None:
                    src.pop(key, None)
            if src.get("mine") and src["mine"].get("miner") == "bm25":  # the miner before it was a choice
                src["mine"].pop("miner")
            src["rel_threshold"] = spec.threshold()
        return d

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        problems = []
        if self.loss in NEEDS_TEACHER and not all(d.has_teacher_scores() for d in self.data):
            problems.append(f"loss: {self.loss!r} needs teacher scores: every data source must be kind=hardneg, or "
                            "kind=msmarco with mine: {teacher: true} or a negatives file mined with --teacher")
        if not self.data:
            problems.append("data: at least one training source is needed")
        if self.max_steps == 0 or self.max_steps < -1:
            problems.append(f"max_steps: {self.max_steps} trains nothing: give a number of optimizer steps >= 1, "
                            "or -1 (the default) to train for `epochs` passes over the data")
        if self.epochs <= 0 and self.max_steps == -1:
            problems.append(f"epochs: {self.epochs} trains nothing: give a number of passes > 0, or max_steps >= 1")
        if self.checkpoints.every is not None and self.checkpoints.every < 1:
            problems.append("checkpoints.every must be >= 1")
        if self.checkpoints.steps and any(s < 1 for s in self.checkpoints.steps):
            problems.append("checkpoints.steps must be positive step numbers")
        problems += self._variant_problems()
        curve = self.eval.curve
        if curve is not None and not (curve.sets if curve.sets is not None else self.eval.sets):
            problems.append("eval.curve has no sets to score: give eval.sets (its default) or eval.curve.sets")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _variant_problems(self) -> list[str]:
        """What the LoRA variant needs of the run: AdaLoRA's budget schedule runs over ``max_steps`` (it must fit)
        and its penalty joins the loss of a plain step (not grad_cache's split backward)."""
        ada = self.lora.adalora
        if self.lora.variant != "adalora" or ada is None:
            return []
        if self.max_steps < 1:
            return ["lora.adalora: AdaLoRA's budget schedule runs over the run's steps: set max_steps (>= 1)"]
        problems = []
        if ada.tinit >= self.max_steps - ada.tfinal:
            problems.append(f"lora.adalora.tinit: {ada.tinit} must be below max_steps - tfinal ({self.max_steps} - "
                            f"{ada.tfinal} = {self.max_steps - ada.tfinal}), else no step prunes")
        if self.grad_cache:
            problems.append("grad_cache: true is not available with lora.variant: adalora (its orthogonality "
                            "penalty joins the loss of a plain step)")
        return problems

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


EXECUTION_SETTINGS = ("attention_backend", "shape_buckets", "optim", "log_every", "compile", "forward",
                      "divergence_guard")


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"bad override key {key!r}: use dotted field names like lora.rank")
    node: Any = d
    for i, p in enumerate(parts[:-1]):
        if isinstance(node, list):  # data.0.max_queries: an index into a list of sources
            if not p.isdigit() or int(p) >= len(node):
                raise ConfigError(f"cannot set {key!r}: {'.'.join(parts[:i])} has {len(node)} entries; "
                                  f"{p!r} is not an index of one")
            node = node[int(p)]
        else:
            node = node.setdefault(p, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"cannot set {key!r}: {'.'.join(parts[:i + 1])} is {node!r}, not a mapping of fields")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"cannot set {key!r}: {'.'.join(parts[:-1])} has {len(node)} entries")
        node[int(last)] = value
    else:
        node[last] = value
