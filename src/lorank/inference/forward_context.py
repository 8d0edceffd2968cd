"""What wraps every scoring forward: the bf16 autocast context and the out-of-memory test.

Below both scoring paths (:mod:`lorank.inference.engine`, :mod:`lorank.inference.prefix`) and used by the
ablation, analysis and feature-extraction forwards too, so none of them imports another's engine.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from lorank.errors import LorankError


def autocast_ctx(model: Any, use_bf16: bool) -> Any:
    dev = next(model.parameters()).device
    if use_bf16:
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class ScoringMemoryError(LorankError):
    """Out of memory on one sequence: backing off the batch size cannot help any more."""


def is_oom(e: BaseException) -> bool:
    """GPU OOM (``torch.OutOfMemoryError``, "CUDA out of memory") or a failed CPU allocation."""
    msg = str(e).lower()
    return isinstance(e, torch.OutOfMemoryError) or "out of memory" in msg or "can't allocate memory" in msg
