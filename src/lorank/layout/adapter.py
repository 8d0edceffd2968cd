"""The files of an adapter folder (a training checkpoint or an exported adapter) and the check that its weights file
is structurally whole.

PEFT writes ``adapter_model.safetensors`` (LoRA and the score head) and ``adapter_config.json``. lorank adds its
metadata: a training checkpoint carries the completeness marker (:mod:`lorank.layout.checkpoints`); an exported
adapter (:mod:`lorank.export`) carries ``lorank_meta.json``, ``training_config.json``, ``metrics.json`` and a
``README.md``.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

WEIGHTS = "adapter_model.safetensors"
#: the prefix of every weights file PEFT may have written (safetensors, or a pickle format)
WEIGHTS_STEM = "adapter_model"
PEFT_CONFIG = "adapter_config.json"
#: an exported adapter's: base model, input template, LoRA spec, head init, pad id (what loading needs)
EXPORT_META = "lorank_meta.json"
#: an exported adapter's copy of its run's resolved config (the run folder's config.json)
TRAINING_CONFIG = "training_config.json"
#: an exported adapter's evaluations
EXPORT_METRICS = "metrics.json"
#: lorank_meta.json's key for the token ids the encoder puts before every pair (absent when the tokenizer adds none)
BOS_KEY = "bos_token_ids"
README = "README.md"


def weights_file(d: str | Path) -> Path:
    return Path(d) / WEIGHTS


def peft_config_file(d: str | Path) -> Path:
    return Path(d) / PEFT_CONFIG


def export_meta_file(d: str | Path) -> Path:
    return Path(d) / EXPORT_META


def training_config_file(d: str | Path) -> Path:
    return Path(d) / TRAINING_CONFIG


def export_metrics_file(d: str | Path) -> Path:
    return Path(d) / EXPORT_METRICS


def safetensors_problem(f: Path) -> str | None:
    """None if ``f`` is a structurally whole safetensors file, else what is wrong (cheap: header only)."""
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{f.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100 * 2**20:
                return f"{f.name} is truncated (header of {n} bytes, file of {size})"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
        return f"{f.name} is unreadable ({e})"
    if not isinstance(header, dict):
        return f"{f.name} has a malformed header"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2]
    if len(ends) != len([k for k in header if k != "__metadata__"]):
        return f"{f.name} has a malformed header"
    if 8 + n + max(ends, default=0) != size:
        return f"{f.name} is truncated ({size} bytes, the header promises {8 + n + max(ends, default=0)})"
    return None
