"""Dense first-stage retrieval over precomputed unit-norm embeddings (exact inner product, no index).

Used by ``lorank mine --miner teacher``: the bi-encoder teacher ranks the whole mining pool for every
training query, so the negatives are the passages *it* finds close, not only those that share words.
Ranks follow trec_eval's rule (score descending, ties by docid descending), as in ``bm25_retrieve``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lorank.data.records import RunEntry
from lorank.errors import ConfigError

__all__ = ["dense_retrieve"]


def dense_retrieve(doc_ids: Sequence[str], doc_emb: np.ndarray, query_ids: Sequence[str], query_emb: np.ndarray,
                   k: int = 100, tag: str = "dense", batch: int = 1024) -> dict[str, list[RunEntry]]:
    """Top-``k`` documents by inner product for every query: ``{qid: [RunEntry, ...]}`` (ranks 1..k)."""
    problems = []
    if k <= 0:
        problems.append(f"k must be positive, got {k}")
    if doc_emb.ndim != 2 or doc_emb.shape[0] != len(doc_ids):
        problems.append(f"doc_emb must be (n_docs={len(doc_ids)}, dim), got {doc_emb.shape}")
    if query_emb.ndim != 2 or query_emb.shape[0] != len(query_ids):
        problems.append(f"query_emb must be (n_queries={len(query_ids)}, dim), got {query_emb.shape}")
    elif doc_emb.ndim == 2 and query_emb.shape[1] != doc_emb.shape[1]:
        problems.append(f"query and document embeddings differ in width: {query_emb.shape[1]} vs {doc_emb.shape[1]}")
    if not len(doc_ids):
        problems.append("the corpus is empty")
    if problems:
        raise ConfigError("dense retrieval: " + "; ".join(problems))
    k = min(k, len(doc_ids))
    ids = np.asarray(doc_ids, dtype=object)
    out: dict[str, list[RunEntry]] = {}
    for start in range(0, len(query_ids), batch):
        scores = query_emb[start:start + batch] @ doc_emb.T
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # the k-th best score of each query
        for row, qid in enumerate(query_ids[start:start + batch]):
            top = np.flatnonzero(scores[row] >= kth[row])  # everything tied with the k-th too, so ties rank by rule
            cand = [(float(scores[row, j]), str(ids[j])) for j in top]
            cand.sort(key=lambda c: c[1], reverse=True)  # ties: docid descending (the stable sort below keeps it)
            cand.sort(key=lambda c: c[0], reverse=True)
            out[qid] = [RunEntry(qid, d, r, s, tag) for r, (s, d) in enumerate(cand[:k], 1)]
    return out
