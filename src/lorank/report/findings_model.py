"""The vocabulary of the paper's five findings (:mod:`lorank.report.findings`): the thresholds and verdicts,
each finding's claim and rule, the per-query numbers they are decided on (:class:`PerQuery`) and one paired
t-test between two sides (:class:`Test`), grouped into Holm families. Pure: nothing here reads files."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from lorank.errors import ConfigError
from lorank.score.significance import holm, paired_ttest

ALPHA = 0.05
RHO_MIN = 0.5  # finding 1: Spearman rho(step, nDCG@10) for a "steady" rise
SPREAD_MAX = 0.02  # finding 2: max - min mean nDCG@10 across ranks for "comparable"
RECOVER_MIN = 0.90  # finding 5: fraction of the full adapter's gain recovered
TARGET_WINDOW = (5, 15)  # finding 4
HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
MEASURE = "ndcg_cut_10"

CLAIMS = {
    1: "Quality rises steadily across checkpoints (reported every 50 steps).",
    2: "LoRA ranks 1, 2, 8 and 32 reach comparable quality.",
    3: "MHA-only and MLP-only updates both improve ranking, MHA more than MLP, and both together are best.",
    4: "Layers 5-15 contribute most; the up and gate projections matter more than down.",
    5: "MLP-only updates recover up to 98% of the full adapter's performance.",
}
RULES = {
    1: "reference run: last checkpoint significantly above the first (Holm over runs) and Spearman "
       f"rho(step, nDCG@10) >= {RHO_MIN}",
    2: f"no pair of ranks significantly different (Holm over pairs) and spread <= {SPREAD_MAX} nDCG@10",
    3: "mha > base, mlp > base, mha > mlp, all > mha, all > mlp, each significant (Holm over the five); base = BM25 "
       "for trained runs, LoRA off for inference-time ablations",
    4: "only L5-15 top among equal-width windows and significantly above the non-overlapping ones; up and gate "
       "significantly more important than down (kept alone or removed); Holm over the finding's tests",
    5: f"(MLP-only - base) / (full - base) >= {RECOVER_MIN:.0%} with MLP-only significantly above base; does not "
       f"hold when significantly below the {RECOVER_MIN:.0%} line (trained vs BM25 or inference-time vs LoRA off)",
}

Scores = dict[str, float]  # qid -> nDCG@10


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
    out = PerQuery("+".join(labels), {}, ablations_of=parts[0].ablations_of, sets=labels)
    for p in parts:
        out.bm25.update(p.bm25)
        for rid, steps in p.checkpoints.items():
            for step, sc in steps.items():
                out.checkpoints.setdefault(rid, {}).setdefault(step, {}).update(sc)
        for name, sc in p.ablations.items():
            out.ablations.setdefault(name, {}).update(sc)
    return out


@dataclass
class Test:
    name: str
    a: str
    b: str
    mean_a: float
    mean_b: float
    n: int
    p: float
    p_holm: float = math.nan

    @property
    def delta(self) -> float:
        return self.mean_a - self.mean_b

    def above(self) -> bool:
        """`a` significantly above `b` (Holm-adjusted)."""
        return not math.isnan(self.p_holm) and self.p_holm <= ALPHA and self.delta > 0

    def below(self) -> bool:
        return not math.isnan(self.p_holm) and self.p_holm <= ALPHA and self.delta < 0

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "mean_a": rounded(self.mean_a), "mean_b": rounded(self.mean_b),
                "delta": rounded(self.delta), "n_queries": self.n, "p": p_digits(self.p), "p_holm": p_digits(self.p_holm),
                "significant": self.above() or self.below()}


def rounded(x: float, nd: int = 4) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), nd)


def p_digits(x: float) -> float | None:
    """A p-value to 4 significant digits (tiny p-values stay distinguishable from 0)."""
    return None if x is None or math.isnan(x) else float(f"{x:.4g}")


def mean_of(s: Scores) -> float:
    return math.fsum(s.values()) / len(s) if s else math.nan


def paired(name: str, a_name: str, a: Scores, b_name: str, b: Scores) -> Test:
    """An uncorrected paired test of `a` vs `b` over the queries both have."""
    qids = sorted(set(a) & set(b))
    xa, xb = [a[q] for q in qids], [b[q] for q in qids]
    mean_a = math.fsum(xa) / len(qids) if qids else math.nan
    mean_b = math.fsum(xb) / len(qids) if qids else math.nan
    return Test(name, a_name, b_name, mean_a, mean_b, len(qids), paired_ttest(xa, xb) if qids else math.nan)


def holm_family(tests: Iterable[Test]) -> list[Test]:
    """Fill `p_holm` of every test: one Holm-Bonferroni family."""
    tests = list(tests)
    adjusted, _ = holm([t.p for t in tests], ALPHA)
    for t, a in zip(tests, adjusted):
        t.p_holm = a
    return tests


def result(n: int, verdict: str, reason: str, evidence: dict[str, Any], tests: list[Test]) -> dict[str, Any]:
    assert verdict in VERDICTS, verdict
    return {"finding": n, "claim": CLAIMS[n], "verdict": verdict, "reason": reason, "rule": RULES[n],
            "evidence": evidence, "p_values": {t.name: t.to_dict() for t in tests}}


def spearman(x: list[float], y: list[float]) -> float:
    from scipy import stats

    if len(set(y)) < 2:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)
