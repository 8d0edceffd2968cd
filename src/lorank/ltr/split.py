"""Splits by query: every pair of a query sits on one side only (a query never leaks across splits)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from lorank.errors import DataError


def split_queries(qids: Sequence[str], valid_frac: float = 0.2, seed: int = 0) -> tuple[list[str], list[str]]:
    """The distinct queries shuffled with ``seed`` and cut into (train, valid); both sides non-empty."""
    uniq = sorted(set(map(str, qids)))
    if len(uniq) < 2:
        raise DataError(None, None, f"a split by query needs at least 2 queries, got {len(uniq)}")
    if not 0.0 < valid_frac < 1.0:
        raise DataError(None, None, f"valid_frac must be in (0, 1), got {valid_frac}")
    order = np.random.default_rng(seed).permutation(len(uniq))
    n_valid = min(len(uniq) - 1, max(1, int(round(valid_frac * len(uniq)))))
    valid = sorted(uniq[i] for i in order[:n_valid])
    train = sorted(uniq[i] for i in order[n_valid:])
    return train, valid


def split_rows(qids: Sequence[str], valid_frac: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, valid) of a table whose row i belongs to query ``qids[i]``, split by query."""
    q = np.asarray([str(x) for x in qids])
    _, valid = split_queries(q, valid_frac, seed)
    is_valid = np.isin(q, np.asarray(valid))
    return np.nonzero(~is_valid)[0], np.nonzero(is_valid)[0]


def group_sizes(qids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(order, sizes)``: a stable permutation that makes each query's rows contiguous (sorted by qid), and
    the group sizes in that order (what LightGBM's ranking objectives need)."""
    q = np.asarray([str(x) for x in qids])
    order = np.argsort(q, kind="stable")
    _, sizes = np.unique(q[order], return_counts=True)
    return order, sizes
