"""ICR's sliding windows (lorank.inference.icr.windows): the ranges walk from the bottom of the list as the authors'
loop does, every candidate is made final by exactly one window, and the merged scores rank as the windows did."""
from __future__ import annotations

import numpy as np
import pytest

from lorank.errors import ConfigError
from lorank.inference.icr.windows import check_window, slide, stack_blocks, window_ranges


def authors_order(n: int, size: int, stride: int, score) -> list[int]:
    """The authors' ``InContextReranker.rerank`` loop, restated: a list reversed (worst first), windows
    ``[i, j)`` of it from the front, each sorted ascending by its scores and written back, ``i, j`` moved by
    ``stride`` until ``j`` reaches the end; the result reversed (best first)."""
    rev = list(range(n))[::-1]
    i, j = 0, min(size, n)
    while True:
        ids = rev[i:j][::-1]  # best first, as the window is shown (before any reversal of the prompt)
        s = score(ids)
        asc = sorted(range(len(ids)), key=lambda k: (s[k], -k))
        rev[i:j] = [ids[k] for k in asc]
        if j >= n:
            break
        i, j = i + stride, min(j + stride, n)
    return rev[::-1]


def test_the_ranges_walk_from_the_bottom_to_the_top():
    assert window_ranges(10, 4, 2) == [(6, 10), (4, 8), (2, 6), (0, 4)]
    assert window_ranges(25, 20, 10) == [(5, 25), (0, 15)]
    assert window_ranges(5, 20, 10) == [(0, 5)]  # all fit: one window
    assert window_ranges(0, 4, 2) == []


@pytest.mark.parametrize("n,size,stride", [(10, 4, 2), (100, 20, 10), (23, 7, 3), (9, 3, 1), (6, 6, 3), (7, 5, 4)])
def test_every_candidate_is_final_in_one_window_and_the_order_is_the_authors(n, size, stride):
    rng = np.random.default_rng(n * 100 + size)
    base = rng.normal(size=n)

    def score(items):  # a window-dependent score (the neighbours change it), as a prompt's would
        return np.array([base[i] + 0.3 * np.sin(i + len(items) + items[0]) for i in items])

    done = slide(n, size, stride, lambda items: score(items)[:, None])
    assert sorted(done.order) == list(range(n)) and (done.block >= 0).all()
    assert done.windows == len(window_ranges(n, size, stride))
    assert done.order == authors_order(n, size, stride, score)
    merged = stack_blocks(done.scores.sum(1), done.block)
    assert list(np.argsort(-merged, kind="stable")) == done.order  # the run ranks as the windows did
    sizes = np.bincount(done.block)
    assert all(c == stride for c in sizes[:-1]) and sizes[-1] == n - stride * (done.windows - 1)  # the top: the rest


def test_with_consistent_scores_the_best_rise_to_the_top():
    """With one global score, the best size - stride candidates end on top, in order, wherever they started."""
    n, size, stride = 30, 8, 4
    value = np.random.default_rng(1).permutation(n).astype(float)
    done = slide(n, size, stride, lambda items: value[items][:, None])
    best = list(np.argsort(-value))[: size - stride]
    assert done.order[: size - stride] == best


def test_stacking_keeps_one_window_s_scores_and_puts_later_blocks_on_top():
    v = np.array([0.5, -1.0, 3.0, 2.0])
    assert np.array_equal(stack_blocks(v, [0, 0, 0, 0]), v)
    out = stack_blocks(v, [1, 1, 0, 0])
    assert min(out[:2]) == max(out[2:]) + 1.0 and out[0] - out[1] == 1.5  # the block's gaps kept
    assert out[2] - out[3] == 1.0


def test_bad_windows_are_refused():
    with pytest.raises(ConfigError, match="window must be a whole number >= 2"):
        check_window(1, None)
    with pytest.raises(ConfigError, match="stride must be a whole number >= 1"):
        check_window(4, 0)
    with pytest.raises(ConfigError, match="must be smaller than the window"):
        window_ranges(10, 4, 4)
    with pytest.raises(ValueError, match="returned 1 scores for 4 candidates"):
        slide(10, 4, 2, lambda items: np.zeros((1, 1)))
