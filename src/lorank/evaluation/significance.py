"""Significance testing: paired t-tests over per-query scores, Holm-Bonferroni correction."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["holm", "holm_adjust", "paired_ttest"]


def holm_adjust(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m), the adjusted value of the
    i-th smallest is max_{j <= i} min(1, (m - j + 1) * p_(j)). Rejecting where the adjusted
    p-value is <= alpha is exactly Holm's step-down procedure at family-wise level alpha.
    NaN p-values (an undefined test) are left out of the family and stay NaN.
    """
    p = [float(x) for x in pvalues]
    for x in p:
        if not math.isnan(x) and not 0.0 <= x <= 1.0:
            raise ValueError(f"p-value {x} is outside [0, 1]")
    idx = [i for i, x in enumerate(p) if not math.isnan(x)]
    idx.sort(key=lambda i: p[i])  # stable: equal p-values keep their input order
    m = len(idx)
    adjusted = [math.nan] * len(p)
    running = 0.0
    for j, i in enumerate(idx):
        running = max(running, min(1.0, (m - j) * p[i]))
        adjusted[i] = running
    return adjusted


def holm(pvalues: Sequence[float], alpha: float = 0.05) -> tuple[list[float], list[bool]]:
    """Holm-Bonferroni: (adjusted p-values, reject flags at family-wise level `alpha`)."""
    adjusted = holm_adjust(pvalues)
    return adjusted, [(not math.isnan(a)) and a <= alpha for a in adjusted]


def paired_ttest(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test p-value for `a` vs `b` (aligned per query).

    Degenerate cases are answered directly instead of scipy's NaN: identical scores give
    p = 1.0; a constant non-zero difference gives p = 0.0 (t is infinite); fewer than two
    pairs give NaN (the test is undefined).
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired test needs aligned samples, got {x.shape} and {y.shape}")
    if x.size < 2:
        return math.nan
    d = x - y
    scale = max(1.0, float(np.max(np.abs(np.concatenate([x, y])))))
    if float(np.ptp(d)) <= 1e-12 * scale:  # all differences equal (up to float noise)
        return 1.0 if abs(float(np.mean(d))) <= 1e-12 * scale else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_rel(x, y).pvalue)
