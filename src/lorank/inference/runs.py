"""From model scores to a full TREC run: the reranked top of each query over the first stage's order, and the
fusion of model and first-stage scores. Used by checkpoint evaluation, ``lorank rerank``, ablations and analyses."""
from __future__ import annotations

from typing import Any


def _z(scores: dict[str, float]) -> dict[str, float]:
    import statistics

    vals = list(scores.values())
    mu = statistics.fmean(vals)
    sd = statistics.pstdev(vals) or 1.0
    return {d: (v - mu) / sd for d, v in scores.items()}


def interpolate_runs(model_scores: dict[str, dict[str, float]], first_stage: dict[str, list[Any]],
                     alpha: float) -> dict[str, dict[str, float]]:
    """Per query: alpha * z(model) + (1 - alpha) * z(first-stage score), over the reranked candidates."""
    out = {}
    for qid, s in model_scores.items():
        fs = {e.docid: float(e.score) for e in first_stage.get(qid, []) if e.docid in s}
        zm, zf = _z(s), _z(fs)
        out[qid] = {d: alpha * zm[d] + (1 - alpha) * zf.get(d, 0.0) for d in s}
    return out


def rerank_to_run(scores: dict[str, dict[str, float]], first_stage: dict[str, list[Any]], depth: int) -> dict[str, dict[str, float]]:
    """Reranked top-``depth``; candidates below depth keep their first-stage order underneath."""
    out: dict[str, dict[str, float]] = {}
    for qid, entries in first_stage.items():
        s = dict(scores.get(qid, {}))
        rest = [e for e in entries[depth:] if e.docid not in s]
        if rest:
            floor = min(s.values(), default=0.0) - 1.0
            for i, e in enumerate(rest):
                s[e.docid] = floor - i * 1e-3
        out[qid] = s
    return out
