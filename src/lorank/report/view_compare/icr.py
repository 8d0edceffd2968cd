"""ICR's view: a base model's per-layer in-context reranking profile (icr_profile.json) against the dissected
adapter's layer importance, per layer and per layer window, on a normalised depth axis so that model families of
different depths share it (``lorank analyze compare-views icr``; :func:`compare_icr`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lorank.data.roles import role_of, set_key
from lorank.errors import ConfigError
from lorank.plotting import pyplot, save_figure
from lorank.report.view_compare.common import (ICR_BOOTSTRAP_NOTE, MEASURE, N_BOOT, UNITS_NOTE, PerQuery, StudyView,
                                               _read_json, _rho_text, _study_record, _write, layer_depth,
                                               loo_correlation, read_study, window_correlation)


def _profile(path: str | Path) -> dict[str, Any]:
    p = _read_json(path, "an ICR profile: icr_profile.json from lorank.analyze.icr_profile")
    if not isinstance(p.get("layers"), list) or not p["layers"] or "set" not in p:
        raise ConfigError(f"{path}: not an ICR profile (no 'layers' list and 'set')")
    return p


def icr_per_query(prof: dict[str, Any], view: StudyView) -> tuple[dict[int, PerQuery] | None, dict[str, Any]]:
    """The profile's per-layer values per query, keyed as the adapter's ("set:qid", the set by the study's label for
    it), or None when the profile has none (an older icr_profile.json) or its set is not among the adapter's; and a
    record of which (``icr_side``)."""
    pq = prof.get("per_query")
    if not isinstance(pq, dict) or not pq.get("qids") or len(pq.get("layers") or []) != len(prof["layers"]):
        return None, {"resampled": False, "why": "the profile holds no per-query values (an icr_profile.json from "
                                                 "before they were kept): the ICR side is held fixed"}
    label = next((s for s in view.sets if set_key(s) == set_key(prof["set"])), None)
    if label is None:
        return None, {"resampled": False, "why": f"the profile's set ({prof['set']}) is not among the adapter's "
                                                 f"({'+'.join(view.sets)}): no query to pair; the ICR side is held "
                                                 "fixed"}
    qids = [f"{label}:{q}" for q in pq["qids"]]
    return ({i: dict(zip(qids, map(float, row))) for i, row in enumerate(pq["layers"])},
            {"resampled": True, "profile_queries": len(qids), "why": "per-query values in the profile: each draw "
             "resamples the ICR side with the adapter's queries (paired by set:qid; see each correlation's "
             "n_queries, queries_view_only, queries_adapter_only)"})


def icr_pair(profile: str | Path, study: str | Path, sets: list[str] | None, n_boot: int, seed: int
             ) -> dict[str, Any]:
    """One (ICR profile, study) pair: its per-layer ICR nDCG@10 against the adapter's leave-one-layer-out drops (per
    layer) and, averaged over each window's layers, against the layer windows' nDCG@10; the adapter side on the
    profile's set (or `sets`). The ICR side is resampled with the adapter's queries when the profile has per-query
    values on one of the adapter's sets (:func:`icr_per_query`), else held fixed."""
    prof = _profile(profile)
    view = read_study(study, sets=sets or [prof["set"]])
    n = view.family.n_layers
    if len(prof["layers"]) != n:
        raise ConfigError(f"{profile}: {len(prof['layers'])} layers, but {view.family.model} (the study "
                          f"{view.family.study_dir}) has {n}: not the same model")
    per_layer = {i: float(v) for i, v in enumerate(prof["layers"])}
    pq, side = icr_per_query(prof, view)
    key = f"icr/{view.family.name}/{prof['set']}"
    return {"profile": str(profile), "model": prof.get("model"), "set": prof["set"],
            "role": prof.get("role") or role_of(prof["set"]), "queries": prof.get("queries"),
            "icr_all_layers": prof.get("icr"), "first_stage": prof.get("first_stage"), "study": _study_record(view),
            "icr_side": side,
            "icr_by_depth": [{"layer": i, "depth": layer_depth(i, n), "icr_ndcg": v} for i, v in per_layer.items()],
            "correlations": [
                {"name": "per layer", "x": "ICR nDCG@10 of the layer alone", "y": "leave-one-layer-out drop in "
                 "nDCG@10 (full - without L)", **loo_correlation(view, per_layer, key + "/layers", n_boot, seed, pq)},
                {"name": "per layer window", "x": "ICR nDCG@10 averaged over the window's layers",
                 "y": "nDCG@10 with LoRA on the window only",
                 **window_correlation(view, per_layer, "mean", key + "/windows", n_boot, seed, pq)}]}


def _plot_icr(res: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6.0), sharex=True)
    for i, p in enumerate(res["pairs"]):
        s, (layers, _) = p["study"], p["correlations"]
        name = f"{Path(str(p['model'] or s['model'])).name} ({s['n_layers']} layers)"
        top.plot([u["depth"] for u in p["icr_by_depth"]], [u["icr_ndcg"] for u in p["icr_by_depth"]], "o-", ms=3,
                 color=f"C{i}", label=f"{name}: ICR on {p['set']} [{p['role']}, n={p['queries']}]")
        bottom.plot([u["depth"] for u in layers["units"]], [u["y"] for u in layers["units"]], "s-", ms=3,
                    color=f"C{i}", label=f"{name}: {s['subject']} [{s['where']}]; {_rho_text(layers)}")
    top.set_ylabel("ICR nDCG@10\n(one layer's score alone)")
    top.legend(fontsize=7, loc="best")
    top.set_title("ICR per layer (the base model) vs the trained adapter's leave-one-layer-out drop\n"
                  "rho: Spearman over layers, 95% CI: query bootstrap of the drops", fontsize=9)
    bottom.axhline(0, color="grey", lw=0.6, ls=":")
    bottom.set_ylabel("nDCG@10 drop\nwithout the layer's LoRA")
    bottom.set_xlabel("depth: (layer + 0.5) / number of layers (0 = input)")
    bottom.set_xlim(0, 1)
    bottom.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def compare_icr(pairs: list[tuple[str | Path, str | Path]], out: str | Path, *, sets: list[str] | None = None,
                n_boot: int = N_BOOT, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """The Python twin of ``lorank analyze compare-views icr``: each (icr_profile.json, study) pair (one per model
    family, or per set) on one normalised depth axis; writes ``OUT/icr_vs_layers.json`` and ``.png``."""
    if not pairs:
        raise ConfigError("no (ICR profile, study) pair given")
    res = {"kind": "view_compare_icr", "command": command, "measure": MEASURE, "bootstrap": ICR_BOOTSTRAP_NOTE,
           "units_note": UNITS_NOTE,
           "depth": "layer l of an n-layer model at (l + 0.5) / n", "pairs": [
               icr_pair(p, s, sets, n_boot, seed) for p, s in pairs]}
    return _write(res, Path(out), "icr_vs_layers", _plot_icr)
