"""Subspace similarity of two adapters (or two checkpoints of one run), module by module.

Normalised Grassmann similarity (Hu et al. 2021, LoRA, Sec. 7.2):

    phi(i, j) = || U_A[:, :i]^T U_B[:, :j] ||_F^2 / min(i, j)        in [0, 1]

with U the top singular vectors of each delta ``s * B @ A``: right ones (the input/row space, what A
reads; the paper's choice) or left ones (the output/column space, what B writes). For two independent
random subspaces of dimensions i and j in R^d the expectation is max(i, j) / d, reported alongside.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lorank.analyze.common import AdapterFiles, base_hub_id, read_adapter
from lorank.analyze.weights import grid, heatmap, module_stats
from lorank.atomic import atomic_write_json
from lorank.errors import ConfigError
from lorank.lora.factors import LoraModule, low_rank_svd
from lorank.models.arch import arch_for, known_model_types
from lorank.plotting import pyplot, save_figure

SIDES = ("right", "left")


def subspace(mod: LoraModule, side: str) -> torch.Tensor:
    if side not in SIDES:
        raise ConfigError(f"unknown side {side!r}: use 'right' (input space, A) or 'left' (output space, B)")
    svd = low_rank_svd(mod)
    return svd.V if side == "right" else svd.U


def phi_grid(Ua: torch.Tensor, Ub: torch.Tensor) -> np.ndarray:
    """phi(i, j) for i = 1..ra, j = 1..rb (row i-1, column j-1)."""
    M = (Ua.T.double() @ Ub.double()) ** 2          # (ra, rb): squared cosines between singular vectors
    cum = M.cumsum(0).cumsum(1).numpy()             # cum[i-1, j-1] = ||Ua[:, :i]^T Ub[:, :j]||_F^2
    ra, rb = cum.shape
    mins = np.minimum.outer(np.arange(1, ra + 1), np.arange(1, rb + 1))
    return cum / mins


def random_baseline(i: int, j: int, d: int) -> float:
    """E[phi(i, j)] for independent uniformly random subspaces of dimensions i and j of R^d."""
    return max(i, j) / d


def delta_cosine(a: LoraModule, b: LoraModule) -> float:
    """<dW_a, dW_b>_F / (||dW_a|| ||dW_b||), from the factors: tr(A_a^T B_a^T B_b A_b)."""
    Aa, Ba, Ab, Bb = a.A.double(), a.B.double(), b.A.double(), b.B.double()
    inner = a.scaling * b.scaling * float(((Ba.T @ Bb) * (Aa @ Ab.T)).sum())
    na = a.scaling * float(((Ba.T @ Ba) * (Aa @ Aa.T)).sum()) ** 0.5
    nb = b.scaling * float(((Bb.T @ Bb) * (Ab @ Ab.T)).sum()) ** 0.5
    return inner / (na * nb) if na > 0 and nb > 0 else float("nan")


def parse_module(spec: str, af: AdapterFiles) -> tuple[int, str]:
    """``L12.q_proj`` / ``12.q_proj`` / ``12.attn.q`` -> (12, 'q_proj')."""
    m = re.fullmatch(r"\s*L?(\d+)[.:/ ](.+?)\s*", spec)
    if not m:
        raise ConfigError(f"bad module {spec!r}: use LAYER.PROJECTION, e.g. L12.q_proj or 12.attn.q")
    layer, name = int(m.group(1)), m.group(2)
    arch = next(arch_for(t) for t in known_model_types() if arch_for(t).family == af.family)
    projs = arch.resolve_projection(name)
    key = (layer, projs[0])
    if key not in af.modules:
        raise ConfigError(f"{af.path} has no LoRA module at layer {layer} / {projs[0]}")
    return key


def delta_shape(mod: LoraModule) -> tuple[int, int]:
    """(out, in) of a module's delta ``B @ A``: the shape of the weight it adapts."""
    return int(mod.B.shape[0]), int(mod.A.shape[1])


def module_similarity(a: LoraModule, b: LoraModule, side: str) -> dict[str, Any]:
    # both sides, whatever `side`: delta_cosine reads both factors (a Gemma 3 and a Llama of one hidden size share
    # q_proj's input size, not its output size); compare_adapters' family check tells only projection naming schemes
    # apart, and Gemma 3 names its projections as Llama does
    if delta_shape(a) != delta_shape(b):
        (oa, ia), (ob, ib) = delta_shape(a), delta_shape(b)
        raise ConfigError(f"{a.name}: the two adapters' deltas differ in shape ({oa}x{ia} vs {ob}x{ib}): adapters "
                          "of different models cannot be compared")
    Ua, Ub = subspace(a, side), subspace(b, side)
    g = phi_grid(Ua, Ub)
    d = int(Ua.shape[0])
    ra, rb = g.shape
    return {
        "module": a.name, "layer": a.layer, "projection": a.projection, "component": a.component,
        "rank_a": ra, "rank_b": rb, "dim": d,
        "phi_full": float(g[-1, -1]), "phi_top1": float(g[0, 0]),
        "random_full": random_baseline(ra, rb, d), "random_top1": random_baseline(1, 1, d),
        "delta_cosine": delta_cosine(a, b), "grid": g,
    }


def compare_adapters(a: str | Path, b: str | Path, out_dir: str | Path | None = None, side: str = "right",
                     module: str | None = None, allow_pickle: bool = False, plots: bool = True,
                     name: str = "compare") -> dict[str, Any]:
    """Module-by-module subspace similarity of adapters ``a`` and ``b``; writes ``{name}.json`` and
    ``{name}_heatmaps.png`` + ``{name}_grid.png`` (the full phi(i, j) grid of one module: ``module``,
    default the module with the largest delta in ``a``) into ``out_dir`` (default A/analysis)."""
    if side not in SIDES:
        raise ConfigError(f"unknown side {side!r}: use 'right' (input space, A) or 'left' (output space, B)")
    fa, fb = read_adapter(a, allow_pickle), read_adapter(b, allow_pickle)
    if fa.family != fb.family:
        raise ConfigError(f"cannot compare a {fa.family} adapter with a {fb.family} one")
    ha, hb = base_hub_id(fa), base_hub_id(fb)
    if ha and hb and ha != hb:  # two models can share every delta shape: their bases' names tell them apart
        raise ConfigError(f"{fa.path} was trained on {ha}, {fb.path} on {hb}: adapters of different models cannot be "
                          "compared")
    common = sorted(set(fa.modules) & set(fb.modules))
    # an AdaLoRA module pruned to rank 0 has no subspace to compare: left out and listed
    empty = [k for k in common if fa.modules[k].rank == 0 or fb.modules[k].rank == 0]
    common = [k for k in common if k not in empty]
    if not common:
        raise ConfigError(f"{fa.path} and {fb.path} share no LoRA module" + (
            f" of rank > 0 ({len(empty)} shared modules were pruned to rank 0)" if empty else ""))
    order = {p: i for i, p in enumerate(fa.projections)}
    common.sort(key=lambda k: (k[0], order.get(k[1], 99)))
    rows = [module_similarity(fa.modules[k], fb.modules[k], side) for k in common]
    if module:
        chosen = parse_module(module, fa)
        if chosen not in fb.modules:
            raise ConfigError(f"{fb.path} has no LoRA module {module}")
        if chosen in empty:
            raise ConfigError(f"{module} is pruned to rank 0 in one of the adapters (AdaLoRA): no subspace to show")
    else:
        norms = {(r["layer"], r["projection"]): r["fro"] for r in module_stats(fa)}
        chosen = max(common, key=lambda k: norms[k])
    sel = next(r for r in rows if (r["layer"], r["projection"]) == chosen)
    out = Path(out_dir) if out_dir is not None else fa.path / "analysis"
    name_a, name_b = _short(fa.path), _short(fb.path)
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    result: dict[str, Any] = {
        "kind": "compare", "adapter_a": str(fa.path), "adapter_b": str(fb.path), "side": side,
        "summary": {
            "modules": len(rows), "only_in_a": len(set(fa.modules) - set(fb.modules)),
            "only_in_b": len(set(fb.modules) - set(fa.modules)),
            "mean_phi_full": mean("phi_full"), "mean_phi_top1": mean("phi_top1"),
            "mean_random_full": mean("random_full"), "mean_random_top1": mean("random_top1"),
            "mean_delta_cosine": float(np.nanmean([r["delta_cosine"] for r in rows])),
            "by_component": {c: {"mean_phi_full": float(np.mean([r["phi_full"] for r in rows if r["component"] == c])),
                                 "mean_phi_top1": float(np.mean([r["phi_top1"] for r in rows if r["component"] == c]))}
                             for c in sorted({r["component"] for r in rows})},
        },
        "grid_module": {"module": sel["module"], "layer": sel["layer"], "projection": sel["projection"],
                        "dim": sel["dim"], "phi": sel["grid"].round(6).tolist(),
                        "random_expected": [[random_baseline(i, j, sel["dim"]) for j in range(1, sel["rank_b"] + 1)]
                                            for i in range(1, sel["rank_a"] + 1)]},
        "modules": [{k: v for k, v in r.items() if k != "grid"} for r in rows],
    }
    if empty:
        result["summary"]["rank_zero_skipped"] = [f"L{layer}.{proj}" for layer, proj in empty]
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": str(out / f"{name}.json")}
    if plots:
        files["heatmaps"] = str(plot_similarity_heatmaps(rows, fa, out / f"{name}_heatmaps.png",
                                                         f"{name_a} vs {name_b}", side))
        files["grid"] = str(plot_grid(sel, out / f"{name}_grid.png", name_a, name_b, side))
    result["files"] = files
    atomic_write_json(out / f"{name}.json", result)
    return result


def _short(p: Path) -> str:
    return f"{p.parent.name}/{p.name}"


def plot_similarity_heatmaps(rows: list[dict[str, Any]], af: AdapterFiles, out: Path, title: str, side: str) -> Path:
    plt = pyplot()
    layers = list(range(af.num_layers))
    projs = [p for p in af.projections if any(r["projection"] == p for r in rows)]
    n_mha = sum(1 for r in rows if r["component"] == "mha" and r["layer"] == rows[0]["layer"])
    r_a, r_b = rows[0]["rank_a"], rows[0]["rank_b"]
    rnd_full = float(np.mean([r["random_full"] for r in rows]))
    rnd_top = float(np.mean([r["random_top1"] for r in rows]))
    h = max(4.0, 0.16 * len(layers) + 2.2)
    fig, axes = plt.subplots(1, 3, figsize=(12.5, h), constrained_layout=True)
    heatmap(axes[0], fig, grid(rows, "phi_full", layers, projs), layers, projs,
            rf"$\phi({r_a},{r_b})$: whole rank-r subspaces" + f"\nrandom ≈ {rnd_full:.3f}",
            "normalised subspace similarity (0-1)", "viridis", 0.0, 1.0, n_mha)
    heatmap(axes[1], fig, grid(rows, "phi_top1", layers, projs), layers, projs,
            r"$\phi(1,1)$: top singular directions" + f"\nrandom ≈ {rnd_top:.4f}",
            "squared cosine (0-1)", "viridis", 0.0, 1.0, n_mha)
    heatmap(axes[2], fig, grid(rows, "delta_cosine", layers, projs), layers, projs,
            r"cosine of the deltas $\langle\Delta W_a,\Delta W_b\rangle_F$" + "\n(random ≈ 0)",
            "cosine similarity (-1 to 1)", "coolwarm", -1.0, 1.0, n_mha)
    side_txt = "right (input) singular vectors" if side == "right" else "left (output) singular vectors"
    fig.suptitle(f"Subspace similarity, {title}: {side_txt}", fontsize=11)
    return save_figure(fig, out)


def plot_grid(sel: dict[str, Any], out: Path, name_a: str, name_b: str, side: str) -> Path:
    plt = pyplot()
    g = sel["grid"]
    ra, rb = g.shape
    # Floors on the size keep the wrapped axis and colour-bar labels inside the figure when one adapter
    # has rank 1 (a one-row or one-column grid); aspect="auto" lets the cells fill the space.
    fig, ax = plt.subplots(figsize=(max(6.5, 1.0 + 0.55 * rb + 1.6), max(4.0, 1.2 + 0.5 * ra + 1.0)),
                           constrained_layout=True)
    im = ax.imshow(g, origin="upper", cmap="viridis", vmin=0, vmax=1, aspect="auto",
                   extent=(0.5, rb + 0.5, ra + 0.5, 0.5))
    if ra * rb <= 256:
        for i in range(ra):
            for j in range(rb):
                ax.text(j + 1, i + 1, f"{g[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if g[i, j] < 0.6 else "black")
    ax.set_xticks(range(1, rb + 1))
    ax.set_yticks(range(1, ra + 1))
    ax.set_xlabel(f"j: top-j singular directions of\n{name_b}")
    ax.set_ylabel(f"i: top-i directions of\n{name_a}")
    cb = fig.colorbar(im, ax=ax)
    cb.set_label(r"$\phi(i,j)$" + "\n(normalised subspace similarity, 0-1)")
    d = sel["dim"]
    ax.set_title(f"L{sel['layer']}.{sel['projection']} ({side} singular vectors, d = {d})\n"
                 rf"random subspaces: E$\phi$ = max(i,j)/d = {1 / d:.3f} ... {max(ra, rb) / d:.3f}", fontsize=10)
    return save_figure(fig, out)
