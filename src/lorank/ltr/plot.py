"""The importance-by-layer figure of ``lorank ltr``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lorank.plotting import pyplot, save_figure

_GROUP_COLORS = {"bm25": "tab:gray", "score": "tab:red", "mlp": "tab:blue", "mha": "tab:orange", "other": "tab:olive"}


def plot_row(result: dict[str, Any]) -> dict[str, Any] | None:
    """The LTR row whose importance is drawn: the one with the most latent columns (LTR(all) by default)."""
    rows = [r for r in result["rows"] if r["kind"] == "ltr" and r["importance"]["by_layer"]]
    return max(rows, key=lambda r: (r["features"], r["row"] == "LTR(all)")) if rows else None


def plot_importance(result: dict[str, Any], out: Path) -> Path | None:
    """Left: gain fraction per layer, stacked by projection; right: gain fraction per feature group, and the
    test nDCG@10 of every row. None when no LTR row used latent features."""
    row = plot_row(result)
    if row is None:
        return None
    plt = pyplot()
    imp = row["importance"]
    layers = sorted(int(k) for k in imp["by_layer"])
    projs = list(imp["by_projection"])
    cmap = plt.get_cmap("tab10")
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [3.2, 1, 1.4]},
                                       constrained_layout=True)
    bottom = [0.0] * len(layers)
    for i, p in enumerate(projs):
        vals = [imp["by_layer"][str(layer)].get(p, 0.0) for layer in layers]
        ax.bar(layers, vals, bottom=bottom, color=cmap(i % 10), label=p, width=0.8)
        bottom = [b + v for b, v in zip(bottom, vals)]
    top = max(bottom, default=0.0)
    ax.set_ylim(0, max(0.05, top * 1.1))
    if top <= 0:
        ax.text(0.5, 0.5, "no split used a latent feature", transform=ax.transAxes, ha="center", color="0.4")
    ax.set_xlabel("decoder layer")
    ax.set_ylabel("fraction of the total split gain")
    ax.set_title(f"{row['row']}: gain of the latent LoRA features (A x and ||A x||) by layer", fontsize=10)
    ax.set_xticks(layers if len(layers) <= 32 else layers[::2])
    ax.legend(fontsize=8, title="projection", title_fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    groups = imp["by_group"]
    names = list(groups)
    ax2.bar(names, [groups[n] for n in names], color=[_GROUP_COLORS.get(n, "tab:purple") for n in names])
    ax2.set_title("gain by feature group", fontsize=10)
    ax2.set_ylim(0, 1.1)
    ax2.grid(axis="y", alpha=0.3)
    for i, n in enumerate(names):
        ax2.text(i, groups[n] + 0.01, f"{groups[n]:.2f}", ha="center", fontsize=8)
    rows = [r for r in result["rows"] if "ndcg_cut_10" in r]
    ax3.barh([r["row"] for r in rows][::-1], [r["ndcg_cut_10"] for r in rows][::-1],
             color=["tab:gray" if r["kind"] == "column" else "tab:green" for r in rows][::-1])
    for i, r in enumerate(rows[::-1]):
        sig = "†" if (r.get("vs_BM25") or {}).get("ndcg_cut_10", {}).get("significant") else ""
        ax3.text(r["ndcg_cut_10"] + 0.005, i, f"{r['ndcg_cut_10']:.3f}{sig}", va="center", fontsize=8)
    ax3.set_xlim(0, min(1.15, max(r["ndcg_cut_10"] for r in rows) * 1.25 + 0.02))
    ax3.set_xlabel("test nDCG@10 († Holm p<0.05 vs BM25)")
    ax3.set_title(f"{result.get('test_set') or 'test'}: {result['test']['judged_queries']} queries", fontsize=10)
    fig.suptitle(f"LambdaMART on latent LoRA features: train {result.get('train_set')}, test "
                 f"{result.get('test_set')}; importance of {row['row']} ({row['features']} features)", fontsize=11)
    return save_figure(fig, out)
