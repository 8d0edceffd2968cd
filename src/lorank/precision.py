"""One precision decision for the whole toolkit.

Wherever a caller leaves the precision open (``dtype: auto`` in a training config, ``bf16=None`` for a scorer,
``Reranker.from_adapter(dtype=None)``), this module decides, in this order:

1. ``$LORANK_BF16``: ``1`` (bf16), ``0`` (fp32) or ``auto``/unset (decide by the hardware). Tests and CI set it
   to check both settings on any CPU; users set it to pin the precision of every command at once.
2. The hardware: bf16 where it pays, i.e. on a CUDA GPU with bf16 support, or on a CPU with AVX512-BF16 or
   AMX. On plain AVX2 CPUs bf16 matmuls are ~8x *slower* than fp32 (measured: 18 vs 156 GFLOP/s).

Every scorer (plain, prefix-cached, merged, sharded) and the training run use the same decision and report it
(:func:`describe`), so the options of one command never change the precision behind the user's back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lorank.errors import ConfigError

ENV_VAR = "LORANK_BF16"
_TRUE = ("1", "true", "yes", "on", "bf16")
_FALSE = ("0", "false", "no", "off", "fp32")


def bf16_override() -> bool | None:
    """The ``$LORANK_BF16`` setting: True/False when pinned, None for ``auto`` (or unset)."""
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"${ENV_VAR}={os.environ[ENV_VAR]!r} is not a precision setting: use 0 (fp32), 1 (bf16) or auto")


def _cpu_flag(flag: str) -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            return any(line.startswith("flags") and flag in line.split() for line in fh)
    except OSError:  # not Linux: fall back on torch's own capability string
        return False


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()`` or the machine type: what a run or a
    measurement records beside its precision (the same config trains in bf16 on one CPU and fp32 on another)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            name = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), None)
    except OSError:
        name = None
    return name or platform.processor() or platform.machine()


def cpu_isa() -> str:
    """The CPU's widest matrix instructions: ``AMX``, ``AVX512-BF16``, ``AVX-512``, ``AVX2`` or ``no AVX2`` (from
    ``/proc/cpuinfo``; ``?`` where it cannot be read): what a timing records beside the CPU's name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = set(next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), []))
    except OSError:
        return "?"
    return next((label for flag, label in (("amx_bf16", "AMX"), ("avx512_bf16", "AVX512-BF16"),
                                           ("avx512f", "AVX-512"), ("avx2", "AVX2")) if flag in flags), "no AVX2")


def cpu_bf16_capability() -> str | None:
    """The CPU feature that makes bf16 pay (``AMX``, ``AVX512-BF16``), or None on CPUs without one."""
    import torch

    cap = str(torch.backends.cpu.get_cpu_capability()).upper()
    if "AMX" in cap or _cpu_flag("amx_bf16"):
        return "AMX"
    if "BF16" in cap or _cpu_flag("avx512_bf16"):
        return "AVX512-BF16"
    return None


def _device_type(device: Any) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device).type


def bf16_pays(device: Any = None) -> bool:
    """Whether bf16 is faster than fp32 on ``device`` (default: CUDA if present, else the CPU)."""
    import torch

    if _device_type(device) == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return cpu_bf16_capability() is not None


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``bf16`` or not, and why (for logs, summaries and command output)."""

    bf16: bool
    reason: str

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.name, "reason": self.reason}


def decide(requested: bool | None = None, device: Any = None) -> Precision:
    """The one decision. ``requested`` (an explicit argument) wins; then ``$LORANK_BF16``; then the hardware."""
    if requested is not None:
        return Precision(bool(requested), "set explicitly")
    pinned = bf16_override()
    if pinned is not None:
        return Precision(pinned, f"{ENV_VAR}={os.environ[ENV_VAR].strip()}")
    dev = _device_type(device)
    if dev == "cuda":
        ok = bf16_pays("cuda")
        return Precision(ok, "auto: CUDA GPU " + ("with" if ok else "without") + " bf16 support")
    cap = cpu_bf16_capability()
    if cap:
        return Precision(True, f"auto: CPU with {cap}")
    return Precision(False, "auto: CPU without AVX512-BF16/AMX, where bf16 is slower than fp32")


def use_bf16(requested: bool | None = None, device: Any = None) -> bool:
    return decide(requested, device).bf16


def resolve_dtype_name(name: str | None, device: Any = None) -> str:
    """``auto`` (or None) -> ``bf16`` or ``fp32`` by :func:`decide`; any other name is returned as given."""
    if name in (None, "auto"):
        return decide(None, device).name
    return name


def weights_dtype_name(name: str | None, device: Any = None, cpu_bf16_weights: bool = True,
                       requested: bool | None = None) -> str:
    """The dtype to *load* weights in for inference when ``name`` is ``auto``/None: bf16 wherever the decision is bf16
    (the score head stays fp32: :func:`lorank.models.load_reranker`), else fp32.

    On a bf16 CPU this is what training's checkpoint evaluations score with (the run's base weights are bf16), so a
    checkpoint reranked by ``lorank rerank`` or dissected by ``lorank ablate`` gets its in-training evaluation's
    numbers, and it is faster than fp32 weights under the scorer's bf16 autocast (which casts every weight at every
    matmul). Measured on the 2-core AMX Xeon, the reference adapter on DL19 BM25 top-50, one process, nothing else
    running: results/score_dtype.json (``benchmarks/score_dtype.py``). An earlier measurement, 48 pairs beside a
    training job on the same cores, had seen no difference and made fp32 weights the CPU default until session 27.

    ``requested``: the scorer's own ``bf16`` argument, so the weights follow the same decision as the compute (a
    scorer asked for fp32 gets fp32 weights). ``cpu_bf16_weights=False`` keeps fp32 weights (bf16 from autocast) on a
    CPU: ICR, whose scores are the attention weights themselves, keeps the precision its committed results were
    computed in."""
    if name not in (None, "auto"):
        return name
    d = decide(requested, device)
    if not d.bf16:
        return "fp32"
    return "bf16" if (cpu_bf16_weights or _device_type(device) == "cuda") else "fp32"


def model_precision(model: Any, autocast_bf16: bool) -> str:
    """What a forward of ``model`` actually computes in: bf16 when its weights are bf16 or when it runs under
    bf16 autocast, else the weights' dtype."""
    import torch

    dtypes = {p.dtype for p in model.parameters()}
    if autocast_bf16 or torch.bfloat16 in dtypes:
        return "bf16"
    if torch.float16 in dtypes:
        return "fp16"
    return "fp32"


def weights_dtype(model: Any) -> str:
    """The dtype most of ``model``'s parameters are held in (``bf16``, ``fp16``, ``fp32``): what a forward's matmuls
    read. Recorded beside the precision, since bf16 compute over fp32 weights (autocast) and over bf16 weights give
    different scores (results/score_dtype.json)."""
    import torch

    counts: dict[Any, int] = {}
    for p in model.parameters():
        counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    top = max(counts, key=counts.get) if counts else torch.float32
    return {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}.get(top, str(top))
