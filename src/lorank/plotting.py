"""Every figure lorank draws goes through here: pyplot on the Agg backend (matplotlib's default style), the one
resolution, the atomic PNG save, the metrics' axis labels and value labels that fit over any number of bars.

matplotlib is imported on the first figure, not with this module: training, ablation and analysis import it on
paths that often draw nothing, and matplotlib is heavy to import."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

from lorank.atomic import atomic_write_bytes

DPI = 110  # every PNG: the report's resolution (ablation, checkpoint and analysis figures had 120 and 130)
METRIC_LABELS = {"ndcg_cut_10": "nDCG@10", "recip_rank_10": "MRR@10 (rel ≥ 2)", "recall_100": "R@100", "map": "MAP"}
FONT_PT = 8.0
CHAR_WIDTH = 0.62  # average glyph width of the default sans-serif font, in units of the font size


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed: figures are only ever written to files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Render ``fig`` to PNG in memory at :data:`DPI`, close it, and write the file atomically (a reader never
    sees half a PNG, a crash leaves the old one). Returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def label_bars(ax: Any, heights: Sequence[float], texts: Sequence[str], significant: Sequence[bool] = (),
               avoid: Sequence[float] = ()) -> float:
    """Write each bar's label just above it (in crimson with a ``*`` when significant) and raise the y limit so
    that every label stays inside the axes. Labels are horizontal when the longest one fits the space of one
    bar, else vertical (14 projection bars: "0.366 (100%)" is wider than a bar). A label that would sit on one
    of the horizontal lines at the heights in ``avoid`` (the full adapter's line) goes just inside its bar's top;
    the y axis reaches above those lines too (a layer-windows plot whose bars were all below the full adapter had
    its line cut off).

    Returns the new top of the y axis."""
    n = len(heights)
    sig = list(significant) or [False] * n
    shown = [t + (" *" if s else "") for t, s in zip(texts, sig)]
    longest = max((len(t) for t in shown), default=0)
    fig = ax.get_figure()
    bar_space_pt = fig.get_size_inches()[0] * ax.get_position().width * 72 / max(n, 1)
    rotate = longest * FONT_PT * CHAR_WIDTH > 0.8 * bar_space_pt  # keep a gap between neighbours
    top = max(list(heights) + list(avoid) + [0.0])  # the full adapter's line stays in view above every bar
    axes_height_pt = fig.get_size_inches()[1] * ax.get_position().height * 72
    label_pt = (longest * FONT_PT * CHAR_WIDTH if rotate else FONT_PT * 1.4) + 6
    room = 1 / max(0.3, 1 - label_pt / axes_height_pt) + 0.06  # the label's share of the axis, plus a margin
    ylim = top * room if top > 0 else 1
    label_h = label_pt / axes_height_pt * ylim  # a label's height in data units
    for i, (h, text, s) in enumerate(zip(heights, shown, sig)):
        inside = any(h - 0.1 * label_h <= y <= h + label_h for y in avoid) and h > 1.5 * label_h
        ax.annotate(text, (i, h), xytext=(0, -3 if inside else 3), textcoords="offset points", ha="center",
                    va="top" if inside else "bottom", rotation=90 if rotate else 0, fontsize=FONT_PT,
                    color="crimson" if s else "black", fontweight="bold" if s else "normal",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.85})
    ax.set_ylim(0, ylim)
    return ylim
