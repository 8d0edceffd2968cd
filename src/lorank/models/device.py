"""Where inference runs: one decision for every scorer built from a model or an adapter.

``resolve_device(device)``: an explicit ``device`` wins (``cpu``, ``cuda``, ``cuda:N``), then ``$LORANK_DEVICE``
(the same values, or ``auto``), then the hardware: ``cuda:$LOCAL_RANK`` when CUDA is available (one GPU per
process under torchrun), else the CPU. Asking for CUDA where there is none is an error, not a silent CPU run.
Training places its model through the HF Trainer (accelerate); this is for ``Reranker`` and what builds on it
(``lorank rerank``, ablations, probes, patching, features, LTR).
"""
from __future__ import annotations

import os
from typing import Any

from lorank.errors import ConfigError

ENV = "LORANK_DEVICE"


def resolve_device(device: Any = None, rank: int | None = None) -> Any:
    """The ``torch.device`` inference runs on (see the module docstring for the order of the decision). ``rank``
    (default ``$LOCAL_RANK``) picks the GPU when the hardware decides: ``cuda:rank mod count``; a rank given
    explicitly (a sharded worker's) also spreads a bare ``cuda``. A pinned ``cuda:N`` holds whatever the rank."""
    import torch

    src = "argument"
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        env = os.environ.get(ENV, "").strip()
        device, src = (env, f"${ENV}") if env and env.lower() != "auto" else (None, "hardware")
    if device is None:
        if torch.cuda.is_available():
            if rank is None:
                rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
            return torch.device("cuda", rank % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConfigError(f"device {device!r} (from the {src}) is not a device: use cpu, cuda, cuda:N or auto") from e
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} (from the {src}): lorank scores on cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} (from the {src}) asks for CUDA, and this machine has none")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} (from the {src}): only {torch.cuda.device_count()} CUDA device(s)")
        if dev.index is None and rank is not None:
            dev = torch.device("cuda", rank % torch.cuda.device_count())
    return dev
