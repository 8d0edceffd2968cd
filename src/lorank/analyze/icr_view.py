"""The "before LoRA" view: how well each layer (and head) of the base model ranks on its own under in-context
reranking (ICR, :mod:`lorank.inference.icr`).

For each judged query, ICR scores the top ``depth`` candidates once; the score of a candidate is a sum over layers
and heads, so each layer's (or head's) share ranks the candidates by itself, merged across windows as the ICR score
is. ``icr_profile`` evaluates each of those rankings (nDCG@10 by default) and writes ``{name}.json`` and
``{name}.png`` (a line per layer, with the full ICR score and the first stage as references), plus
``{name}_heads.png`` (a layer x head map) with ``heads=True``.

The JSON keeps each query's value too, under ``per_query`` (so that a comparison can resample the queries,
:func:`lorank.report.view_compare.compare_icr`): ``qids`` (the ICR-scored judged queries, sorted), and in that order
``icr`` (the all-layer score), ``layers`` (one list per layer) and, with ``heads=True`` only, ``heads`` (layer x head x
query); ``first_stage`` is a ``{qid: value}`` over the queries the first-stage figure averages (every judged query of
the set; one without candidates counts 0). Each list's mean (``math.fsum`` / n) is the figure beside it.

Baselines (issue 44): MRR@10 of ICR and of the first stage (``icr_recip_rank_10``, ``first_stage_recip_rank_10``;
binary at ``rel_threshold``, 2 for TREC DL, as every lorank MRR), and, given ``zero_shot`` (a
:class:`lorank.Reranker` of the same base model with its yes/no head, ``Reranker.from_pretrained(model,
head_init="yes_no")``), the zero-shot pointwise reranker on the very candidates ICR ranked (each ICR-scored query's
top ``depth``): ``zero_shot`` (the measure, MRR@10, pairs, seconds, seconds a query, precision, model) and its value
per query under ``per_query.zero_shot`` (in ``qids`` order). ``tests``: two-sided paired t-tests on the measure over
the ICR-scored queries (:func:`lorank.evaluation.paired_ttest`), Holm-adjusted over the comparisons made (ICR vs
first stage; with the zero-shot, also ICR vs zero-shot and zero-shot vs first stage).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lorank.atomic import atomic_write_json
from lorank.data.rerankset import RerankSet
from lorank.errors import ConfigError, DataError
from lorank.evaluation import evaluate, holm_adjust, paired_ttest
from lorank.inference.icr import ICRReranker, ICRResult
from lorank.plotting import METRIC_LABELS, pyplot, save_figure


#: the second figure of each ranking: MRR@10, binary at the profile's rel_threshold
MRR = "recip_rank_10"
#: the paired comparisons of ``tests`` (a, b: a minus b), those whose two sides the profile has
COMPARISONS = (("icr", "first_stage"), ("icr", "zero_shot"), ("zero_shot", "first_stage"))
TESTS_METHOD = ("two-sided paired t-test over the ICR-scored judged queries (the same for every side), "
                "Holm-Bonferroni over the comparisons listed")


def _value(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]], measure: str, thr: int
           ) -> tuple[float, dict[str, float]]:
    """(the measure over the judged queries of `qrels`, its value per query)."""
    r = evaluate(qrels, run, rel_threshold=thr, measures=[measure])
    return float(r.aggregate[measure]), {q: float(v) for q, v in r.per_query[measure].items()}


def profile_values(results: dict[str, ICRResult], qrels: dict[str, dict[str, int]], measure: str = "ndcg_cut_10",
                   rel_threshold: int = 2, heads: bool = False) -> dict[str, Any]:
    """The measure of the ICR ranking, of each layer's and (``heads``) each head's, over the judged queries of
    ``results``; under ``per_query``, each query's value (``qids``, sorted, and one list per ranking in that order;
    per head only with ``heads``)."""
    judged = {q: qrels[q] for q in results if qrels.get(q)}
    if not judged:
        raise DataError(None, None, "none of the ICR-scored queries has relevance judgements")
    res = [results[q] for q in judged]
    layers, n_heads = next((r.layer_head.shape[1:] for r in res if r.layer_head.size), (0, 0))
    qids = sorted(judged)

    def of(fn: Callable[[ICRResult], Any]) -> tuple[float, list[float]]:
        value, pq = _value(judged, {q: r.run(fn(r)) for q, r in zip(judged, res)}, measure, rel_threshold)
        return value, [pq[q] for q in qids]

    icr, by_layer = of(lambda r: r.scores), [of(lambda r, l=l: r.layer(l)) for l in range(layers)]
    out: dict[str, Any] = {"icr": icr[0], "layers": [v for v, _ in by_layer]}
    per_query: dict[str, Any] = {"qids": qids, "icr": icr[1], "layers": [p for _, p in by_layer]}
    if heads:
        by_head = [[of(lambda r, l=l, h=h: r.head(l, h)) for h in range(n_heads)] for l in range(layers)]
        out["heads"] = [[v for v, _ in row] for row in by_head]
        per_query["heads"] = [[p for _, p in row] for row in by_head]
    out["per_query"] = per_query
    return out


def paired_tests(sides: dict[str, list[float]], measure: str) -> dict[str, dict[str, Any]]:
    """Paired t-tests of each of :data:`COMPARISONS` whose two sides are in ``sides`` (a side: its per-query
    values, every side over the same queries in the same order), Holm-adjusted over those made: ``{a}_vs_{b}``:
    the two means, ``delta`` (a - b), ``p``, ``p_holm`` (null where undefined: fewer than two queries) and ``n``."""
    pairs = [(a, b) for a, b in COMPARISONS if a in sides and b in sides]
    raw = [paired_ttest(sides[a], sides[b]) for a, b in pairs]  # refuses sides of different lengths
    out: dict[str, dict[str, Any]] = {}
    for (a, b), p, p_holm in zip(pairs, raw, holm_adjust(raw)):
        mean_a, mean_b = (math.fsum(sides[x]) / len(sides[x]) for x in (a, b))
        out[f"{a}_vs_{b}"] = {"a": a, "b": b, "measure": measure, "mean_a": mean_a, "mean_b": mean_b,
                              "delta": mean_a - mean_b, "p": None if math.isnan(p) else p,
                              "p_holm": None if math.isnan(p_holm) else p_holm, "n": len(sides[a])}
    return out


def _check_zero_shot(zero_shot: Any, icr: ICRReranker) -> None:
    """Refuse a zero-shot baseline that is a trained adapter or another model than ICR's."""
    meta = getattr(zero_shot, "meta", {}) or {}
    if meta.get("checkpoint"):
        raise ConfigError(f"the zero-shot baseline is a trained adapter ({meta['checkpoint']}): give the base "
                          "model's Reranker.from_pretrained(model, head_init='yes_no')")
    if meta.get("model") and icr.meta.get("model") and meta["model"] != icr.meta["model"]:
        raise ConfigError(f"the zero-shot baseline's model ({meta['model']}) is not ICR's ({icr.meta['model']}): "
                          "the comparison needs the same base model")


def zero_shot_values(reranker: Any, candidates: RerankSet, run: dict[str, list[Any]], depth: int,
                     measure: str = "ndcg_cut_10", rel_threshold: int = 2,
                     progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The pointwise ``reranker`` (a :class:`lorank.Reranker`; the yes/no zero-shot one for the profile) on the top
    ``depth`` candidates of each query of ``run`` (judged queries only: ICR's), those candidates only: the measure
    and MRR@10 over those queries, ``pairs`` scored, ``seconds`` (the scoring alone), ``seconds_per_query``,
    ``precision``, ``model``, and ``per_query`` (the measure's value of each query, sorted by qid)."""
    qids = sorted(run)
    unjudged = [q for q in qids if not (candidates.qrels or {}).get(q)]
    if unjudged:
        raise DataError(candidates.name, None, f"queries without relevance judgements given to the zero-shot "
                                               f"baseline: {unjudged[:5]}")
    t0 = time.perf_counter()
    scores = reranker.scorer.rerank(candidates.queries, candidates.passages, run, depth, progress)
    seconds = time.perf_counter() - t0
    qrels = {q: candidates.qrels[q] for q in qids}  # every one judged (checked above)
    out: dict[str, Any] = {}
    for m in dict.fromkeys((measure, MRR)):
        out[m], pq = _value(qrels, scores, m, rel_threshold)
        if m == measure:
            per_query = [pq[q] for q in qids]
    out.update(pairs=sum(len(v) for v in scores.values()), seconds=round(seconds, 2),
               seconds_per_query=round(seconds / max(len(qids), 1), 3), precision=reranker.scorer.precision,
               model=(getattr(reranker, "meta", {}) or {}).get("model"), per_query=per_query)
    return out


def _plot(values: dict[str, Any], first_stage: float, measure: str, title: str, path: Path,
          zero_shot: float | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    layers = values["layers"]
    ax.plot(range(len(layers)), layers, marker="o", ms=3, label="one layer's ICR score (its heads summed)")
    ax.axhline(values["icr"], color="crimson", lw=1.2, label=f"ICR, all layers ({values['icr']:.3f})")
    ax.axhline(first_stage, color="gray", ls="--", lw=1.0, label=f"first stage ({first_stage:.3f})")
    if zero_shot is not None:  # a profile written without the baseline (or with --no-zero-shot) draws as before
        ax.axhline(zero_shot, color="darkorange", ls=":", lw=1.4,
                   label=f"yes/no zero-shot, pointwise ({zero_shot:.3f})")
    ax.set_xlabel("layer")
    ax.set_ylabel(METRIC_LABELS.get(measure, measure))
    ax.set_title(title, fontsize=9)
    # below the axes: inside them, "best" still covered a layer's point (layer 7 of SmolLM2 on DL19)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


def _model_label(model: Any) -> str:
    """A model's short name for a title: a path's file (or folder) name, a hub id as it is."""
    text = str(model or "model")
    return Path(text).name if ("/" in text and Path(text).is_absolute()) or text.endswith(".gguf") else text


def _plot_heads(heads: list[list[float]], measure: str, title: str, path: Path) -> Path:
    plt = pyplot()
    grid = np.asarray(heads)
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * grid.shape[1] + 2), max(3, 0.2 * grid.shape[0] + 1.5)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower")
    fig.colorbar(im, ax=ax, label=METRIC_LABELS.get(measure, measure))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _figures(out: dict[str, Any], out_dir: Path, name: str) -> list[str]:
    role = f", {out['role']}" if out.get("role") else ""  # dev / test, from the record
    title = (f"ICR per layer on {out['set']}{role} ({out['queries']} queries, top {out['depth']}), "
             f"{_model_label(out['model'])}")
    zero_shot = (out.get("zero_shot") or {}).get(out["measure"])
    figures = [_plot(out, out["first_stage"], out["measure"], title, out_dir / f"{name}.png", zero_shot).name]
    if out.get("heads"):
        figures.append(_plot_heads(out["heads"], out["measure"], title, out_dir / f"{name}_heads.png").name)
    return figures


def replot_profile(path: str | Path) -> list[Path]:
    """Redraw the figures of a written profile (``{name}.json``) from its values, beside it; the JSON is not
    changed (its ``figures`` names stay the same)."""
    import json

    path = Path(path)
    out = json.loads(path.read_text())
    return [path.parent / f for f in _figures(out, path.parent, path.stem)]


def icr_profile(candidates: RerankSet, out_dir: str | Path | None = None, *, reranker: ICRReranker | None = None,
                model: str | None = None, depth: int = 100, max_queries: int | None = None, heads: bool = False,
                measure: str = "ndcg_cut_10", rel_threshold: int = 2, name: str = "icr_profile",
                progress: Callable[[int], None] | None = None, record: dict[str, Any] | None = None,
                zero_shot: Any = None, zero_shot_progress: Callable[[int], None] | None = None,
                **icr_options: Any) -> dict[str, Any]:
    """ICR's per-layer (and per-head) profile on judged ``candidates``: ``reranker`` (an :class:`ICRReranker`), else
    one built from ``model`` (default: the embedded SmolLM2-135M) and ``icr_options`` (``window``, ``stride``,
    ``max_tokens``, ``prompt``, ``device``...). ``max_queries``: the first judged queries only; ``record``: more keys
    for the JSON (a command, the set's role); ``zero_shot``: the same base model's yes/no zero-shot
    :class:`lorank.Reranker`, scored on ICR's candidates as a baseline (``zero_shot_progress``: its pairs). Writes
    ``{name}.json``, ``{name}.png`` (and ``{name}_heads.png``) into ``out_dir`` when given; returns the JSON."""
    if not candidates.qrels:
        raise DataError(candidates.name, None, "the ICR profile needs relevance judgements (qrels)")
    rs = candidates.subset(max_queries)
    judged = {q: rs.run[q] for q in rs.qids if rs.qrels.get(q)}
    rr = reranker or ICRReranker.from_pretrained(model, **icr_options)
    if zero_shot is not None:
        _check_zero_shot(zero_shot, rr)
    t0 = time.perf_counter()
    results = rr.score_run(rs.queries, rs.passages, judged, depth=depth, progress=progress)
    seconds = time.perf_counter() - t0
    values = profile_values(results, rs.qrels, measure, rel_threshold, heads)
    qids = values["per_query"]["qids"]
    first_run = {q: {e.docid: float(-i) for i, e in enumerate(v[:depth])} for q, v in judged.items()}
    first, first_pq = _value(rs.qrels, first_run, measure, rel_threshold)
    per_query = {**values.pop("per_query"), "first_stage": first_pq}
    mrr = {f"icr_{MRR}": _value({q: rs.qrels[q] for q in qids}, {q: results[q].run() for q in qids}, MRR,
                                rel_threshold)[0],
           f"first_stage_{MRR}": _value(rs.qrels, first_run, MRR, rel_threshold)[0]}
    sides = {"icr": per_query["icr"], "first_stage": [first_pq[q] for q in qids]}
    baseline: dict[str, Any] = {}
    if zero_shot is not None:  # the same queries and candidates as ICR's
        baseline["zero_shot"] = zero_shot_values(zero_shot, rs, {q: judged[q] for q in qids}, depth, measure,
                                                 rel_threshold, zero_shot_progress)
        per_query["zero_shot"] = sides["zero_shot"] = baseline["zero_shot"].pop("per_query")
    layers = values["layers"]
    out: dict[str, Any] = {
        "set": rs.name, "queries": len(results), "depth": depth, "measure": measure, "rel_threshold": rel_threshold,
        "model": rr.meta.get("model"), "settings": rr.settings, "first_stage": first, **values, **mrr, **baseline,
        "best_layer": int(np.argmax(layers)) if layers else None,
        "windows_per_query": {"mean": float(np.mean([r.windows for r in results.values()])),
                              "max": int(max(r.windows for r in results.values()))},
        "window_size": {"min": int(min(r.window_size for r in results.values())),
                        "max": int(max(r.window_size for r in results.values()))},
        "seconds": round(seconds, 2), "seconds_per_query": round(seconds / max(len(results), 1), 3),
        "tests": paired_tests(sides, measure), "tests_method": TESTS_METHOD,
        **(record or {}), "per_query": per_query,
    }
    if out_dir is not None:
        out_dir = Path(out_dir)
        out["figures"] = _figures(out, out_dir, name)
        atomic_write_json(out_dir / f"{name}.json", out)
    return out
