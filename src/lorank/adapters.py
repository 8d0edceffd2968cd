"""Loading trained adapters safely: safetensors only, unless pickle is explicitly allowed; their
``adapter_config.json`` checked (a broken one is named, with its line; LoRA and AdaLoRA); whether an adapter fits a
base model's shape and, for AdaLoRA, its saved ranks its rank pattern (checked before PEFT loads it); and an adapter's
identity (the content hash a study's steps on it follow)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from lorank.errors import ConfigError, LorankError
from lorank.lora.adalora import is_adalora, load_into_training_model
from lorank.lora.factors import is_lora_a_key
from lorank.layout.adapter import (PEFT_CONFIG, WEIGHTS, WEIGHTS_STEM, export_meta_file, peft_config_file,
                                   safetensors_problem, weights_file)
from lorank.layout.checkpoints import marker_file
from lorank.layout.run import config_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class UnsafeFileError(LorankError):
    pass


def adapter_file(ckpt: str | Path, allow_pickle: bool = False) -> Path:
    """The adapter's weights file: ``adapter_model.safetensors``, structurally checked (a truncated file is
    refused); a pickle file (``.bin``/``.pt``...) only with ``allow_pickle``."""
    ckpt = Path(ckpt)
    if not ckpt.exists():
        raise ConfigError(f"{ckpt}: no such folder (an adapter folder holds {PEFT_CONFIG} and {WEIGHTS}): check "
                          "the path")
    if not ckpt.is_dir():
        raise ConfigError(f"{ckpt} is a file: an adapter is a folder (with {PEFT_CONFIG} and {WEIGHTS})")
    st = weights_file(ckpt)
    if st.is_file():
        problem = safetensors_problem(st)
        if problem:
            raise ConfigError(f"{ckpt}: {problem}; the checkpoint is damaged or was not completely written")
        return st
    pick = [p for p in ckpt.iterdir() if p.name.startswith(WEIGHTS_STEM) and p.suffix in PICKLE_SUFFIXES]
    if pick:
        if not allow_pickle:
            raise UnsafeFileError(
                f"{pick[0]} is a pickle file, which can execute code when loaded. lorank loads adapters only from "
                "safetensors; pass --allow-pickle (allow_pickle=True) if you trust its source.")
        return pick[0]
    raise ConfigError(f"{ckpt} holds no {WEIGHTS}")


def read_adapter_state(ckpt: str | Path, allow_pickle: bool = False) -> dict[str, Any]:
    f = adapter_file(ckpt, allow_pickle)
    if f.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(f))
        except SafetensorError as e:
            raise ConfigError(f"{f}: not a readable safetensors file ({e})") from None
    import torch

    return torch.load(str(f), map_location="cpu", weights_only=True)


def load_adapter_weights(peft_model: Any, ckpt: str | Path, allow_pickle: bool = False) -> None:
    """Load a checkpoint's LoRA + score-head weights into an existing PEFT model of the same config."""
    from peft import set_peft_model_state_dict

    state = read_adapter_state(ckpt, allow_pickle)
    if is_adalora(peft_model):  # saved resized to its kept ranks: loaded at the live model's full size
        load_into_training_model(peft_model, state, read_peft_config(ckpt))
        return
    res = set_peft_model_state_dict(peft_model, state)
    unexpected = getattr(res, "unexpected_keys", []) or []
    if unexpected:
        raise ConfigError(f"{ckpt}: adapter does not fit this model ({len(unexpected)} unexpected keys, "
                          f"e.g. {unexpected[0]})")


def read_checkpoint_meta(ckpt: str | Path) -> dict[str, Any]:
    """lorank's metadata for an adapter dir: the checkpoint's marker, else the run's config.json."""
    ckpt = Path(ckpt)
    for f in (marker_file(ckpt), export_meta_file(ckpt)):
        if f.is_file():
            return json.loads(f.read_text(encoding="utf-8"))
    run_cfg = config_file(ckpt.parent)
    if run_cfg.is_file():
        d = json.loads(run_cfg.read_text(encoding="utf-8"))
        c = d.get("config", {})
        return {"base_model": c.get("model"), "model_path": d.get("model_path"), "input": c.get("input", {}),
                "lora": c.get("lora", {}), "dtype": c.get("dtype", "bf16"), "pad_token_id": d.get("pad_token_id")}
    cfg = peft_config_file(ckpt)
    if cfg.is_file():
        d = json.loads(cfg.read_text(encoding="utf-8"))
        return {"base_model": d.get("base_model_name_or_path"), "input": {}, "lora": {}}
    raise ConfigError(f"{ckpt}: not an adapter directory (no {cfg.name})")


#: the PEFT adapter types lorank loads: LoRA (DoRA, rsLoRA and DyLoRA save as LoRA too) and AdaLoRA
PEFT_TYPES = ("LORA", "ADALORA")


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_targets(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, list) and bool(v) and all(isinstance(x, str) for x in v))


#: the ``adapter_config.json`` fields lorank and PEFT need, per adapter type: (what each must be, its test)
_PEFT_FIELDS: dict[str, dict[str, tuple[str, Any]]] = {
    "LORA": {"r": ("a positive integer (the LoRA rank)", _positive_int),
             "lora_alpha": ("a number", _is_number),
             "target_modules": ("a list of module names or a regular expression", _is_targets)},
    "ADALORA": {"init_r": ("a positive integer (the rank every module started at)", _positive_int),
                "lora_alpha": ("a number", _is_number),
                "target_modules": ("a list of module names or a regular expression", _is_targets)},
}


def read_peft_config(ckpt: str | Path) -> dict[str, Any]:
    """An adapter folder's ``adapter_config.json``, checked: valid JSON (else the file, line and column), an object,
    a type lorank loads (:data:`PEFT_TYPES`) and the fields that type needs (each bad one named; an AdaLoRA
    adapter's ``rank_pattern``: a mask of ``init_r`` booleans per module). Raises ConfigError saying what to do."""
    f = peft_config_file(ckpt)
    fix = "restore it from where the adapter came from, or re-export the adapter (lorank export-adapter)"
    if not f.is_file():
        raise ConfigError(f"{Path(ckpt)}: no {PEFT_CONFIG}: not an adapter folder (PEFT writes {PEFT_CONFIG} "
                          f"beside {WEIGHTS})")
    try:
        d = json.loads(f.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{f}: not UTF-8 text (byte {e.start}); {fix}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{f}, line {e.lineno}, column {e.colno}: not valid JSON ({e.msg}); {fix}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{f}: a JSON object is expected, found {type(d).__name__}; {fix}")
    kind = d.get("peft_type")
    want_type = " or ".join(f'the string "{t}"' for t in PEFT_TYPES)
    problems = [] if kind in PEFT_TYPES else [
        f"{f}: field 'peft_type' " + (f"is missing: it must be {want_type}" if "peft_type" not in d
                                      else f"is {kind!r}: it must be {want_type}")]
    fields = _PEFT_FIELDS.get(kind, _PEFT_FIELDS["LORA"])
    problems += [f"{f}: field {k!r} " + (f"is missing: it must be {want}" if k not in d
                                         else f"is {d[k]!r}: it must be {want}")
                 for k, (want, ok) in fields.items() if k not in d or not ok(d[k])]
    if kind == "ADALORA" and not problems:
        problems += _rank_pattern_problems(f, d.get("rank_pattern"), d["init_r"])
    if problems:
        raise ConfigError(problems + [f"fix: {fix}"])
    return d


def _rank_pattern_problems(f: Path, pattern: Any, init_r: int) -> list[str]:
    """What is wrong with an AdaLoRA ``rank_pattern`` (null before the budget was first allocated, else
    ``{module: [init_r booleans]}``, the singular values each module kept)."""
    if pattern is None:
        return []
    if not isinstance(pattern, dict):
        return [f"{f}: field 'rank_pattern' is {type(pattern).__name__}: it must be null or an object "
                "(module -> the kept singular values, a list of booleans)"]
    return [f"{f}: rank_pattern[{k!r}] must be a list of {init_r} booleans (init_r), found {v!r:.80}"
            for k, v in pattern.items()
            if not (isinstance(v, list) and len(v) == init_r and all(isinstance(x, bool) for x in v))]


def adalora_rank_problems(ckpt: str | Path, config: dict[str, Any]) -> list[str]:
    """An AdaLoRA adapter whose saved factors do not have the ranks its ``rank_pattern`` kept (PEFT resizes the
    modules by the pattern before it loads the weights): one line per module, read from the weights' header."""
    from safetensors import safe_open

    f = weights_file(ckpt)
    if config.get("peft_type") != "ADALORA" or not f.is_file() or safetensors_problem(f):
        return []
    kept = {re.sub(r"\.lora_E(\.[^.]+)?$", "", k): sum(v) for k, v in (config.get("rank_pattern") or {}).items()}
    problems = []
    with safe_open(str(f), "pt") as fh:
        for k in fh.keys():
            m = re.match(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_E(\.[^.]+)?$", k)
            if not m:
                continue
            rank, want = int(fh.get_slice(k).get_shape()[0]), kept.get(m.group("module"), config.get("init_r"))
            if rank != want:
                problems.append(f"{ckpt}: {m.group('module')} holds {rank} singular values, its rank_pattern in "
                                f"{PEFT_CONFIG} keeps {want}: the weights and the config are from different saves")
    return problems


def adapter_shape(ckpt: str | Path) -> dict[str, int | None]:
    """The base shape an adapter was trained on, read from its weights' header (no tensor is loaded):
    ``hidden`` (the score head's input, else a q_proj's LoRA A input) and ``layers`` (1 + the deepest layer index)."""
    from safetensors import safe_open

    f = weights_file(ckpt)
    if not f.is_file() or safetensors_problem(f):  # a pickle adapter (allowed by the caller): PEFT checks it
        return {"hidden": None, "layers": None}
    hidden = q_hidden = None
    deepest = -1
    with safe_open(str(f), "pt") as fh:
        for k in fh.keys():
            m = re.search(r"\.layers\.(\d+)\.", k)
            if m:
                deepest = max(deepest, int(m.group(1)))
            shape = fh.get_slice(k).get_shape()
            if re.search(r"(^|\.)(score|classifier)(\.modules_to_save\.[^.]+)?\.weight$", k) and len(shape) == 2:
                hidden = int(shape[1])
            elif is_lora_a_key(k) and len(shape) == 2:
                q_hidden = int(shape[1])
    return {"hidden": hidden or q_hidden, "layers": deepest + 1 if deepest >= 0 else None}


def check_adapter_fits(ckpt: str | Path, config: Any, base: str) -> None:
    """Refuse, with the two shapes, an adapter trained on a base of another shape than ``config``'s (instead of
    PEFT's 'size mismatch' traceback)."""
    shape = adapter_shape(ckpt)
    hidden, layers = getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)
    fix = (f"load it on the base model it was trained on (the base_model of {Path(ckpt) / 'lorank_meta.json'} or "
           f"base_model_name_or_path of {peft_config_file(ckpt)})")
    if shape["hidden"] and hidden and shape["hidden"] != hidden:
        raise ConfigError(f"{ckpt}: this adapter was trained on a base of hidden size {shape['hidden']}, the model "
                          f"({base}) has {hidden}: {fix}")
    if shape["layers"] and layers and shape["layers"] > layers:
        raise ConfigError(f"{ckpt}: this adapter adapts {shape['layers']} layers, the model ({base}) has {layers}: "
                          f"{fix}")
    problems = adalora_rank_problems(ckpt, read_peft_config(ckpt)) if peft_config_file(ckpt).is_file() else []
    if problems:
        raise ConfigError(problems)


def _sha256(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


#: the key of ``lorank_meta.json`` that records an identity kept across a re-export
IDENTITY = "identity"


def content_hash(ckpt: str | Path) -> str:
    """The SHA-256 of what an exported adapter computes with: its weights, ``adapter_config.json`` and lorank's
    metadata (canonical JSON, without the recorded identity). Its README and metrics are not part of it."""
    ckpt = Path(ckpt)
    h = hashlib.sha256(_sha256([adapter_file(ckpt), peft_config_file(ckpt)]).encode())
    meta_f = export_meta_file(ckpt)
    if meta_f.is_file():
        meta = json.loads(meta_f.read_text(encoding="utf-8"))
        meta.pop(IDENTITY, None)
        h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


def adapter_identity(ckpt: str | Path) -> str:
    """An adapter folder's identity, which the hashes of a study's steps on it follow: the SHA-256 of its weights
    file, ``adapter_config.json`` and ``lorank_meta.json`` (16 hex digits), so a copied folder keeps it and a
    retrained one gets a new one. A re-export that kept the weights' tensors (e.g. to make the base portable or the
    README a model card) records the identity of the folder it came from with the :func:`content_hash` of what it
    wrote (``lorank_meta.json``'s ``identity``): while the content still matches, that identity is the folder's,
    so the studies that dissected the adapter stay valid; any edit of its weights, config or metadata drops it."""
    ckpt = Path(ckpt)
    meta_f = export_meta_file(ckpt)
    meta = json.loads(meta_f.read_text(encoding="utf-8")) if meta_f.is_file() else {}
    rec = meta.get(IDENTITY) if isinstance(meta, dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("hash"), str) and rec.get("content") == content_hash(ckpt):
        return rec["hash"]
    parts = [adapter_file(ckpt), peft_config_file(ckpt)] + ([meta_f] if meta_f.is_file() else [])
    return _sha256(parts)[:16]
