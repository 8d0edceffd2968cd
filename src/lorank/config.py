"""Typed configuration shared by train / study: pydantic models readable from YAML.

Every validation problem is collected and raised at once as a :class:`ConfigError`.
"""
from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lorank.errors import ConfigError

T = TypeVar("T", bound=BaseModel)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: names people write from other tools' configs (HF TrainingArguments, PEFT's LoraConfig) -> lorank's field
_SYNONYMS = {
    "learning_rate": "lr", "lora_r": "rank", "r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout",
    "target_modules": "projections", "max_length": "max_len", "max_seq_length": "max_len",
    "num_negatives": "group_size", "train_group_size": "group_size", "per_device_train_batch_size": "batch_queries",
    "warmup_steps": "warmup_ratio", "seed": "seeds", "eval_sets": "sets",
}


def format_validation_error(e: ValidationError, cls: type[BaseModel] | None = None,
                            source: str | Path | None = None) -> list[str]:
    """One line per problem: the field's dotted path, the problem, the YAML line of `source` where the field is
    written (when it can be found there), and for an unknown field the known field it most looks like."""
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + _did_you_mean(cls, err["loc"])
        line = yaml_line(source, err["loc"]) if source is not None else None
        out.append(f"{loc}: {msg}" + (f" (line {line})" if line else ""))
    return out


def _did_you_mean(cls: type[BaseModel] | None, loc: tuple) -> str:
    """'; did you mean 'lr'?' for an unknown field named at `loc` of `cls`, or ''."""
    if cls is None or not loc or not isinstance(loc[-1], str):
        return ""
    known = sorted(_fields_at(cls, loc[:-1]))
    if not known:
        return ""
    name = loc[-1]
    alias = difflib.get_close_matches(name, list(_SYNONYMS), n=1, cutoff=0.85)
    guess = _SYNONYMS.get(alias[0]) if alias else None
    if guess not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        guess = close[0] if close else None
    return f"; did you mean {guess!r}?" if guess else f"; known fields here: {', '.join(known)}"


def _fields_at(cls: type[BaseModel], path: tuple) -> set[str]:
    """The field names of the model(s) found by following `path` (field names, list indices) from `cls`."""
    models: list[type[BaseModel]] = [cls]
    for step in path:
        if isinstance(step, int):
            continue
        nxt: list[type[BaseModel]] = []
        for m in models:
            field_info = m.model_fields.get(step)
            if field_info is not None:
                nxt += _models_in(field_info.annotation)
        if not nxt:
            return set()
        models = nxt
    return {name for m in models for name in m.model_fields}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models inside a type annotation (through Optional, Union, list, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, tuple, typing.Annotated):
        return [m for a in typing.get_args(annotation) for m in _models_in(a)]
    return []


def yaml_line(source: str | Path, loc: tuple) -> int | None:
    """The 1-based line of `source` (a YAML file) where the field at `loc` is written, or None if the path does not
    lead to it exactly (the data may have been built from the file rather than read as is)."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError, RecursionError):
        return None
    line = None
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(step)]
            if not match:
                return None
            line, node = match[0][0].start_mark.line + 1, match[0][1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return None
    return line


def parse_model(cls: type[T], data: Any, source: str | Path | None = None) -> T:
    try:
        return cls.model_validate(data if data is not None else {})
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, cls, source), source) from None


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text ({e})", path) from None
    try:
        return yaml.safe_load(text)
    except RecursionError:  # PyYAML's composer recurses once per nesting level
        raise ConfigError("invalid YAML: nested too deeply", path) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{where}invalid YAML: {getattr(e, 'problem', e)}", path) from None


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
        from lorank.mine.window import RankWindow

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
        try:
            from lorank.data.roles import is_default_test_set
        except ImportError:  # pragma: no cover - before the roles module
            return v
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
        from lorank.data.roles import is_default_test_set, set_key

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
