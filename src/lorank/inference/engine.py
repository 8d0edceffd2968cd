"""The scoring engine: length-sorted, token-budgeted batches under ``torch.inference_mode``.

``score_pairs`` works for any (query, passage) list; ``rerank`` scores a candidate run.
Scores come back in input order. Batches are formed in an order fixed by the sequences' content, so the
same pairs in any input order get bit-identical scores; other batch budgets change a score only within
float tolerance.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lorank.errors import ConfigError
from lorank.batching import chunk_logits, length_chunks, pad_chunk, pad_multiple_for, shape_buckets_for
from lorank.inference.prefix import PrefixScorer
from lorank.models import attention
from lorank.models.inputs import PairEncoder
from lorank.inference.forward_context import ScoringMemoryError, autocast_ctx, is_oom  # noqa: F401  (re-exported)
from lorank.precision import decide, model_precision

log = logging.getLogger("lorank.inference")


class Scorer:
    """Scores (query, passage) pairs. ``prefix_cache=True``: the pairs of one query share the query's token
    prefix; it is encoded once and its KV cache reused for every candidate (:mod:`lorank.inference.prefix`),
    scores equal to the plain forward's within float tolerance, the query's share of the compute saved.

    ``merge_lora=True``: before the first batch, a PEFT model's LoRA deltas are merged into the base weights
    (``merge_adapter``), so each projection is one matmul instead of base + A + B + scale + add (~20% faster
    on CPU; scores equal within float tolerance). The model stays merged (``model.unmerge_adapter()`` undoes
    it): use it for a model that is only scored (``lorank rerank``), not one that is still trained or ablated."""

    def __init__(self, model: Any, encoder: PairEncoder, pad_id: int, batch_tokens: int = 8192,
                 bf16: bool | None = None, prefix_cache: bool = False, merge_lora: bool = False):
        self.model = model
        self.merge_lora = merge_lora
        self.encoder = encoder
        self.pad_id = pad_id
        self.batch_tokens = batch_tokens

        #: the one precision decision (lorank.precision), shared with the prefix-cached path
        self.precision_decision = decide(bf16, next(model.parameters()).device)
        self.bf16 = self.precision_decision.bf16
        self.prefix_cache = prefix_cache
        self._prefix_scorer: Any = None
        self.oom_backoffs = 0
        #: batch widths/rows on fixed ladders (lorank.batching); None: on CUDA only
        self.shape_buckets: bool | None = None
        #: SDPA kernels applied on the first CUDA batch (lorank.models.attention; None: torch's flags as they are)
        self.attention_backend: str | None = "auto"
        self.attention: dict[str, Any] | None = None  # what was applied

    def _merge(self) -> None:
        if self.merge_lora and hasattr(self.model, "merge_adapter") and hasattr(self.model, "peft_config"):
            if not any(getattr(m, "merged", False) for m in self.model.modules() if hasattr(m, "merged_adapters")):
                self.model.merge_adapter()

    def _apply_attention(self) -> None:
        """Once, on CUDA: choose the SDPA kernels (``auto``: flash, never cuDNN's per-shape plans), unless
        this process chose them already."""
        if self.attention is None and self.attention_backend and self.device.type == "cuda":
            # a choice made already in this process (lorank train's config, the benchmark) stays
            self.attention = attention.applied_backend() or attention.apply_attention_backend(
                self.attention_backend, self.device, torch.bfloat16 if self.bf16 else torch.float32)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def precision(self) -> str:
        """What the forward computes in (``bf16`` for bf16 weights or bf16 autocast, else ``fp32``)."""
        return model_precision(self.model, self.bf16)

    def describe(self) -> dict[str, Any]:
        """Precision and path, for command output and summaries."""
        return {"precision": self.precision, "autocast_bf16": self.bf16, "reason": self.precision_decision.reason,
                "prefix_cache": self.prefix_cache, "merge_lora": self.merge_lora, "batch_tokens": self.batch_tokens}

    def score_ids(self, seqs: Sequence[list[int]], progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores in input order. Out of memory on a batch: halve the token budget (for this batch and every
        later one, kept for later calls too), re-chunk what is left and go on; a single sequence that does
        not fit raises."""
        self._merge()
        self._apply_attention()
        out = np.empty(len(seqs), dtype=np.float64)
        was_training = self.model.training
        self.model.eval()
        lengths = [len(s) for s in seqs]
        bucketed = shape_buckets_for(self.device) if self.shape_buckets is None else self.shape_buckets
        # batches are made in an order fixed by content (length, then tokens), not by input position: the
        # same pairs in any order give the same batches, hence bit-identical scores
        by_content = sorted(range(len(seqs)), key=lambda i: (lengths[i], tuple(seqs[i])))
        chunks = [[by_content[j] for j in c] for c in length_chunks([lengths[i] for i in by_content], self.batch_tokens,
                                                                     bucketed=bucketed)]
        try:
            with torch.inference_mode(), autocast_ctx(self.model, self.bf16):
                while chunks:
                    idx = chunks.pop(0)
                    try:
                        ids, mask = pad_chunk([seqs[i] for i in idx], self.pad_id, pad_multiple_for(self.device),
                                              bucketed)
                        logits = chunk_logits(self.model, ids.to(self.device), mask.to(self.device))[: len(idx)]
                    except (RuntimeError, torch.OutOfMemoryError) as e:
                        if not is_oom(e):
                            raise
                        if len(idx) == 1:
                            raise ScoringMemoryError(
                                f"out of memory scoring a single sequence of {lengths[idx[0]]} tokens even after "
                                f"backing off to a batch budget of {self.batch_tokens} tokens; lower input.max_len "
                                "(or use a smaller dtype / device with more memory)") from e
                        self.oom_backoffs += 1
                        failed = len(idx) * max(lengths[i] for i in idx)
                        self.batch_tokens = max(1, min(self.batch_tokens, failed // 2))
                        log.warning("out of memory on a batch of %d sequences (%d padded tokens): batch budget "
                                    "lowered to %d tokens", len(idx), failed, self.batch_tokens)
                        if self.device.type == "cuda":
                            torch.cuda.empty_cache()
                        rest = sorted(idx + [i for c in chunks for i in c], key=lambda i: (lengths[i], tuple(seqs[i])))
                        chunks = [[rest[j] for j in c] for c in length_chunks([lengths[i] for i in rest],
                                                                               self.batch_tokens, bucketed=bucketed)]
                        continue
                    out[idx] = logits.float().reshape(-1).cpu().numpy()
                    if progress:
                        progress(len(idx))
        finally:
            self.model.train(was_training)
        return out

    def score_pairs(self, pairs: Sequence[tuple[str, str] | tuple[str, str, str]],
                    progress: Callable[[int], None] | None = None) -> np.ndarray:
        if self.prefix_cache:
            return self._score_prefixed(pairs, progress)
        seqs = [self.encoder.encode(*p) for p in pairs]
        return self.score_ids(seqs, progress)

    def _score_prefixed(self, pairs: Sequence[tuple[str, ...]], progress: Callable[[int], None] | None) -> np.ndarray:
        self._merge()
        if self._prefix_scorer is None:
            self._prefix_scorer = PrefixScorer(self.model, self.encoder, self.pad_id, self.batch_tokens,
                                               bf16=self.bf16)
        ps = self._prefix_scorer
        ps.batch_tokens = self.batch_tokens
        by_query: dict[str, list[int]] = {}
        for i, p in enumerate(pairs):
            by_query.setdefault(p[0], []).append(i)
        out = np.empty(len(pairs), dtype=np.float64)
        for query, idx in by_query.items():
            out[idx] = ps.score_query(query, [(pairs[i][1], pairs[i][2] if len(pairs[i]) > 2 else "") for i in idx])
            if progress:
                progress(len(idx))
        self.oom_backoffs = ps.oom_backoffs
        return out

    def rerank(self, queries: dict[str, str], passages: dict[str, Any], run: dict[str, list[Any]],
               depth: int = 100, progress: Callable[[int], None] | None = None) -> dict[str, dict[str, float]]:
        """Score the top ``depth`` candidates of each query; returns ``{qid: {docid: score}}``."""
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"depth must be a whole number of candidates >= 1, got {depth!r}")
        keys: list[tuple[str, str]] = []
        pairs = []
        for qid in sorted(run):
            for e in run[qid][:depth]:
                p = passages[e.docid]
                keys.append((qid, e.docid))
                pairs.append((queries[qid], p.text, p.title))
        scores = self.score_pairs(pairs, progress)
        result: dict[str, dict[str, float]] = {}
        for (qid, docid), s in zip(keys, scores):
            result.setdefault(qid, {})[docid] = float(s)
        return result
