"""Typed configuration, the machinery shared by train / study: the strict pydantic base, YAML reading, and
validation errors that name the file, line and field. (The training config's sections live in
:mod:`lorank.train.config`.)

Every validation problem is collected and raised at once as a :class:`ConfigError`.
"""
from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

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
    tree = _yaml_tree(source) if source is not None else None  # composed once for every problem's line
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field" + _did_you_mean(cls, err["loc"])
        line = yaml_line(tree, err["loc"])
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


def _yaml_tree(source: str | Path) -> yaml.Node | None:
    """The composed node tree of `source` when it is a readable YAML file (None otherwise)."""
    path = Path(source)
    if path.suffix not in (".yaml", ".yml") or not path.is_file():
        return None
    try:
        return yaml.compose(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError, RecursionError):
        return None


def yaml_line(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line where the field at `loc` is written in a YAML file's node tree (:func:`_yaml_tree`), or None
    if the path does not lead to it exactly (the data may have been built from the file rather than read as is)."""
    if node is None:
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
