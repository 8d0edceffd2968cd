"""ICR's sliding windows over a ranked list whose candidates do not all fit one prompt, and the merge of the
windows' scores into one run.

The scheme is the authors' (``InContextReranker.rerank``, the RankGPT-style pass from the back of the list):
windows of ``size`` candidates, ``stride`` apart (default ``size // 2``), walk from the bottom of the first-stage
ranking to its top. Each window is scored in one prompt and sorted by its ICR score; its lowest ``stride``
candidates are final there (no later window sees them), the rest move up into the next window; the last window
(the top of the list) makes all of its candidates final. So the final ranking is a stack of blocks: the last
window's block on top, each earlier window's block below the later ones, each block in its own window's order.
With every candidate in one window (the authors' default, ``--rerank_sliding_window_size -1``) there is one block.

Scores from different windows are not comparable (another prompt, other neighbours), so the merged score of a
candidate is its score in the window that made it final, shifted per block so that every block lies above the
blocks below it (:func:`stack_blocks`, a gap of 1 between blocks): one window leaves the ICR scores unchanged; with
several, the run keeps the windows' ranking and each block's score gaps. The same merge ranks any per-layer or
per-head score of the candidates (the block of each candidate stays the one the ICR score gave it). The authors
write each window's raw scores, which their evaluation then re-sorts across windows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from lorank.errors import ConfigError


def check_window(size: int | None, stride: int | None) -> None:
    """``size`` (None: as many as fit) of at least 2 candidates; ``stride`` at least 1 and below ``size``."""
    for name, v, low in (("window", size, 2), ("stride", stride, 1)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low):
            raise ConfigError(f"the ICR {name} must be a whole number >= {low} (or None), got {v!r}")
    if size is not None and stride is not None and stride >= size:
        raise ConfigError(f"the ICR stride ({stride}) must be smaller than the window ({size}): the candidates a "
                          "window passes up to the next are its top window - stride")


def window_ranges(n: int, size: int, stride: int) -> list[tuple[int, int]]:
    """The windows' ``[lo, hi)`` positions in the current ranking (0 = top), in the order they are scored: from
    the bottom, ``hi = n - k * stride``, ``lo = max(0, hi - size)``, until a window reaches the top. One window
    when all ``n`` fit in it."""
    if n <= size:
        return [(0, n)] if n else []
    check_window(size, stride)
    out: list[tuple[int, int]] = []
    hi = n
    while True:
        lo = max(0, hi - size)
        out.append((lo, hi))
        if lo == 0:
            break
        hi -= stride
    return out


@dataclass
class Slide:
    """The result of one pass: ``order`` (candidate indices, best first), each candidate's ``block`` (the index of
    the window that made it final; 0 is the first window, the bottom of the ranking) and its ``scores`` in that
    window (any trailing shape, e.g. ``(layers, heads)``; the ranking uses their sum)."""

    order: list[int]
    block: np.ndarray
    scores: np.ndarray
    windows: int


def slide(n: int, size: int, stride: int, score: Callable[[list[int]], np.ndarray]) -> Slide:
    """Rank candidates ``0..n-1`` (given best first) by windows. ``score(items)`` gets a window's candidates in
    the current order, best first, and returns one score array per item (``(len(items), ...)``); a window is
    sorted by the items' summed scores, ties kept in their current order."""
    order = list(range(n))
    block = np.full(n, -1)
    scores: np.ndarray | None = None
    ranges = window_ranges(n, size, stride)
    for k, (lo, hi) in enumerate(ranges):
        items = order[lo:hi]
        s = np.asarray(score(items), dtype=float)
        if s.shape[0] != len(items):
            raise ValueError(f"the window scorer returned {s.shape[0]} scores for {len(items)} candidates")
        if scores is None:
            scores = np.zeros((n,) + s.shape[1:])
        total = s.reshape(len(items), -1).sum(1)
        ranked = sorted(range(len(items)), key=lambda i: (-total[i], i))
        order[lo:hi] = [items[i] for i in ranked]
        for i, item in enumerate(items):
            scores[item] = s[i]
        for p in range(lo if lo == 0 else hi - stride, hi):
            block[order[p]] = k
    return Slide(order, block, scores if scores is not None else np.zeros((0,)), len(ranges))


def stack_blocks(values: Sequence[float], block: Sequence[int], gap: float = 1.0) -> np.ndarray:
    """Scores that rank the blocks above one another (a higher block on top) and each block by ``values``: each
    block shifted so its lowest score is ``gap`` above the highest of the block below. One block: ``values``."""
    values, block = np.asarray(values, dtype=float), np.asarray(block)
    out = values.copy()
    top: float | None = None
    for b in np.unique(block):
        sel = block == b
        shift = 0.0 if top is None else top - values[sel].min() + gap
        out[sel] = values[sel] + shift
        top = float(out[sel].max())
    return out
