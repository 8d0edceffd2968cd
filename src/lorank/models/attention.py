"""Which ``scaled_dot_product_attention`` kernels torch may use on a GPU, chosen on purpose.

torch >= 2.5 on Hopper tries the cuDNN backend first; it builds an execution plan for every new
(rows, width) shape, which cost 1.2-2.5 s per new shape on an H100/H200 and made nearly every training
step pay it (a step meets new chunk shapes). ``auto`` therefore switches cuDNN attention off and lets the
flash kernel (sm80+, bf16/fp16) take unmasked causal chunks, with the memory-efficient kernel for masked
calls (the prefix cache) and math as the last fallback.

The choice is process-wide (torch's ``torch.backends.cuda.enable_*_sdp`` flags): it is applied once, by
``lorank train`` and the GPU benchmark, and recorded in ``train_summary.json`` / the benchmark JSON. On
CPU nothing is changed (the flags only steer CUDA kernels).
"""
from __future__ import annotations

from typing import Any

import torch

from lorank.errors import ConfigError

ATTENTION_BACKENDS = ("auto", "flash", "efficient", "math", "cudnn")

#: the SDPA kernels each choice enables, in torch's priority order (the first one that accepts a call runs);
#: every set keeps ``math`` so a call the preferred kernel cannot take (an explicit mask for flash) still runs
ENABLED: dict[str, tuple[str, ...]] = {
    "flash": ("flash", "efficient", "math"),
    "efficient": ("efficient", "math"),
    "math": ("math",),
    "cudnn": ("cudnn", "flash", "efficient", "math"),
}
_SETTERS = {"flash": "enable_flash_sdp", "efficient": "enable_mem_efficient_sdp", "math": "enable_math_sdp",
            "cudnn": "enable_cudnn_sdp"}
_GETTERS = {"flash": "flash_sdp_enabled", "efficient": "mem_efficient_sdp_enabled", "math": "math_sdp_enabled",
            "cudnn": "cudnn_sdp_enabled"}


def resolve_attention_backend(requested: str, device_type: str, capability: tuple[int, int] | None = None,
                              dtype: torch.dtype | None = torch.bfloat16) -> str | None:
    """The backend to apply: ``None`` off CUDA (torch's own CPU choice stays); on CUDA ``auto`` is ``flash``
    on sm80+ with a half-precision dtype (what the flash kernel supports), else ``efficient``."""
    if requested not in ATTENTION_BACKENDS:
        raise ConfigError(f"unknown attention_backend {requested!r} (use one of {', '.join(ATTENTION_BACKENDS)})")
    if device_type != "cuda":
        return None
    if requested != "auto":
        return requested
    half = dtype in (torch.bfloat16, torch.float16)
    return "flash" if (capability is not None and capability >= (8, 0) and half) else "efficient"


def apply_attention_backend(requested: str, device: torch.device | str, dtype: torch.dtype | None = torch.bfloat16,
                            backends: Any = None, capability: tuple[int, int] | None = None) -> dict[str, Any]:
    """Resolve ``requested`` for ``device`` and set torch's SDPA flags accordingly. Returns the record written
    to ``train_summary.json`` / the benchmark JSON: ``{"requested", "applied", "enabled"}`` (``applied`` is
    ``None`` and ``enabled`` empty off CUDA). ``backends`` and ``capability`` are for tests (default:
    ``torch.backends.cuda`` and the device's compute capability)."""
    dev = torch.device(device)
    if dev.type == "cuda" and capability is None and requested == "auto":
        capability = torch.cuda.get_device_capability(dev)
    name = resolve_attention_backend(requested, dev.type, capability, dtype)
    if name is None:
        return {"requested": requested, "applied": None, "enabled": []}
    backends = backends if backends is not None else torch.backends.cuda
    on = ENABLED[name]
    for kernel, setter in _SETTERS.items():
        fn = getattr(backends, setter, None)
        if fn is None:
            if kernel in on:
                raise ConfigError(f"attention_backend {name!r}: this torch has no {setter}() (torch "
                                  f"{torch.__version__}); choose another backend")
            continue  # an older torch without this kernel: nothing to switch off
        fn(kernel in on)
    record = {"requested": requested, "applied": name, "enabled": enabled_kernels(backends)}
    if backends is torch.backends.cuda:
        global _APPLIED
        _APPLIED = record
    return record


_APPLIED: dict[str, Any] | None = None


def applied_backend() -> dict[str, Any] | None:
    """What :func:`apply_attention_backend` last set in this process (None: nothing yet), so a later user
    (the scorer) keeps an explicit choice, e.g. the training config's, instead of applying its own."""
    return _APPLIED


def enabled_kernels(backends: Any = None) -> list[str]:
    """The SDPA kernels torch's flags currently allow (CUDA)."""
    backends = backends if backends is not None else torch.backends.cuda
    return [k for k, g in _GETTERS.items() if getattr(backends, g, lambda: False)()]
