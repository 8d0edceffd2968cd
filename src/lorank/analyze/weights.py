"""Per-module statistics of a LoRA adapter, from its files alone (no forward pass).

For every LoRA module (layer x projection) with ``delta = s * B @ A`` (``s = alpha / r``, or
``alpha / sqrt(r)`` for rsLoRA; AdaLoRA: ``B (E * A) * alpha / init_r``, :func:`lorank.lora.factors.read_factors`):
the Frobenius and spectral norms of the delta, its norm relative to the frozen base weight (optional: reads only
the base tensors it needs), its singular values (from QR factors of B and A, never the full matrix), its effective
rank (Roy & Vetterli 2007) and stable rank.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from lorank.analyze.common import (AdapterFiles, BaseWeights, base_model_path, effective_rank, read_adapter,
                                   stable_rank, write_csv)
from lorank.atomic import atomic_write_json
from lorank.errors import LorankError
from lorank.lora.factors import low_rank_svd
from lorank.models.arch import MHA
from lorank.plotting import pyplot, save_figure

#: how each variant's delta is scaled, as the view records it (DyLoRA out of training: its full rank at alpha/r)
_SCALING_RULES = {"rslora": "alpha/sqrt(r)",
                  "adalora": "alpha/init_r (PEFT's ranknum); the delta is B (E*A): the kept singular values folded "
                             "into A"}

CSV_COLUMNS = ("module", "layer", "projection", "component", "rank", "scaling", "fro", "spectral", "rel_fro",
               "base_fro", "effective_rank", "stable_rank", "dora_fro")


def module_stats(af: AdapterFiles, base: BaseWeights | None = None) -> list[dict[str, Any]]:
    """One row per LoRA module, in (layer, projection) order."""
    rows = []
    order = {p: i for i, p in enumerate(af.projections)}
    for (layer, proj), mod in sorted(af.modules.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        svd = low_rank_svd(mod)
        s = svd.S
        fro = float(s.square().sum().sqrt())
        row: dict[str, Any] = {
            "module": mod.name, "layer": layer, "projection": proj, "component": mod.component,
            "rank": mod.rank, "scaling": mod.scaling, "fro": fro, "spectral": float(s[0]) if s.numel() else 0.0,
            "effective_rank": effective_rank(s), "stable_rank": stable_rank(s),
            "singular_values": [float(x) for x in s],
            "rel_fro": None, "base_fro": None, "dora_fro": None,
        }
        if base is not None:
            W = base.weight(mod.name).double()
            row["base_fro"] = float(W.norm())
            row["rel_fro"] = fro / row["base_fro"] if row["base_fro"] > 0 else None
            if mod.magnitude is not None and not mod.fan_in_fan_out:
                # DoRA: W' = m / ||W + sBA||_row * (W + sBA); the delta is W' - W (full rank)
                Wd = W + mod.scaling * (mod.B.double() @ mod.A.double())
                Wm = (mod.magnitude.double() / Wd.norm(dim=1)).unsqueeze(1) * Wd
                row["dora_fro"] = float((Wm - W).norm())
        rows.append(row)
    return rows


def summarize(rows: list[dict[str, Any]], top_k: int = 10) -> dict[str, Any]:
    by_norm = sorted(rows, key=lambda r: -r["fro"])
    def agg(key: str) -> dict[str, Any]:
        out: dict[str, dict[str, float]] = {}
        for r in rows:
            d = out.setdefault(str(r[key]), {"fro": 0.0, "n": 0})
            d["fro"] += r["fro"] ** 2
            d["n"] += 1
        return {k: {"fro": math.sqrt(v["fro"]), "modules": v["n"]} for k, v in out.items()}

    rel = [r for r in rows if r["rel_fro"] is not None]
    return {
        "modules": len(rows),
        "total_fro": math.sqrt(sum(r["fro"] ** 2 for r in rows)),
        "mean_effective_rank": float(np.mean([r["effective_rank"] for r in rows])),
        "mean_stable_rank": float(np.mean([r["stable_rank"] for r in rows])),
        "top_by_fro": [{k: r[k] for k in ("module", "layer", "projection", "fro", "rel_fro", "effective_rank")}
                       for r in by_norm[:top_k]],
        "top_by_rel_fro": [{k: r[k] for k in ("module", "layer", "projection", "fro", "rel_fro")}
                           for r in sorted(rel, key=lambda r: -r["rel_fro"])[:top_k]],
        "by_component": agg("component"),
        "by_projection": agg("projection"),
        "by_layer": agg("layer"),
    }


def grid(rows: list[dict[str, Any]], key: str, layers: list[int], projections: list[str]) -> np.ndarray:
    g = np.full((len(layers), len(projections)), np.nan)
    li = {l: i for i, l in enumerate(layers)}
    pi = {p: j for j, p in enumerate(projections)}
    for r in rows:
        if r.get(key) is not None and r["layer"] in li and r["projection"] in pi:
            g[li[r["layer"]], pi[r["projection"]]] = r[key]
    return g


def heatmap(ax: Any, fig: Any, data: np.ndarray, layers: list[int], projections: list[str], title: str,
            cbar_label: str, cmap: str = "viridis", vmin: float | None = None, vmax: float | None = None,
            mha_count: int | None = None) -> None:
    import matplotlib

    cm = matplotlib.colormaps[cmap].with_extremes(bad="lightgrey")
    im = ax.imshow(np.ma.masked_invalid(data), aspect="auto", origin="lower", cmap=cm, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    ax.set_xticks(range(len(projections)), projections, rotation=45, ha="right", fontsize=8)
    step = max(1, len(layers) // 15)
    ticks = [i for i in range(len(layers)) if (len(layers) - 1 - i) % step == 0]  # the last layer is labelled
    ax.set_yticks(ticks, [str(layers[i]) for i in ticks], fontsize=8)
    ax.set_xlabel("projection")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=10)
    if mha_count and 0 < mha_count < len(projections):
        ax.axvline(mha_count - 0.5, color="white", lw=2)
    cb = fig.colorbar(im, ax=ax, fraction=0.06, pad=0.03)
    cb.set_label(cbar_label, fontsize=8)
    cb.ax.tick_params(labelsize=7)


def plot_heatmaps(rows: list[dict[str, Any]], af: AdapterFiles, out: Path, title: str) -> Path:
    plt = pyplot()
    layers = list(range(af.num_layers))
    projs = [p for p in af.projections if any(r["projection"] == p for r in rows)]
    n_mha = sum(1 for p in projs if p in _mha(af))
    r_max = max(r["rank"] for r in rows)
    panels = [("fro", r"$\|\Delta W\|_F$", "Frobenius norm of the scaled delta (weight units)", "viridis", None, None)]
    if any(r["rel_fro"] is not None for r in rows):
        panels.append(("rel_pct", r"$\|\Delta W\|_F \,/\, \|W_0\|_F$", "% of the frozen weight's Frobenius norm",
                       "magma", None, None))
        rows = [dict(r, rel_pct=None if r["rel_fro"] is None else 100.0 * r["rel_fro"]) for r in rows]
    panels += [("effective_rank", "effective rank (Roy & Vetterli)", f"effective rank (of r = {r_max})",
                "cividis", 1.0, float(r_max)),
               ("stable_rank", r"stable rank $\|\Delta W\|_F^2/\|\Delta W\|_2^2$", f"stable rank (of r = {r_max})",
                "cividis", 1.0, float(r_max))]
    h = max(4.0, 0.16 * len(layers) + 2.2)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 0.6, h), constrained_layout=True)
    for ax, (key, ttl, cbl, cmap, vmin, vmax) in zip(np.atleast_1d(axes), panels):
        heatmap(ax, fig, grid(rows, key, layers, projs), layers, projs, ttl, cbl, cmap, vmin, vmax, n_mha)
    fig.suptitle(title + "  (grey: no LoRA module; white line: attention | MLP)", fontsize=11)
    return save_figure(fig, out)


def _mha(af: AdapterFiles) -> set[str]:
    return {m.projection for m in af.modules.values() if m.component == MHA}


def plot_spectra(rows: list[dict[str, Any]], af: AdapterFiles, out: Path, title: str) -> Path:
    plt = pyplot()
    import matplotlib

    projs = [p for p in af.projections if any(r["projection"] == p for r in rows)]
    n = len(projs)
    cols = min(4, n)
    nrows = math.ceil(n / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.3 * cols + 1.0, 2.7 * nrows + 0.6), squeeze=False,
                             constrained_layout=True, sharey=True)
    cmap = matplotlib.colormaps["viridis"]
    norm = matplotlib.colors.Normalize(0, max(af.num_layers - 1, 1))
    for ax, p in zip(axes.flat, projs):
        for r in (r for r in rows if r["projection"] == p):
            s = np.asarray(r["singular_values"])
            s = s[s > 0]
            if s.size:
                ax.plot(np.arange(1, s.size + 1), s, color=cmap(norm(r["layer"])), lw=1, marker=".", ms=3)
        ax.set_yscale("log")
        ax.set_title(p, fontsize=10)
        ax.set_xlabel("singular value index i")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$\sigma_i(\Delta W)$ (weight units, log)")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    cb = fig.colorbar(sm, ax=axes, fraction=0.03, pad=0.02)
    cb.set_label("layer")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, out)


def weight_stats(adapter: str | Path, out_dir: str | Path | None = None, base: str | Path | None = None,
                 base_weights: bool | str = "auto", allow_pickle: bool = False, top_k: int = 10,
                 plots: bool = True) -> dict[str, Any]:
    """Per-module norms, spectra and ranks of an adapter; writes ``weights.json``, ``weights.csv`` and
    ``weights_heatmaps.png`` / ``weights_spectra.png`` into ``out_dir`` (default CHECKPOINT/analysis).

    ``base_weights``: ``True`` needs the base model (error if missing), ``False`` skips the relative norm,
    ``"auto"`` uses it when it can be found (the reason is recorded when not).
    """
    af = read_adapter(adapter, allow_pickle)
    out = Path(out_dir) if out_dir is not None else af.path / "analysis"
    bw, base_note, base_path = None, None, None
    if base_weights:
        try:
            base_path = base_model_path(af, base)
            bw = BaseWeights(base_path)
        except LorankError as e:
            if base_weights is True:
                raise
            base_note = f"relative norms skipped: {e}"
    rows = module_stats(af, bw)
    result: dict[str, Any] = {
        "kind": "weights", "adapter": str(af.path), "base_model": af.meta.get("base_model"),
        # the projections' naming scheme (Gemma 3 names its blocks as Llama does), not the model family
        "family": af.family, "variant": af.variant,
        "base": base_path, "base_note": base_note, "num_layers": af.num_layers,
        "scaling_rule": _SCALING_RULES.get(af.variant, "alpha/r"),
        "summary": summarize(rows, top_k), "modules": rows,
    }
    if af.variant == "dora":
        result["dora_note"] = ("norms, spectra and ranks describe the low-rank direction update s*B@A; "
                               "dora_fro is ||W' - W||_F of the merged DoRA weight (needs the base)")
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / "weights.json"), "csv": str(write_csv(out / "weights.csv", rows, CSV_COLUMNS))}
    if plots:
        name = f"{af.path.parent.name}/{af.path.name}"
        files["heatmaps"] = str(plot_heatmaps(rows, af, out / "weights_heatmaps.png",
                                              f"LoRA weight statistics: {name}"))
        files["spectra"] = str(plot_spectra(rows, af, out / "weights_spectra.png",
                                            f"Singular values of each LoRA delta: {name}"))
    result["files"] = files
    atomic_write_json(out / "weights.json", result)
    return result
