"""The non-matmul pieces of the packed forward (:mod:`lorank.models.packed`): RMSNorm, rotary, SwiGLU, the LoRA
dropout mask and bf16 attention by matmuls.

``torch.compile`` (inductor, CPU, ``dynamic=True``) of these pieces was measured and does not pay: alone, the
compiled RMSNorm, rotary and SwiGLU ran 1.6-5.6x faster than eager ([1665, 576] bf16 tokens, forward + backward),
but in the full packed step all three compiled together ran at 606 tokens/s against 671 eager (same run, 7 steps
each, SmolLM2-135M, 2-core AVX512-BF16 CPU); compiled attention was slower alone (-13%), and inductor's CPU random
numbers were 3x slower than the 16-bit-lane draw. So everything here is eager torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's LlamaRMSNorm: normalised in fp32, back to the input dtype, times the weight."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return w * xf.to(x.dtype)


def rope(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, n_rot: int, head_dim: int) -> torch.Tensor:
    """Rotary embedding (HF's rotate-half form) on the first ``n_rot`` heads (q and k) of packed ``qkv``
    [T, heads * D]; the rest (v) passes unchanged. ``cos``/``sin``: [T, 1, D]."""
    T = qkv.shape[0]
    qk = qkv[:, : n_rot * head_dim].reshape(T, n_rot, head_dim)
    x1, x2 = qk.chunk(2, dim=-1)
    qk = qk * cos + torch.cat((-x2, x1), dim=-1) * sin
    return torch.cat([qk.reshape(T, -1), qkv[:, n_rot * head_dim:]], dim=1)


def swiglu(gu: torch.Tensor, inter: int) -> torch.Tensor:
    """SiLU(gate) * up of the fused gate/up output [T, 2 I]."""
    g, u = gu.split(inter, dim=1)
    return F.silu(g) * u


def keep_mask(x: torch.Tensor, threshold: int) -> torch.Tensor:
    """A bool mask shaped like ``x``, True where a 16-bit random lane >= ``threshold``: four lanes per 64-bit
    random word of the torch RNG (seeded, saved in checkpoints), as :class:`lorank.train.trainer.FastDropout`."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-2**63, None)
    return words.view(torch.int16)[:n].view(x.shape) >= threshold


def drop_lanes(x: torch.Tensor, threshold: int) -> torch.Tensor:
    """``x`` times :func:`keep_mask` (p rounded to 1/65536); the caller folds 1/(1-p) into LoRA's B."""
    return x * keep_mask(x, threshold)


def attend_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: torch.Tensor) -> torch.Tensor:
    """Causal GQA attention by explicit matmuls with the softmax in fp32 (as HF's eager attention):
    q [B, Hq, W, D], k/v [B, Hkv, W, D], ``causal`` [W, W] bool. On a CPU in bf16 this ran fwd + bwd in 7.4 ms
    where SDPA's flash kernel took 32 ms in bf16 and 13 ms in fp32 (16 x 104 tokens, 9/3 heads of 64)."""
    b, hq, w, d = q.shape
    hkv = k.shape[1]
    qg = q.reshape(b, hkv, (hq // hkv) * w, d)
    s = (qg @ k.transpose(-1, -2)) * (d ** -0.5)
    s = s.view(b, hkv, hq // hkv, w, w).masked_fill(~causal, float("-inf"))
    pr = s.softmax(-1, dtype=torch.float32).to(q.dtype).view(b, hkv, (hq // hkv) * w, w)
    return (pr @ v).view(b, hq, w, d)


def lane_threshold(p: float) -> int:
    """Keep where a uniform int16 lane >= this: p rounded to a multiple of 1/65536."""
    return round(p * 65536) - 32768


def keep_scale(p: float) -> float:
    """1/(1 - the drop probability that :func:`drop_lanes` realises for ``p``)."""
    return 1.0 / (1.0 - (lane_threshold(p) + 32768) / 65536)
