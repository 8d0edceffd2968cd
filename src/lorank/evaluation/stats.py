"""Statistics for paired per-query comparisons (the verdicts of :mod:`lorank.report.findings`, an adapter's figures
against its first stage): paired t-tests over queries (two-sided or one-sided), TOST equivalence, non-inferiority of a recovered fraction, hierarchical bootstrap CIs over queries and
seeds, the effect a test could have detected at 80% power, and the study-wide multiplicity correction.

A *side* of a comparison is one condition's per-query scores, one dict per replicate (a training seed, or a single
frozen adapter): ``{"s42": {qid: nDCG@10}, "s43": {...}}``. Tests run over the queries every replicate of both sides
has, on the per-query mean over replicates (so the t-test's unit is the query and its variance the query variance of
the seed-averaged score). Bootstrap CIs resample queries and, within each side, its replicates (a hierarchical
bootstrap: the CI covers query *and* seed variation; with one replicate a side it is the query bootstrap). Pure: no
file is read here."""
from __future__ import annotations

import hashlib
import math
import warnings
from typing import Sequence

import numpy as np
from scipy import optimize, stats

from lorank.evaluation.significance import holm_adjust, paired_ttest

Scores = dict[str, float]
Side = dict[str, Scores]  # replicate label -> qid -> value


def as_side(x: Side | Scores, label: str = "run") -> Side:
    """A side from a single run's scores (one replicate) or a side already."""
    if not x:
        return {}
    first = next(iter(x.values()))
    return dict(x) if isinstance(first, dict) else {label: dict(x)}  # type: ignore[arg-type]


def common_queries(*sides: Side) -> list[str]:
    qs: set[str] | None = None
    for side in sides:
        for sc in side.values():
            qs = set(sc) if qs is None else qs & set(sc)
    return sorted(qs or ())


def matrix(side: Side, qids: list[str]) -> np.ndarray:
    """replicates x queries."""
    return np.array([[sc[q] for q in qids] for sc in side.values()], dtype=float).reshape(len(side), len(qids))


def ttest(d: np.ndarray, alternative: str = "two-sided", shift: float = 0.0) -> tuple[float, float]:
    """(t, p) of a one-sample t-test of the paired differences `d` against `shift` (mean(d) - shift; alternative
    ``greater``: H1 mean(d) > shift). Degenerate samples are answered directly, as
    :func:`lorank.evaluation.significance.paired_ttest` does: all differences equal give p 1 or 0 (t
    infinite)."""
    d = np.asarray(d, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    x = d - shift
    if float(np.ptp(x)) <= 1e-12 * max(1.0, float(np.max(np.abs(d)))):
        m = float(np.mean(x))
        if abs(m) <= 1e-12:
            return 0.0, 1.0 if alternative == "two-sided" else 0.5
        t = math.copysign(math.inf, m)
        p = 0.0 if alternative == "two-sided" or (alternative == "greater") == (m > 0) else 1.0
        return t, p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        r = stats.ttest_1samp(x, 0.0, alternative=alternative)
    return float(r.statistic), float(r.pvalue)


def tost(d: np.ndarray, margin: float) -> tuple[float, float, float]:
    """Two one-sided tests of equivalence within +-`margin`: (p = the larger of the two one-sided p-values, and the
    90% t-interval of mean(d), whose inclusion in (-margin, margin) is the same decision at alpha 0.05)."""
    _, p_low = ttest(d, "greater", -margin)
    _, p_high = ttest(-np.asarray(d, dtype=float), "greater", -margin)
    lo, hi = t_interval(d, 0.90)
    return max(p_low, p_high), lo, hi


def t_interval(d: np.ndarray, level: float) -> tuple[float, float]:
    d = np.asarray(d, dtype=float)
    if d.size < 2:
        return math.nan, math.nan
    m, se = float(np.mean(d)), float(np.std(d, ddof=1)) / math.sqrt(d.size)
    h = float(stats.t.ppf(0.5 + level / 2, d.size - 1)) * se
    return m - h, m + h


def detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.80, one_sided: bool = False) -> float:
    """The smallest true mean difference a paired t-test over `n` queries with difference SD `sd` detects with
    probability `power` at level `alpha` (noncentral t; two-sided unless `one_sided`)."""
    if n < 2 or not sd > 0:
        return math.nan
    df = n - 1
    crit = float(stats.t.ppf(1 - (alpha if one_sided else alpha / 2), df))

    def shortfall(delta: float) -> float:
        nc = delta / (sd / math.sqrt(n))
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pw = float(stats.nct.sf(crit, df, nc)) + (0.0 if one_sided else float(stats.nct.cdf(-crit, df, nc)))
        if not math.isfinite(pw):  # scipy's noncentral t fails far in the tail: the normal limit is exact there
            pw = float(stats.norm.sf(crit - nc)) + (0.0 if one_sided else float(stats.norm.cdf(-crit - nc)))
        return pw - power

    hi = sd
    while shortfall(hi) < 0:
        hi *= 2
    return float(optimize.brentq(shortfall, 0.0, hi, xtol=1e-7))


def _rng(key: str, seed: int) -> np.random.Generator:
    """A generator fixed by the test's name: the same CI on every machine and every run."""
    return np.random.default_rng([seed, int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)])


def boot_means(sides: Sequence[Side], qids: list[str], n_boot: int, key: str, seed: int = 0,
               joint: bool = False) -> np.ndarray:
    """n_boot x len(sides) bootstrap means: queries resampled (the same draw for every side: paired), and each side's
    replicates resampled within it (``joint``: the same replicate draw for every side, for sides made of the same
    runs, e.g. two checkpoints of the same seeds)."""
    rng = _rng(key, seed)
    mats = [matrix(s, qids) for s in sides]
    n = len(qids)
    qi = rng.integers(0, n, size=(n_boot, n))
    out = np.empty((n_boot, len(sides)))
    shared = None
    if joint:
        k = mats[0].shape[0]
        shared = rng.integers(0, k, size=(n_boot, k))
    for j, m in enumerate(mats):
        k = m.shape[0]
        if k == 1:
            per_q = np.broadcast_to(m[0], (n_boot, n))
        else:
            ri = shared if shared is not None and shared.shape[1] == k else rng.integers(0, k, size=(n_boot, k))
            per_q = m[ri].mean(axis=1)  # n_boot x n: each draw's replicate mean per query
        out[:, j] = np.take_along_axis(per_q, qi, axis=1).mean(axis=1)
    return out


def percentile_ci(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x)]
    if not x.size:
        return math.nan, math.nan
    a = (1 - level) / 2
    return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))


def adjust(pvalues: Sequence[float], method: str = "holm") -> list[float]:
    """Family-wise (Holm) or false-discovery-rate (Benjamini-Hochberg) adjusted p-values, in the order given; NaN
    stays NaN and out of the family."""
    if method == "holm":
        return holm_adjust(pvalues)
    if method != "bh":
        raise ValueError(f"unknown correction {method!r} (holm, bh)")
    p = [float(x) for x in pvalues]
    idx = [i for i, x in enumerate(p) if not math.isnan(x)]
    out = [math.nan] * len(p)
    if idx:
        adj = stats.false_discovery_control([p[i] for i in idx], method="bh")
        for i, a in zip(idx, adj):
            out[i] = float(a)
    return out


def fmt_p(p: float | None) -> str:
    """A p-value as a reader wants it: 3 significant digits, scientific notation below 1e-3 ("-" when undefined)."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p < 1e-3 else f"{p:.3g}"


__all__ = ["Scores", "fmt_p", "Side", "adjust", "as_side", "boot_means", "common_queries", "detectable_effect", "matrix",
           "paired_ttest", "percentile_ci", "t_interval", "tost", "ttest"]
