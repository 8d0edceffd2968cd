"""Report figures: labelled axes, units, legends (drawn and saved through :mod:`lorank.plotting`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lorank.plotting import METRIC_LABELS, pyplot, save_figure


def checkpoint_curves(curves: dict[str, list[tuple[int, float, float]]], baseline: dict[str, float] | None,
                      title: str, out: Path) -> Path:
    """One line per run: nDCG@10 and MRR@10 against training step; dashed line = first stage (BM25)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, idx, key in ((axes[0], 1, "ndcg_cut_10"), (axes[1], 2, "recip_rank_10")):
        for label, pts in curves.items():
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[idx] for p in pts], marker="o", ms=4, label=label)
        if baseline and key in baseline:
            _baseline_line(ax, baseline[key])
        _step_axes(ax, METRIC_LABELS[key])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", fontsize=8)
    fig.suptitle(title)
    _place_baseline_labels(fig)
    return save_figure(fig, out)


def pooled_curves(curves: dict[str, list[tuple[int, float]]], baseline: float | None, title: str, out: Path,
                  measure: str = "ndcg_cut_10") -> Path:
    """One panel: one line per run (step, mean over the pooled queries), the pooled first stage dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2), constrained_layout=True)
    for label, pts in curves.items():
        pts = sorted(pts)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, label=label)
    if baseline is not None:
        _baseline_line(ax, baseline)
    _step_axes(ax, METRIC_LABELS.get(measure, measure))
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.suptitle(title)
    _place_baseline_labels(fig)
    return save_figure(fig, out)


_BASELINE_GID = "baseline-label"
# where a baseline's label may go, in order of preference: (x in axes fraction, ha, y offset in points, va)
_LABEL_SPOTS = ((0.99, "right", 2, "bottom"), (0.01, "left", 2, "bottom"), (0.99, "right", -2, "top"),
                (0.01, "left", -2, "top"))


def _baseline_line(ax: Any, value: float) -> None:
    """The first stage as a dashed line, its value written on the line (each panel its own measure); where on
    the line is chosen once the figure is laid out (:func:`_place_baseline_labels`)."""
    ax.axhline(value, color="black", ls="--", lw=1, label="BM25 (first stage)")
    label = ax.annotate(f"BM25 {value:.3f}", xy=(0, value), xycoords=("axes fraction", "data"), xytext=(0, 0),
                        textcoords="offset points", fontsize=8, gid=_BASELINE_GID)
    _put(label, _LABEL_SPOTS[0])


def _place_baseline_labels(fig: Any) -> None:
    """Move each baseline label to the first spot on its line that no curve crosses (found on the study's
    MRR@10 panel: a run's last point at 0.710 drawn over "BM25 0.702" at the line's right end) and that stays
    inside the axes (a line at the top of the panel takes its label below it); where every spot is crossed,
    the one crossed least."""
    import numpy as np

    fig.draw_without_rendering()  # the constrained layout is final only once drawn (save_figure renders pixels)
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        frame = ax.get_window_extent(renderer)
        pts = [np.empty((0, 2))]
        for ln in ax.get_lines():  # each curve in display space: its markers and points along its segments
            if ln.get_linestyle() == "--" or not len(ln.get_xdata()):
                continue
            xy = ax.transData.transform(np.column_stack([ln.get_xdata(), ln.get_ydata()]).astype(float))
            pts += [xy] + [a + (b - a) * np.linspace(0, 1, 25)[:, None] for a, b in zip(xy, xy[1:])]
        pts = np.concatenate(pts)

        def crossings(label: Any, spot: tuple[float, str, int, str]) -> int:
            _put(label, spot)
            box = label.get_window_extent(renderer).padded(4)
            if box.y1 > frame.y1 or box.y0 < frame.y0:  # on the axes' frame (a line at the top or bottom)
                return len(pts) + 1
            return int(np.sum((pts[:, 0] >= box.x0) & (pts[:, 0] <= box.x1)
                              & (pts[:, 1] >= box.y0) & (pts[:, 1] <= box.y1)))

        for label in (t for t in ax.texts if t.get_gid() == _BASELINE_GID):
            _put(label, next((s for s in _LABEL_SPOTS if crossings(label, s) == 0), None)
                 or min(_LABEL_SPOTS, key=lambda s: crossings(label, s)))


def _put(label: Any, spot: tuple[float, str, int, str]) -> None:
    x, ha, dy, va = spot
    label.xy = (x, label.xy[1])
    label.set_position((0, dy))
    label.set_ha(ha)
    label.set_va(va)


def _step_axes(ax: Any, ylabel: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("training step (optimizer updates)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} by checkpoint")
    ax.grid(alpha=0.3)


def bar_table(rows: list[dict[str, Any]], label_key: str, title: str, out: Path, ref_value: float | None = None,
              base_value: float | None = None, measure: str = "ndcg_cut_10") -> Path:
    """Bars of one measure per row; * marks a significant difference vs the reference."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.5, 0.9 * len(rows) + 2.5), 3.8), constrained_layout=True)
    vals = [r[measure] for r in rows]
    colors = ["tab:green" if r.get("is_reference") else "tab:blue" for r in rows]
    ax.bar(range(len(rows)), vals, color=colors)
    ax.set_xticks(range(len(rows)), [str(r[label_key]) for r in rows])
    for i, r in enumerate(rows):
        ax.text(i, r[measure] / 2, f"{r[measure]:.3f}", ha="center", va="center", color="white", fontsize=9,
                fontweight="bold")
        if r.get("significant"):
            ax.text(i, r[measure] + 0.01, "*", ha="center", color="crimson", fontsize=15)
    if base_value is not None:
        ax.axhline(base_value, color="black", ls="--", lw=1, label=f"BM25 ({base_value:.3f})")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_ylabel(METRIC_LABELS.get(measure, measure))
    ax.set_ylim(0, max(vals + [base_value or 0]) * 1.2 if vals else 1)
    ax.set_title(title + "\n(green = reference; * = p < 0.05 vs reference, paired t-test, Holm)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out)
