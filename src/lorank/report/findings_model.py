"""The vocabulary of the paper's five findings (:mod:`lorank.report.findings`): the thresholds and verdicts,
each finding's claim and rule, the per-query numbers they are decided on (:class:`PerQuery`) and one paired
t-test between two sides (:class:`Test`), grouped into Holm families. Pure: nothing here reads files."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from lorank.ablate.windows import PAPER_WINDOW, Window, parse_window, paper_window_text, window_config
from lorank.errors import ConfigError
from lorank.evaluation.stats import (Scores, Side, adjust, as_side, boot_means, common_queries, detectable_effect,
                                          matrix, percentile_ci, tost, ttest)

ALPHA = 0.05
RHO_MIN = 0.5  # finding 1: Spearman rho(step, nDCG@10) for a "steady" rise
SPREAD_MAX = 0.02  # finding 2: max - min mean nDCG@10 across ranks for "comparable"
RECOVER_MIN = 0.90  # finding 5: fraction of the full adapter's gain recovered
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
MEASURE = "ndcg_cut_10"


def finding_4_rule(window: Window = PAPER_WINDOW) -> str:
    """Finding 4's rule, naming the window it is decided on (``verdicts.target_window``)."""
    target = window_config(window) + ("" if window == PAPER_WINDOW else
                                      f" (declared for {paper_window_text(PAPER_WINDOW)})")
    return (f"{target} top among equal-width windows and significantly above the non-overlapping ones; up and gate "
            "significantly more important than down (kept alone or removed)")


CLAIMS = {
    1: "Quality rises steadily across checkpoints (reported every 50 steps).",
    2: "LoRA ranks 1, 2, 8 and 32 reach comparable quality.",
    3: "MHA-only and MLP-only updates both improve ranking, MHA more than MLP, and both together are best.",
    4: "Layers 5-15 contribute most; the up and gate projections matter more than down.",
    5: "MLP-only updates recover up to 98% of the full adapter's performance.",
}
RULES = {
    1: "reference condition: last checkpoint significantly above the first (seeds paired) and Spearman "
       f"rho(step, nDCG@10) >= {RHO_MIN} over the dense curve (else the checkpoints)",
    2: "every pair of ranks equivalent within the declared margin (TOST); does not hold when a pair differs "
       "significantly; the arm with alpha/r held fixed decides when it exists, else fixed alpha",
    3: "mha > base, mlp > base, mha > mlp, all > mha, all > mlp, each significant; base = BM25 for trained runs, "
       "LoRA off for inference-time ablations",
    4: finding_4_rule(),  # the paper's window; a study that declares another: finding_4_rule(its window)
    5: "recovered fraction (MLP-only - base) / (full - base) shown >= the declared line by a one-sided "
       "non-inferiority test, MLP-only significantly above base; does not hold when significantly below the line "
       "(trained vs BM25, or inference-time vs LoRA off)",
}



@dataclass
class PerQuery:
    """Per-query nDCG@10 on the study's main evaluation set (or on several sets pooled: :func:`pooled`)."""

    eval_set: str
    bm25: Scores
    checkpoints: dict[str, dict[int, Scores]] = field(default_factory=dict)  # run_id -> step -> qid -> value
    ablations: dict[str, Scores] = field(default_factory=dict)  # the dissected adapter's ablation configs
    #: whose ablations these are: a run id, or adapter:<name> for an external adapter ("" = the reference run)
    ablations_of: str = ""
    #: the eval-set labels pooled here (empty: just `eval_set`)
    sets: tuple[str, ...] = ()
    #: the cheap dense curve (top-k evaluations between checkpoints): run_id -> step -> qid -> value
    curve: dict[str, dict[int, Scores]] = field(default_factory=dict)
    role: str = "dev"  # the sets' role in the protocol: dev (chose the recipe) or test (report only)
    #: the role of the sets the dense curve was scored on, when it is not this view's own (a test view reads the dev
    #: sets' curve for finding 1's trend: the curve is scored during training, where a test set never is)
    curve_role: str = ""
    #: the first-stage depth the checkpoints were reranked at, and the dense curve's (None: not known), for labels
    depth: int | None = None
    curve_depth: int | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.sets or (self.eval_set,)


def pooled(parts: list[PerQuery]) -> PerQuery:
    """Several sets' per-query numbers as one (their query ids must not overlap: DL19 and DL20 do not); a
    checkpoint or ablation evaluated on only some of the sets keeps the queries it has."""
    if len(parts) == 1:
        return parts[0]
    seen: set[str] = set()
    for p in parts:
        clash = seen & set(p.bm25)
        if clash:
            raise ConfigError(f"cannot pool {p.eval_set} with the other sets: {len(clash)} query ids overlap "
                             f"(e.g. {sorted(clash)[0]})")
        seen |= set(p.bm25)
    labels = tuple(x for p in parts for x in p.labels)
    roles = {p.role for p in parts}
    out = PerQuery("+".join(labels), {}, ablations_of=parts[0].ablations_of, sets=labels,
                   role=roles.pop() if len(roles) == 1 else "dev+test", depth=_same(p.depth for p in parts),
                   curve_depth=_same(p.curve_depth for p in parts))
    for p in parts:
        out.bm25.update(p.bm25)
        for attr in ("checkpoints", "curve"):
            for rid, steps in getattr(p, attr).items():
                for step, sc in steps.items():
                    getattr(out, attr).setdefault(rid, {}).setdefault(step, {}).update(sc)
        for name, sc in p.ablations.items():
            out.ablations.setdefault(name, {}).update(sc)
    return out


def _same(values: Any) -> Any:
    """The one value all parts that know it share, else None (a label then names no depth rather than a wrong
    one); a part that does not know it (None: a set without qrels) does not count."""
    vals = {v for v in values if v is not None}
    return vals.pop() if len(vals) == 1 else None


@dataclass(frozen=True)
class VerdictRules:
    """The rules a study declares before any run (``verdicts:`` in the study spec): the level, the equivalence
    margin of a "comparable" claim, the line of a "recovers" claim, the study-wide correction and which findings
    are confirmatory, on which sets a verdict is decided, and the bootstrap. Defaults: the protocol's
    (docs/protocol.md)."""

    alpha: float = ALPHA
    #: a "comparable" claim holds only when TOST shows every pair within +-margin nDCG@10
    equivalence_margin: float = SPREAD_MAX
    #: finding 5: the recovered fraction must be shown >= this (one-sided non-inferiority)
    recover_line: float = RECOVER_MIN
    correction: str = "holm"  # holm (family-wise) or bh (false discovery rate)
    #: the findings whose deciding tests form the study-wide family; the others are exploratory
    confirmatory: tuple[int, ...] = (1, 2, 3, 4, 5)
    #: test: verdicts on the test sets, dev reported beside them; pooled: dev + test queries together
    decide_on: str = "test"
    bootstrap: int = 2000
    seed: int = 0
    #: finding 4's layer window, (first, last) (from "3-9" or [3, 9]): the paper's 5-15 unless declared
    target_window: Window = PAPER_WINDOW

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_window", parse_window(self.target_window))

    @classmethod
    def from_dict(cls, d: Any) -> "VerdictRules":
        if d is None:
            return cls()
        if hasattr(d, "model_dump"):
            d = d.model_dump()
        d = dict(d)
        if "confirmatory" in d:
            d["confirmatory"] = tuple(int(x) for x in d["confirmatory"])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        """The rules as findings.json records them; the target window only when a study declared another than the
        paper's (the findings of a study that declares none are as before it could)."""
        d = {"alpha": self.alpha, "equivalence_margin": self.equivalence_margin, "recover_line": self.recover_line,
             "correction": self.correction, "confirmatory": list(self.confirmatory), "decide_on": self.decide_on,
             "bootstrap": self.bootstrap, "seed": self.seed}
        if self.target_window != PAPER_WINDOW:
            d["target_window"] = list(self.target_window)
        return d


DEFAULT_RULES = VerdictRules()

#: kinds of test: a two-sided difference, the gate (a difference that must be positive), TOST equivalence within a
#: margin, one-sided non-inferiority of a recovered fraction against a line
KINDS = ("difference", "equivalence", "noninferiority")


@dataclass
class Test:
    """One hypothesis test between two sides (per-query scores, one dict per seed or a single run) over the queries
    both share. ``p`` is the raw p-value, ``p_adj`` the one after the correction of its family (study-wide for
    confirmatory tests, the finding's own Holm family for exploratory ones); decisions read ``p_adj``."""

    name: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    n: int
    p: float
    p_adj: float = math.nan
    kind: str = "difference"
    statistic: float = math.nan
    ci95: tuple[float, float] = (math.nan, math.nan)  # bootstrap CI of delta (of the fraction: noninferiority)
    seeds_a: int = 1
    seeds_b: int = 1
    margin: float | None = None  # equivalence: +-margin; noninferiority: the line
    extra: dict[str, Any] = field(default_factory=dict)
    confirmatory: bool = False
    family: str = ""
    alpha: float = ALPHA

    @property
    def delta(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def p_holm(self) -> float:  # the name of older findings.json files
        return self.p_adj

    def _sig(self) -> bool:
        return not math.isnan(self.p_adj) and self.p_adj <= self.alpha

    def above(self) -> bool:
        """`a` significantly above `b` (after correction); for a non-inferiority test: above the line."""
        if self.kind == "equivalence":
            return False
        return self._sig() and (self.kind == "noninferiority" or self.delta > 0)

    def below(self) -> bool:
        return self.kind == "difference" and self._sig() and self.delta < 0

    def equivalent(self) -> bool:
        return self.kind == "equivalence" and self._sig()

    @property
    def single_run(self) -> bool:
        return self.seeds_a == 1 and self.seeds_b == 1

    def to_dict(self) -> dict[str, Any]:
        d = {"kind": self.kind, "a": self.a, "b": self.b, "mean_a": rounded(self.mean_a),
             "mean_b": rounded(self.mean_b), "delta": rounded(self.delta),
             "ci95": [rounded(self.ci95[0]), rounded(self.ci95[1])], "statistic": rounded(self.statistic, 3),
             "n_queries": self.n, "n_seeds": [self.seeds_a, self.seeds_b], "single_run": self.single_run,
             "p": p_digits(self.p), "p_adj": p_digits(self.p_adj),
             "family": self.family or ("study-wide" if self.confirmatory else "exploratory"),
             "confirmatory": self.confirmatory,
             "significant": self.above() or self.below() or self.equivalent()}
        if self.margin is not None:
            d["margin" if self.kind == "equivalence" else "line"] = self.margin
        d.update({k: (rounded(v) if isinstance(v, float) else v) for k, v in self.extra.items()})
        return d


def rounded(x: float, nd: int = 4) -> float | None:
    if x is None or (isinstance(x, float) and (math.isnan(x))):
        return None
    if isinstance(x, float) and math.isinf(x):
        return x
    return round(float(x), nd)


def p_digits(x: float) -> float | None:
    """A p-value to 4 significant digits (tiny p-values stay distinguishable from 0)."""
    return None if x is None or math.isnan(x) else float(f"{x:.4g}")


def mean_of(s: Scores) -> float:
    return math.fsum(s.values()) / len(s) if s else math.nan


def side_mean(side: Side | Scores) -> float:
    """The mean over queries of the per-query mean over replicates (the queries every replicate has)."""
    side = as_side(side)
    qids = common_queries(side)
    return float(matrix(side, qids).mean()) if qids else math.nan


def paired(name: str, a_name: str, a: Side | Scores, b_name: str, b: Side | Scores, *,
           rules: VerdictRules = DEFAULT_RULES, kind: str = "difference", joint: bool = False) -> Test:
    """An uncorrected test of `a` vs `b` over the queries both have (every replicate of each): ``difference``
    (two-sided paired t-test on the per-query replicate means, with the bootstrap CI of the difference and, for
    reporting, the effect it could detect at 80% power) or ``equivalence`` (TOST within +-equivalence_margin; also
    the smallest margin the data could have shown equivalent). ``joint``: the two sides are the same runs (two
    checkpoints of the same seeds), their replicates resampled together."""
    sa, sb = as_side(a, a_name), as_side(b, b_name)
    qids = common_queries(sa, sb)
    t = Test(name, a_name, b_name, math.nan, math.nan, len(qids), math.nan, kind=kind, seeds_a=max(1, len(sa)),
             seeds_b=max(1, len(sb)), alpha=rules.alpha)
    if not qids:
        return t
    xa, xb = matrix(sa, qids).mean(axis=0), matrix(sb, qids).mean(axis=0)
    t.mean_a, t.mean_b = float(xa.mean()), float(xb.mean())
    d = xa - xb
    boots = boot_means([sa, sb], qids, rules.bootstrap, name, rules.seed, joint=joint)
    t.ci95 = percentile_ci(boots[:, 0] - boots[:, 1])
    if kind == "equivalence":
        t.margin = rules.equivalence_margin
        t.p, lo, hi = tost(d, rules.equivalence_margin)
        t.extra["ci90_t"] = [rounded(lo), rounded(hi)]
        t.extra["smallest_equivalent_margin"] = max(abs(lo), abs(hi)) if not math.isnan(lo) else math.nan
    else:
        t.statistic, t.p = ttest(d)
        if len(qids) >= 2:
            t.extra["detectable_at_80pct_power"] = detectable_effect(float(np.std(d, ddof=1)), len(qids), rules.alpha)
    return t


def noninferior(name: str, part: Side | Scores, full: Side | Scores, base: Side | Scores, *,
                rules: VerdictRules = DEFAULT_RULES, labels: tuple[str, str, str] = ("mlp", "full", "base")) -> Test:
    """One-sided non-inferiority of the recovered fraction (part - base) / (full - base) against
    ``rules.recover_line``: per query d = (part - base) - line x (full - base), H1 mean(d) > 0 (the fraction above
    the line, given a positive gain). ``ci95``: the hierarchical bootstrap CI of the fraction itself (a ratio of
    means); ``extra.fraction_lower_95`` its one-sided 95% lower bound: the line the data could have shown."""
    line = rules.recover_line
    sp, sf, sb = as_side(part, labels[0]), as_side(full, labels[1]), as_side(base, labels[2])
    qids = common_queries(sp, sf, sb)
    t = Test(name, labels[0], f"{line:.0%} line", math.nan, math.nan, len(qids), math.nan, kind="noninferiority",
             seeds_a=max(1, len(sp)), seeds_b=max(1, len(sf)), margin=line, alpha=rules.alpha)
    if len(qids) < 2:
        return t
    xp, xf, xb = (matrix(s, qids).mean(axis=0) for s in (sp, sf, sb))
    t.mean_a, t.mean_b = float(xp.mean()), float((xb + line * (xf - xb)).mean())
    t.statistic, t.p = ttest((xp - xb) - line * (xf - xb), "greater")
    gain = float((xf - xb).mean())
    frac = float((xp - xb).mean()) / gain if abs(gain) > 1e-12 else math.nan
    boots = boot_means([sp, sf, sb], qids, rules.bootstrap, name, rules.seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        fr = (boots[:, 0] - boots[:, 2]) / (boots[:, 1] - boots[:, 2])
    t.ci95 = percentile_ci(fr)
    t.extra.update(fraction=frac, fraction_lower_95=percentile_ci(fr, 0.90)[0], gain=gain)
    return t


def holm_family(tests: Iterable[Test]) -> list[Test]:
    """Fill `p_adj` of every test: one Holm-Bonferroni family (the exploratory tests of one finding)."""
    tests = list(tests)
    for t, a in zip(tests, adjust([t.p for t in tests], "holm")):
        t.p_adj = a
    return tests


def result(n: int, verdict: str, reason: str, evidence: dict[str, Any], tests: list[Test],
           rule: str | None = None) -> dict[str, Any]:
    """One finding's entry of findings.json (``rule``: its rule text when it is not ``RULES[n]``)."""
    assert verdict in VERDICTS, verdict
    return {"finding": n, "claim": CLAIMS[n], "verdict": verdict, "reason": reason, "rule": rule or RULES[n],
            "evidence": evidence, "p_values": {t.name: t.to_dict() for t in tests}, "_tests": list(tests)}


def spearman(x: list[float], y: list[float]) -> float:
    from scipy import stats

    if len(set(y)) < 2:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)
