"""``ICRReranker``: zero-shot in-context reranking from a base LLM's attention (Chen et al., ICLR 2025), one prompt
per window of candidates, with the per-layer and per-head scores kept for the "before LoRA" view.

Cost per query, for ``n`` candidates of ``t`` tokens in one window: one forward over the context (``n * (t + ~5)``
tokens plus ~15 of header) with the model's SDPA kernel, then two short forwards (the ``N/A`` and the real query
part, ~25 tokens plus the query) on its KV cache with eager attention. The pointwise reranker runs ``n`` forwards of
``t`` + query tokens: about the same linear work, but ICR's attention is quadratic in the whole prompt's length
(SmolLM2-135M at 8k tokens: attention roughly doubles the forward's FLOPs) and its memory holds the prompt's
KV cache (SmolLM2-135M: 30 layers x 3 KV heads x 64 x 2 values a token, 46 KB a token in fp32, ~0.4 GB at 8k)
and, for each query part, its attention rows (layers x heads x query tokens x prompt tokens).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from lorank.errors import ConfigError, DataError
from lorank.inference.icr.attention import document_scores, query_attention
from lorank.inference.icr.prompt import ICRPrompt, PromptBuilder
from lorank.inference.icr.windows import check_window, slide, stack_blocks
from lorank.inference.runs import rerank_to_run
from lorank.models.arch import backbone
from lorank.models.device import resolve_device
from lorank.models.loading import load_reranker
from lorank.precision import decide, weights_dtype_name


@dataclass
class ICRResult:
    """One query's ICR scores. Candidates are in first-stage order (``docids``); ``layer_head[i, l, h]`` is
    candidate i's calibrated attention score from layer l, head h in the window that made it final, and their sum
    its ICR score there (``window_scores``); ``block`` is that window's index (0: the first scored, the bottom of
    the ranking; :mod:`lorank.inference.icr.windows`); ``scores`` are the merged scores the run holds."""

    docids: list[str]
    layer_head: np.ndarray
    block: np.ndarray
    windows: int
    window_size: int
    stride: int
    seconds: float = 0.0
    scores: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.scores = self.merged(self.window_scores)

    @property
    def window_scores(self) -> np.ndarray:
        return self.layer_head.sum((1, 2))

    def merged(self, values: Sequence[float]) -> np.ndarray:
        """Any per-candidate values (a layer's scores, a head's) merged across windows as the ICR score is."""
        return stack_blocks(values, self.block)

    def layer(self, layer: int) -> np.ndarray:
        """The merged scores of one layer (its heads summed)."""
        return self.merged(self.layer_head[:, layer].sum(-1))

    def head(self, layer: int, head: int) -> np.ndarray:
        return self.merged(self.layer_head[:, layer, head])

    def run(self, values: Sequence[float] | None = None) -> dict[str, float]:
        """``{docid: score}`` for the merged ICR scores (or other merged values)."""
        v = self.scores if values is None else values
        return {d: float(s) for d, s in zip(self.docids, v)}


class ICRReranker:
    """Rerank candidates by in-context reranking over a causal LM (any model lorank loads; its score head, if any,
    is not used: ICR reads the bare transformer's attention).

    ``window``: candidates per prompt (None: all of a query's candidates when they fit ``max_tokens``, else the
    most that fit whatever their order); ``stride``: how far windows move (None: half the window, the authors'
    default; with an automatic window it is cut to window - 1 if larger); ``max_tokens``: the longest prompt
    (default: the model's ``max_position_embeddings``); ``best_last``: place the first stage's best candidate last,
    nearest the query (the authors' ``--reverse_doc_order``, used for their BEIR results); ``calibrate``: subtract
    the ``N/A`` query's attention with the token mask (False: the uncalibrated ``query_last`` score)."""

    def __init__(self, model: Any, tokenizer: Any, prompt: ICRPrompt | None = None, window: int | None = None,
                 stride: int | None = None, max_tokens: int | None = None, best_last: bool = True,
                 calibrate: bool = True, bf16: bool | None = None, meta: dict[str, Any] | None = None):
        check_window(window, stride)
        if max_tokens is not None and (isinstance(max_tokens, bool) or max_tokens < 16):
            raise ConfigError(f"max_tokens must be a whole number >= 16, got {max_tokens!r}")
        self.model = model.eval()
        self.body = backbone(model)
        self.builder = PromptBuilder(tokenizer, prompt)
        self.window, self.stride, self.best_last, self.calibrate = window, stride, best_last, calibrate
        self.max_tokens = int(max_tokens or getattr(self.body.config, "max_position_embeddings", 0) or 4096)
        self.precision = decide(bf16, next(model.parameters()).device)
        self.meta = meta or {}

    @classmethod
    def from_pretrained(cls, model: str | None = None, device: Any = None, dtype: str | None = None,
                        trust_remote_code: bool = False, **kw: Any) -> "ICRReranker":
        """The base model (default: the embedded SmolLM2-135M) loaded by :func:`lorank.models.load_reranker`
        onto ``device`` (default: :func:`lorank.models.device.resolve_device`)."""
        dev = resolve_device(device)
        # fp32 weights on a CPU (bf16 from autocast): the attention is the score, kept in the precision ICR's
        # committed results were computed in
        lm = load_reranker(model, dtype=weights_dtype_name(dtype, dev, cpu_bf16_weights=False,
                                                           requested=kw.get("bf16")),
                           trust_remote_code=trust_remote_code)
        return cls(lm.model.to(dev), lm.tokenizer, meta={"model": lm.source.describe()}, **kw)

    @property
    def settings(self) -> dict[str, Any]:
        """What decides the scores, for records."""
        p = self.builder.prompt
        return {"task": p.task, "chat": p.chat, "doc_max_words": p.doc_max_words,
                "calibration_query": p.calibration_query if self.calibrate else None, "window": self.window,
                "stride": self.stride, "max_tokens": self.max_tokens, "best_last": self.best_last,
                "precision": self.precision.name}

    def _window_size(self, lengths: list[int], extra: int) -> int:
        """The window: as given, else all candidates when they fit, else the most that fit in any order."""
        n = len(lengths)
        if self.window is not None:
            return min(self.window, n)
        longest = sorted(lengths, reverse=True)
        fit = 0
        while fit < n and self.builder.context_length(longest[: fit + 1]) + extra <= self.max_tokens:
            fit += 1
        if fit < min(2, n):
            raise ConfigError(f"ICR cannot fit {min(2, n)} of this query's candidates in max_tokens={self.max_tokens} "
                              f"(the longest take {self.builder.context_length(longest[:2]) + extra} tokens with the "
                              "prompt): cut them shorter (doc_max_words) or raise max_tokens")
        return fit

    def score(self, query: str, passages: Sequence[str | tuple[str, str]],
              docids: Sequence[str] | None = None) -> ICRResult:
        """One query's candidates, in first-stage order (a passage is text, or (title, text))."""
        if not str(query).strip():
            raise DataError(None, None, "ICR got an empty query")
        t0 = time.perf_counter()
        ids = list(docids) if docids is not None else [str(i) for i in range(len(passages))]
        if len(ids) != len(passages):
            raise ValueError(f"{len(ids)} docids for {len(passages)} passages")
        if not passages:
            cfg = self.body.config
            return ICRResult([], np.zeros((0, cfg.num_hidden_layers, cfg.num_attention_heads)), np.zeros(0, int),
                             0, 0, 0)
        docs = [self.builder.document(p) if isinstance(p, str) else self.builder.document(p[1], p[0]) for p in passages]
        parts = [self.builder.query_part(query)]
        if self.calibrate:
            parts.insert(0, self.builder.query_part(self.builder.prompt.calibration_query))
        extra = max(len(p) for p in parts)
        size = self._window_size([len(d) for d in docs], extra)
        stride = min(self.stride or max(size // 2, 1), max(size - 1, 1))

        def score_window(items: list[int]) -> np.ndarray:
            shown = items[::-1] if self.best_last else items
            ctx = self.builder.context([docs[i] for i in shown])
            if len(ctx.ids) + extra > self.max_tokens:
                raise ConfigError(f"an ICR window of {len(items)} candidates takes {len(ctx.ids) + extra} tokens, over "
                                  f"max_tokens={self.max_tokens}: give a smaller window, cut the documents shorter "
                                  "(doc_max_words) or raise max_tokens")
            att = query_attention(self.body, ctx.ids, parts, self.precision.bf16)
            s = document_scores(att[-1], att[0] if self.calibrate else None, ctx.spans)
            return s[::-1] if self.best_last else s

        done = slide(len(docs), size, stride, score_window)
        return ICRResult(ids, done.scores, done.block, done.windows, size, stride, time.perf_counter() - t0)

    def score_run(self, queries: dict[str, str], passages: dict[str, Any], run: dict[str, list[Any]],
                  depth: int = 100, progress: Callable[[int], None] | None = None) -> dict[str, ICRResult]:
        """Every query's top ``depth`` candidates (``run``: first-stage entries, best first)."""
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"depth must be a whole number of candidates >= 1, got {depth!r}")
        out = {}
        for qid in sorted(run):
            cands = run[qid][:depth]
            if not str(queries.get(qid, "")).strip():
                raise DataError(None, None, f"query {qid!r} has candidates but no text: ICR needs the query")
            try:
                out[qid] = self.score(queries[qid], [(passages[e.docid].title, passages[e.docid].text) for e in cands],
                                      [e.docid for e in cands])
            except ConfigError as e:
                raise ConfigError(f"query {qid!r}: {e}") from None
            if progress:
                progress(len(cands))
        return out

    def rerank(self, queries: dict[str, str], passages: dict[str, Any], run: dict[str, list[Any]],
               depth: int = 100, progress: Callable[[int], None] | None = None) -> dict[str, dict[str, float]]:
        """The reranked run, as :meth:`lorank.Reranker.rerank`: the top ``depth`` by ICR, the rest below in
        first-stage order."""
        scores = {q: r.run() for q, r in self.score_run(queries, passages, run, depth, progress).items()}
        return rerank_to_run(scores, run, depth)
