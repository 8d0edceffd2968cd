"""ICR's signal: the attention of the query part's tokens to every context token, per layer and head, and the
documents' scores from it, calibrated by a content-free query.

**Aggregation** (the authors' ``score_documents``): for each layer and head, the attention weights of the query
part's rows are averaged over those rows (``mean`` over the query tokens, so a longer query does not weigh more),
then summed over each document's tokens; the document's ICR score is the sum over layers and heads. The scores
kept here are per (document, layer, head), so that ``scores.sum((1, 2))`` is the ICR score and any layer or head
can be ranked by alone.

**Calibration** (their default ``masked_NA_calibration``): the same forward with the content-free query ``N/A``
gives the attention the documents get whatever the query (position, length, marker effects); per document token,
calibrated = query attention - ``N/A`` attention. Tokens whose calibrated score (summed over layers and heads) lies
at or below mean - 2 std of the document's tokens (``torch.std``: n - 1) are dropped, and the document's score is the
sum of the calibrated attention over the kept tokens. The mask is decided once, on the total over layers and heads,
and the same mask applies to every layer and head, so the per-layer scores add up to the ICR score.
Departure: a one-token document keeps its token (the authors' std of one value is NaN, which masks the token and
scores the document 0).

**How the attention is read.** The context (all documents) runs once with the model's own attention kernel (SDPA)
and its KV cache is kept; each query part (``N/A``, then the query) runs on that cache with eager attention and
``output_attentions``, which returns only the query part's rows: one ``(heads, query tokens, keys)`` tensor per layer,
never the full ``(keys, keys)`` matrix. These rows equal those of one eager forward over the whole prompt
(tests/inference/test_icr.py checks it). The authors, for the same reason, rebuild the query rows from the KV cache
after a FlashAttention-2 forward. A sliding-window layer (Gemma 3's local layers) whose cache keeps only its last
keys gives the tokens before its window zero attention, which is what that layer sees.
"""
from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from lorank.errors import ConfigError
from lorank.inference.forward_context import autocast_ctx

#: tokens whose calibrated score is at or below mean - MASK_STDS * std of their document's are dropped
MASK_STDS = 2.0


def _cache_kwarg(body: Any) -> str:
    """The forward's name for the KV cache: ``cache`` in newer transformers, ``past_key_values`` before."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


@contextlib.contextmanager
def eager_attention(body: Any) -> Iterator[None]:
    """The model on eager attention (which returns its weights) for the block, its own implementation after."""
    config = body.config
    before = getattr(config, "_attn_implementation", None)
    setter = getattr(body, "set_attn_implementation", None)

    def put(name: Any) -> None:
        if callable(setter):
            setter(name)
        else:
            config._attn_implementation = name

    put("eager")
    try:
        yield
    finally:
        if before is not None and before != "eager":
            put(before)


def _rows(attentions: Sequence[Any], n_context: int, n_query: int, model: str) -> torch.Tensor:
    """``(layers, heads, n_context)``: each layer's query rows averaged, over the context's keys."""
    if not attentions or any(a is None for a in attentions):
        raise ConfigError(f"{model} returns no attention weights with eager attention: ICR needs them")
    out = []
    for a in attentions:
        keys = a.shape[-1] - n_query  # context keys this layer attends to (fewer for a sliding-window layer)
        row = a[0, :, :, :keys].float().mean(1)
        if keys < n_context:
            row = torch.cat([row.new_zeros(row.shape[0], n_context - keys), row], dim=1)
        out.append(row)
    return torch.stack(out).cpu()


def query_attention(body: Any, context: Sequence[int], parts: Sequence[Sequence[int]], bf16: bool) -> list[torch.Tensor]:
    """For each query part (its ids, after ``context``): a float32 ``(layers, heads, len(context))`` tensor, the
    attention of the part's tokens to each context token averaged over those tokens. ``body`` is the bare
    transformer (:func:`lorank.models.arch.backbone`); the context runs once and its cache is reused."""
    dev = next(body.parameters()).device
    kw = _cache_kwarg(body)
    n = len(context)
    out = []
    with torch.inference_mode(), autocast_ctx(body, bf16):
        cache = getattr(body(input_ids=torch.tensor([list(context)], device=dev), use_cache=True), kw)
        with eager_attention(body):
            for j, part in enumerate(parts):
                c = cache if j == len(parts) - 1 else copy.deepcopy(cache)
                o = body(input_ids=torch.tensor([list(part)], device=dev), use_cache=True, output_attentions=True,
                         **{kw: c})
                out.append(_rows(o.attentions, n, len(part), type(body).__name__))
    return out


def token_mask(calibrated: torch.Tensor) -> torch.Tensor:
    """The tokens of one document that count: calibrated score (over layers and heads) above mean - 2 std."""
    if calibrated.numel() < 2:
        return torch.ones_like(calibrated, dtype=torch.bool)
    return calibrated > calibrated.mean() - MASK_STDS * calibrated.std()


def document_scores(att: torch.Tensor, calibration: torch.Tensor | None, spans: Sequence[tuple[int, int]],
                    mask: bool = True) -> np.ndarray:
    """``(documents, layers, heads)`` scores from the query's ``att`` and the content-free query's
    ``calibration`` (both ``(layers, heads, context tokens)``; see the module docstring). ``calibration`` None: the
    uncalibrated score (the authors' ``query_last``), no token dropped."""
    if calibration is not None and calibration.shape != att.shape:
        raise ValueError(f"attention {tuple(att.shape)} and calibration {tuple(calibration.shape)} differ in shape")
    diff = att.double() if calibration is None else att.double() - calibration.double()
    out = np.zeros((len(spans),) + tuple(att.shape[:2]))
    for d, (start, end) in enumerate(spans):
        if not 0 <= start < end <= att.shape[-1]:
            raise ValueError(f"document {d}'s span [{start}, {end}) is not inside the {att.shape[-1]} context tokens")
        tok = diff[:, :, start:end]
        if calibration is not None and mask:
            tok = tok * token_mask(tok.sum((0, 1)))
        out[d] = tok.sum(-1).numpy()
    return out
