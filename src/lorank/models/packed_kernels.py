"""The non-matmul pieces of the packed forward (:mod:`lorank.models.packed`): RMSNorm, rotary, SwiGLU and bf16
attention by matmuls, and Gemma 3's variants (its RMSNorm, q/k norms, GELU-tanh MLP); the LoRA dropout mask is
:mod:`lorank.lora.dropout`.

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


def attend_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: torch.Tensor,
                scale: float | None = None) -> torch.Tensor:
    """Causal GQA attention by explicit matmuls with the softmax in fp32 (as HF's eager attention):
    q [B, Hq, W, D], k/v [B, Hkv, W, D], ``causal`` [W, W] bool. On a CPU in bf16 this ran fwd + bwd in 7.4 ms
    where SDPA's flash kernel took 32 ms in bf16 and 13 ms in fp32 (16 x 104 tokens, 9/3 heads of 64). ``scale``:
    the logits' factor (default ``D ** -0.5``; Gemma's is ``query_pre_attn_scalar ** -0.5``)."""
    b, hq, w, d = q.shape
    hkv = k.shape[1]
    qg = q.reshape(b, hkv, (hq // hkv) * w, d)
    s = (qg @ k.transpose(-1, -2)) * (d ** -0.5 if scale is None else scale)
    s = s.view(b, hkv, hq // hkv, w, w).masked_fill(~causal, float("-inf"))
    pr = s.softmax(-1, dtype=torch.float32).to(q.dtype).view(b, hkv, (hq // hkv) * w, w)
    return (pr @ v).view(b, hq, w, d)


def gemma_rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's Gemma3RMSNorm: normalised and scaled by ``1 + w`` in fp32, then back to the input dtype."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * (1.0 + w.float())).to(x.dtype)


def qk_norm(qkv: torch.Tensor, q_w: torch.Tensor, k_w: torch.Tensor, eps: float, n_q: int, n_kv: int,
            head_dim: int) -> torch.Tensor:
    """Gemma 3's per-head RMSNorm of q (weight ``q_w``) and k (``k_w``) in packed ``qkv`` [T, (nq + 2 nkv) D],
    before the rotary embedding; v passes unchanged."""
    T = qkv.shape[0]
    q, k, v = qkv.split([n_q * head_dim, n_kv * head_dim, n_kv * head_dim], dim=1)
    q = gemma_rms_norm(q.reshape(T, n_q, head_dim), q_w, eps).reshape(T, -1)
    k = gemma_rms_norm(k.reshape(T, n_kv, head_dim), k_w, eps).reshape(T, -1)
    return torch.cat([q, k, v], dim=1)


def geglu_tanh(gu: torch.Tensor, inter: int) -> torch.Tensor:
    """GELU-tanh(gate) * up of the fused gate/up output [T, 2 I] (Gemma's ``gelu_pytorch_tanh`` MLP)."""
    g, u = gu.split(inter, dim=1)
    return F.gelu(g, approximate="tanh") * u
