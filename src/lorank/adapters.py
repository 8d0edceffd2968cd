"""Loading trained adapters safely: safetensors only, unless pickle is explicitly allowed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorank.errors import ConfigError, LorankError
from lorank.layout.adapter import (WEIGHTS, WEIGHTS_STEM, export_meta_file, peft_config_file, safetensors_problem,
                                   weights_file)
from lorank.layout.checkpoints import marker_file
from lorank.layout.run import config_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class UnsafeFileError(LorankError):
    pass


def adapter_file(ckpt: str | Path, allow_pickle: bool = False) -> Path:
    """The adapter's weights file: ``adapter_model.safetensors``, structurally checked (a truncated file is
    refused); a pickle file (``.bin``/``.pt``...) only with ``allow_pickle``."""
    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise ConfigError(f"adapter directory not found: {ckpt}")
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
