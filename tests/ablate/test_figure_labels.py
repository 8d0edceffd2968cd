"""Figures a reader can read at the sizes the study presets produce: the ablation plot of 14 projection
configurations (7 projections removed / kept alone, as in SmolLM2) and of 30 layers, with every bar label
inside the axes and no two labels overlapping (they used to be cut to "0% re")."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402

from lorank.ablate.run import sweep_figure  # noqa: E402

PROJS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
FULL, NONE = 0.366, 0.301


def _row(name: str, group: str, v: float, sig: bool = False) -> dict:
    return {"config": name, "group": group, "ndcg_cut_10": v, "significant_ndcg_cut_10": sig,
            "recovered_ndcg_cut_10": round(100 * (v - NONE) / (FULL - NONE), 1)}


def _rows(names: list[tuple[str, str]]) -> list[dict]:
    body = [_row(n, g, 0.30 + 0.07 * ((i * 7) % 11) / 10, sig=i % 5 == 2) for i, (n, g) in enumerate(names)]
    return [_row("full", "reference", FULL), _row("none", "reference", NONE)] + body


def _label_boxes(fig):
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    ax = fig.axes[0]
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in ax.texts]
    plt.close(fig)
    return ax.get_window_extent(r), boxes


@pytest.mark.parametrize("sweep,names", [
    ("projections", [(f"without {p}", "removed") for p in PROJS] + [(f"only {p}", "kept alone") for p in PROJS]),
    ("components", [("mha-only", "components"), ("mlp-only", "components")]),
    ("layer-windows", [(f"only L{a}-{a + 10}", "layer-windows") for a in (0, 5, 10, 15, 19)]),
    ("scale", [(f"x{f:g}", "scale") for f in (0, 0.25, 0.5, 0.75, 1.25, 1.5)]),
])
def test_bar_labels_fit_inside_the_axes_and_do_not_overlap(sweep, names):
    axes_box, boxes = _label_boxes(sweep_figure(sweep, _rows(names)))
    assert len(boxes) == len(names)
    for b in boxes:
        assert axes_box.x0 - 1 <= b.x0 and b.x1 <= axes_box.x1 + 1 and axes_box.y0 <= b.y0 and b.y1 <= axes_box.y1, \
            (sweep, b, axes_box)
    for a, b in zip(boxes, boxes[1:]):
        assert a.x1 <= b.x0 + 0.5, f"{sweep}: neighbouring labels overlap ({a} vs {b})"


def test_a_30_layer_sweep_draws_every_layer_on_its_axis():
    fig = sweep_figure("layers-leave-one-out", _rows([(f"without L{i}", "layers-leave-one-out") for i in range(30)]))
    ax = fig.axes[0]
    xs = list(ax.lines[0].get_xdata())
    assert xs == list(range(30))
    ticks = [int(t) for t in ax.get_xticks()]
    assert ticks[0] == 0 and ticks[-1] >= 28 and len(ticks) == 15
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_label_that_would_sit_on_the_full_adapters_line_goes_inside_its_bar():
    """Found on the reference adapter's components plot: MHA-only at 0.631 under the full adapter's 0.652 line,
    its label drawn across the dashed line. It goes just inside the bar; the bar far below keeps its label above."""
    rows = [{**_row("full", "reference", 0.652)}, {**_row("none", "reference", 0.224)},
            _row("mha-only", "components", 0.631, sig=True), _row("mlp-only", "components", 0.507, sig=True)]
    fig = sweep_figure("components", rows)
    fig.canvas.draw()
    ax = fig.axes[0]
    r = fig.canvas.get_renderer()
    line_y = ax.transData.transform((0, 0.652))[1]
    boxes = {t.get_text().split()[0]: t.get_window_extent(r) for t in ax.texts}
    import matplotlib.pyplot as plt

    plt.close(fig)
    near, far = boxes["0.631"], boxes["0.507"]
    assert near.y1 < line_y  # below the line, inside the bar
    assert near.y1 <= ax.transData.transform((0, 0.631))[1] + 0.5
    assert far.y0 >= ax.transData.transform((0, 0.507))[1]  # above its bar


def test_the_full_adapters_line_stays_in_view_when_every_bar_is_below_it():
    """Found on the study's layer-windows plot: all five windows below the full adapter's 0.574, the y axis ended
    at 0.55 and the line was not drawn."""
    full, none = 0.574, 0.186
    rows = [_row("full", "reference", full), _row("none", "reference", none)] + [
        {**_row(f"only L{a}-{a + 10}", "layer-windows", v, sig=True),
         "recovered_ndcg_cut_10": round(100 * (v - none) / (full - none), 1)}
        for a, v in zip((0, 5, 10, 15, 19), (0.233, 0.382, 0.490, 0.352, 0.304))]
    fig = sweep_figure("layer-windows", rows, "DL20, 54 queries x top-50")
    ax = fig.axes[0]
    assert ax.get_ylim()[1] > 0.574 * 1.02
    assert "DL20, 54 queries x top-50" in ax.get_title()
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_each_checkpoint_panel_writes_its_own_bm25_value(tmp_path, monkeypatch):
    """The nDCG@10 and MRR@10 panels share one legend: the BM25 value belongs on each panel's line (the legend
    once read "BM25 (0.506)" beside an MRR line at 0.702)."""
    import lorank.report.figures as figures

    kept = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out: kept.setdefault("fig", fig) and out)
    figures.checkpoint_curves({"r8": [(250, 0.48, 0.59), (500, 0.56, 0.64)]},
                              {"ndcg_cut_10": 0.506, "recip_rank_10": 0.702}, "t", tmp_path / "c.png")
    fig = kept["fig"]
    nd, mrr = fig.axes[:2]
    assert [t.get_text() for t in nd.texts] == ["BM25 0.506"] and [t.get_text() for t in mrr.texts] == ["BM25 0.702"]
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert legend == ["r8", "BM25 (first stage)"]
    import matplotlib.pyplot as plt

    plt.close(fig)


def _crossed(fig, ax) -> int:
    """How many of the axes' curve points (markers) fall inside its BM25 label's box, in pixels."""
    import numpy as np

    r = fig.canvas.get_renderer()
    (label,) = [t for t in ax.texts if t.get_text().startswith("BM25")]
    box = label.get_window_extent(r)
    n = 0
    for ln in ax.get_lines():
        if ln.get_linestyle() == "--":
            continue
        for x, y in ax.transData.transform(np.column_stack([ln.get_xdata(), ln.get_ydata()])):
            n += box.x0 - 3 <= x <= box.x1 + 3 and box.y0 - 3 <= y <= box.y1 + 3
    return n


def test_the_bm25_label_moves_off_a_curve_that_ends_on_it(tmp_path, monkeypatch):
    """Found in the study's report: r8-all's last MRR@10 point (0.710) drawn over "BM25 0.702" at the right end
    of the line (here 0.705). The label goes to a spot on its line that no curve crosses; the same label still, once per panel."""
    import lorank.report.figures as figures

    kept = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out: kept.setdefault("fig", fig) and out)
    curves = {"r8-all": [(250, 0.48, 0.61), (500, 0.56, 0.66), (750, 0.57, 0.69), (1000, 0.587, 0.705)],
              "r8-mha": [(250, 0.51, 0.64), (500, 0.58, 0.70), (750, 0.605, 0.72)]}
    figures.checkpoint_curves(curves, {"ndcg_cut_10": 0.506, "recip_rank_10": 0.702}, "t", tmp_path / "c.png")
    fig = kept["fig"]
    nd, mrr = fig.axes[:2]
    assert [t.get_text() for t in mrr.texts] == ["BM25 0.702"]
    assert _crossed(fig, mrr) == 0 and _crossed(fig, nd) == 0
    # the experiment that shows the check can fail: the label forced back to the right end is crossed
    (label,) = mrr.texts
    label.set_ha("right")
    label.set_va("bottom")
    label.set_position((0, 2))
    label.xy = (0.99, 0.702)
    fig.canvas.draw()
    assert _crossed(fig, mrr) > 0
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_a_bm25_line_above_every_curve_writes_its_label_below_it_inside_the_axes(tmp_path, monkeypatch):
    """Found in the demo's report: BM25 above both runs sits at the top of the panel, its label written on the
    axes' frame above it."""
    import lorank.report.figures as figures

    kept = {}
    monkeypatch.setattr(figures, "save_figure", lambda fig, out: kept.setdefault("fig", fig) and out)
    figures.checkpoint_curves({"r1": [(10, 0.320, 0.50), (20, 0.312, 0.45)], "r8": [(10, 0.317, 0.48), (20, 0.314, 0.45)]},
                              {"ndcg_cut_10": 0.371, "recip_rank_10": 0.705}, "t", tmp_path / "c.png")
    fig = kept["fig"]
    r = fig.canvas.get_renderer()
    for ax in fig.axes[:2]:
        (label,) = ax.texts
        box, frame = label.get_window_extent(r), ax.get_window_extent(r)
        assert frame.y0 <= box.y0 and box.y1 <= frame.y1 - 1, (box, frame)
        assert _crossed(fig, ax) == 0
    import matplotlib.pyplot as plt

    plt.close(fig)
