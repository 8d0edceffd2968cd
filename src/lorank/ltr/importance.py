"""Gain importance of a fitted ranker aggregated by feature group, by layer and by projection."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lorank.features.groups import BM25_COLUMNS, SCORE_COLUMN, component_of_column, parse_column


def aggregate_gain(columns: Sequence[str], gain: np.ndarray, components: dict[str, str] | None = None) -> dict[str, Any]:
    """Fractions of the total gain: ``by_group`` (bm25, score, mlp, mha), ``by_layer`` (``{layer: {proj: f}}``),
    ``by_projection``, ``by_part`` (activations vs norms), and the top columns."""
    total = float(np.sum(gain))
    frac = (np.asarray(gain, dtype=np.float64) / total) if total > 0 else np.zeros(len(columns))
    by_group: dict[str, float] = {}
    by_layer: dict[int, dict[str, float]] = {}
    by_proj: dict[str, float] = {}
    by_part = {"activation": 0.0, "norm": 0.0}
    for c, f in zip(columns, frac):
        p = parse_column(c)
        if p is None:
            g = "bm25" if c in BM25_COLUMNS else "score" if c == SCORE_COLUMN else "other"
        else:
            layer, proj, part = p
            g = component_of_column(proj, components)
            by_layer.setdefault(layer, {})
            by_layer[layer][proj] = by_layer[layer].get(proj, 0.0) + float(f)
            by_proj[proj] = by_proj.get(proj, 0.0) + float(f)
            by_part["norm" if part == "norm" else "activation"] += float(f)
        by_group[g] = by_group.get(g, 0.0) + float(f)
    top = sorted(zip(columns, frac), key=lambda t: -t[1])[:15]
    return {"total_gain": total, "by_group": by_group,
            "by_layer": {str(k): by_layer[k] for k in sorted(by_layer)},
            "by_projection": dict(sorted(by_proj.items(), key=lambda t: -t[1])), "by_part": by_part,
            "top_columns": [{"column": c, "gain_fraction": float(f)} for c, f in top]}
