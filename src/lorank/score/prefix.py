"""Prefix-cached scoring: the template puts the query first, so every candidate of a query shares
the same token prefix. Encode it once, keep its KV cache, and run only each candidate's suffix.

Scores equal the plain forward's (within float tolerance); the saving is the query's share of the
tokens (~10% on MS MARCO passages, more for long queries or short passages).
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lorank.models.arch import backbone
from lorank.models.inputs import PairEncoder
from lorank.score.engine import autocast_ctx
from lorank.train.collator import length_chunks, pad_chunk


def head_module(model: Any) -> Any:
    """The (possibly PEFT-wrapped) score head, callable on hidden states."""
    m = model.base_model.model if hasattr(model, "base_model") and hasattr(model, "peft_config") else model
    for attr in ("score", "classifier"):
        if hasattr(m, attr):
            return getattr(m, attr)
    raise AttributeError(f"{type(m).__name__} has no score head")


class PrefixScorer:
    def __init__(self, model: Any, encoder: PairEncoder, pad_id: int, batch_tokens: int = 8192,
                 bf16: bool = False):
        self.model = model.eval()
        self.encoder = encoder
        self.pad_id = pad_id
        self.batch_tokens = batch_tokens
        self.bf16 = bf16
        self.body = backbone(model)
        self.head = head_module(model)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score_query(self, query: str, passages: Sequence[tuple[str, str]]) -> np.ndarray:
        """Scores for one query's (text, title) candidates."""
        out = np.empty(len(passages))
        if not passages:
            return out
        prefix, suffixes = None, []
        for text, title in passages:
            q, s = self.encoder.encode_doc_suffix(query, text, title)
            prefix = q
            suffixes.append(s)
        dev = self.device
        with autocast_ctx(self.model, self.bf16):
            q_ids = torch.tensor([prefix], device=dev)
            cache = self.body(input_ids=q_ids, use_cache=True).past_key_values
            lq = len(prefix)
            for idx in length_chunks([len(s) + lq for s in suffixes], self.batch_tokens):
                ids, mask = pad_chunk([suffixes[i] for i in idx], self.pad_id)
                ids, mask = ids.to(dev), mask.to(dev)
                b, ls = ids.shape
                c = copy.deepcopy(cache)
                c.batch_repeat_interleave(b)
                full_mask = torch.cat([torch.ones(b, lq, dtype=mask.dtype, device=dev), mask], dim=1)
                pos = torch.arange(lq, lq + ls, device=dev).unsqueeze(0).expand(b, -1)
                h = self.body(input_ids=ids, attention_mask=full_mask, position_ids=pos, past_key_values=c,
                              use_cache=True).last_hidden_state
                last = mask.sum(1) - 1
                s = self.head(h[torch.arange(b, device=dev), last]).float().reshape(-1)
                out[idx] = s.cpu().numpy()
        return out

    def rerank(self, queries: dict[str, str], passages: dict[str, Any], run: dict[str, list[Any]],
               depth: int = 100, progress: Callable[[int], None] | None = None) -> dict[str, dict[str, float]]:
        result: dict[str, dict[str, float]] = {}
        for qid in sorted(run):
            cands = run[qid][:depth]
            scores = self.score_query(queries[qid], [(passages[e.docid].text, passages[e.docid].title) for e in cands])
            result[qid] = {e.docid: float(s) for e, s in zip(cands, scores)}
            if progress:
                progress(len(cands))
        return result
