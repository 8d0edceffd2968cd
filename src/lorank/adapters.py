"""Loading trained adapters safely: safetensors only, unless pickle is explicitly allowed."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorank.errors import ConfigError, LorankError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
COMPLETE_MARKER_NAME = "lorank_checkpoint.json"


class UnsafeFileError(LorankError):
    pass


def adapter_file(ckpt: str | Path, allow_pickle: bool = False) -> Path:
    """The adapter's weights file: ``adapter_model.safetensors``, structurally checked (a truncated file is
    refused); a pickle file (``.bin``/``.pt``...) only with ``allow_pickle``."""
    from lorank.train.checkpoints import safetensors_problem

    ckpt = Path(ckpt)
    if not ckpt.is_dir():
        raise ConfigError(f"adapter directory not found: {ckpt}")
    st = ckpt / "adapter_model.safetensors"
    if st.is_file():
        problem = safetensors_problem(st)
        if problem:
            raise ConfigError(f"{ckpt}: {problem}; the checkpoint is damaged or was not completely written")
        return st
    pick = [p for p in ckpt.iterdir() if p.name.startswith("adapter_model") and p.suffix in PICKLE_SUFFIXES]
    if pick:
        if not allow_pickle:
            raise UnsafeFileError(
                f"{pick[0]} is a pickle file, which can execute code when loaded. lorank loads adapters only from "
                "safetensors; pass --allow-pickle (allow_pickle=True) if you trust its source.")
        return pick[0]
    raise ConfigError(f"{ckpt} holds no adapter_model.safetensors")


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
    COMPLETE_MARKER = COMPLETE_MARKER_NAME  # (importing lorank.train.callbacks would pull in the HF Trainer)

    for f in (ckpt / COMPLETE_MARKER, ckpt / "lorank_meta.json"):
        if f.is_file():
            return json.loads(f.read_text(encoding="utf-8"))
    run_cfg = ckpt.parent / "config.json"
    if run_cfg.is_file():
        d = json.loads(run_cfg.read_text(encoding="utf-8"))
        c = d.get("config", {})
        return {"base_model": c.get("model"), "model_path": d.get("model_path"), "input": c.get("input", {}),
                "lora": c.get("lora", {}), "dtype": c.get("dtype", "bf16"), "pad_token_id": d.get("pad_token_id")}
    cfg = ckpt / "adapter_config.json"
    if cfg.is_file():
        d = json.loads(cfg.read_text(encoding="utf-8"))
        return {"base_model": d.get("base_model_name_or_path"), "input": {}, "lora": {}}
    raise ConfigError(f"{ckpt}: not an adapter directory (no adapter_config.json)")


def _in_lorank_run(ckpt: Path) -> bool:
    """A checkpoint-N folder inside a lorank training run (whose saves end with the completeness marker)."""
    cfg = ckpt.parent / "config.json"
    if not ckpt.name.startswith("checkpoint-") or not cfg.is_file():
        return False
    try:
        d = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(d, dict) and "lora_targets" in d and "config" in d


def latest_checkpoint(run_dir: str | Path) -> Path:
    """A run dir -> its last complete checkpoint (half-written ones are skipped with a warning); a
    checkpoint dir -> itself, unless it is a lorank training checkpoint whose save did not finish."""
    from lorank.train.checkpoints import checkpoint_problem, complete_checkpoints

    run_dir = Path(run_dir)
    if (run_dir / "adapter_config.json").is_file():
        if (run_dir / COMPLETE_MARKER_NAME).exists() or _in_lorank_run(run_dir):
            problem = checkpoint_problem(run_dir)
            if problem:
                raise ConfigError(f"{run_dir} is an incomplete checkpoint: {problem}. Use the run folder "
                                  "to load its last complete checkpoint.")
        return run_dir

    ck = complete_checkpoints(run_dir)
    if not ck:
        raise ConfigError(f"{run_dir}: no complete checkpoint found")
    return ck[-1]
