"""AdaLoRA's view: the rank a trained AdaLoRA adapter kept per layer and projection (adalora_allocation.json) against
the dissected adapter's ablation importance, per layer, per layer window and per projection, each a Spearman rho with
its query-bootstrap CI (``lorank analyze compare-views adalora``; :func:`compare_adalora`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lorank.errors import ConfigError
from lorank.plotting import pyplot, save_figure
from lorank.report.view_compare.common import (BOOTSTRAP_NOTE, MEASURE, N_BOOT, PROJECTIONS, UNITS_NOTE, StudyView,
                                               _read_json, _rho_text, _study_record, _write, correlate,
                                               loo_correlation, read_study, sweep_of, window_correlation)


def _allocation(path: str | Path) -> dict[str, Any]:
    a = _read_json(path, "an AdaLoRA allocation, adalora_allocation.json from lorank.analyze.adalora_allocation")
    if a.get("kind") != "adalora_allocation" or "ranks" not in a:
        raise ConfigError(f"{path}: not an adalora_allocation.json (no kind 'adalora_allocation' and 'ranks')")
    return a


def adalora_correlations(alloc: dict[str, Any], view: StudyView, n_boot: int = N_BOOT, seed: int = 0
                         ) -> list[dict[str, Any]]:
    """The allocation against the adapter's ablations: per layer (leave-one-layer-out drop), per layer window (the
    window's nDCG@10), per projection (the drop with that projection's delta off; its nDCG@10 kept alone)."""
    by_layer = {int(layer): sum(v or 0 for v in row) for layer, row in zip(alloc["layers"], alloc["ranks"])}
    if max(by_layer) >= view.family.n_layers:
        raise ConfigError(f"the allocation names layer {max(by_layer)}, but {view.family.model} has "
                          f"{view.family.n_layers} layers: not the same model")
    out = [{"name": "per layer", "x": "AdaLoRA rank kept in the layer (sum over projections)",
            "y": "leave-one-layer-out drop in nDCG@10 (full - without L)",
            **loo_correlation(view, by_layer, "adalora/layers", n_boot, seed)},
           {"name": "per layer window", "x": "AdaLoRA rank kept in the window's layers (sum)",
            "y": "nDCG@10 with LoRA on the window only",
            **window_correlation(view, by_layer, "sum", "adalora/windows", n_boot, seed)}]
    rows = sweep_of(view, PROJECTIONS)
    by_proj = {p: float(sum((row[j] or 0) for row in alloc["ranks"])) for j, p in enumerate(alloc["projections"])}
    projs = [p for p in by_proj if f"without {p}" in rows and f"only {p}" in rows]
    for how, y, imp in (("without", "drop in nDCG@10 with the projection's delta off (full - without)",
                         lambda m: np.array([m["full"] - m[f"without {p}"] for p in projs])),
                        ("only", "nDCG@10 with the projection's delta kept alone",
                         lambda m: np.array([m[f"only {p}"] for p in projs]))):
        configs = {"full": rows["full"], **{f"{how} {p}": rows[f"{how} {p}"] for p in projs}}
        c = correlate([by_proj[p] for p in projs], configs, imp, f"adalora/projections-{how}", n_boot, seed)
        c["units"] = [{"unit": p, "x": by_proj[p], "y": v} for p, v in zip(projs, c.pop("importance"))]
        out.append({"name": f"per projection ({how})", "x": "AdaLoRA rank kept by the projection (sum over layers)",
                    "y": y, **c})
    return out


def _scatter(ax: Any, c: dict[str, Any], color: str, title: str, xlabel: str) -> None:
    ax.scatter([u["x"] for u in c["units"]], [u["y"] for u in c["units"]], color=color)
    for u in c["units"]:
        ax.annotate(u["unit"].removesuffix("_proj"), (u["x"], u["y"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_title(f"{title}\n{_rho_text(c)}", fontsize=8)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(c["y"].replace(" (full", "\n(full").replace(" with the", "\nwith the"), fontsize=7)


def _plot_adalora(res: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig = plt.figure(figsize=(12, 7.2))
    grid = fig.add_gridspec(2, 3, height_ratios=[1.1, 1])
    layers, wins, off, alone = res["correlations"]
    ax = fig.add_subplot(grid[0, :])
    xs = [u["layer"] for u in layers["units"]]
    ax.bar(xs, [u["x"] for u in layers["units"]], color="C0", alpha=0.6)
    ax.set_xlabel("layer")
    ax.set_ylabel("AdaLoRA rank kept\n(sum over projections)", color="C0")
    tw = ax.twinx()
    tw.plot(xs, [u["y"] for u in layers["units"]], "o-", color="C3", ms=3)
    tw.axhline(0, color="grey", lw=0.6, ls=":")
    tw.set_ylabel("nDCG@10 drop without\nthe layer's LoRA", color="C3")
    ax.set_title(f"per layer: AdaLoRA rank kept (bars) vs leave-one-layer-out drop (line): {_rho_text(layers)}",
                 fontsize=9)
    _scatter(fig.add_subplot(grid[1, 0]), wins, "C2", "per layer window", "AdaLoRA rank kept in the window")
    _scatter(fig.add_subplot(grid[1, 1]), off, "C4", "per projection: its delta off", "AdaLoRA rank kept (projection)")
    _scatter(fig.add_subplot(grid[1, 2]), alone, "C5", "per projection: kept alone", "AdaLoRA rank kept (projection)")
    fig.suptitle(f"AdaLoRA allocation vs {res['study']['subject']}'s ablations ({res['study']['where']}); "
                 "rho: Spearman, 95% CI: query bootstrap, n: units", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def compare_adalora(allocation: str | Path, study: str | Path, out: str | Path, *, role: str | None = None,
                    sets: list[str] | None = None, n_boot: int = N_BOOT, seed: int = 0,
                    command: str | None = None) -> dict[str, Any]:
    """The Python twin of ``lorank analyze compare-views adalora``: writes ``OUT/adalora_vs_ablations.json`` and
    ``.png``; returns the JSON's content."""
    alloc = _allocation(allocation)
    view = read_study(study, role, sets)
    res = {"kind": "view_compare_adalora", "command": command, "allocation": str(allocation),
           "allocation_adapter": alloc.get("adapter"), "allocated": alloc.get("allocated"),
           "study": _study_record(view), "measure": MEASURE, "bootstrap": BOOTSTRAP_NOTE, "units_note": UNITS_NOTE,
           "correlations": adalora_correlations(alloc, view, n_boot, seed)}
    return _write(res, Path(out), "adalora_vs_ablations", _plot_adalora)
