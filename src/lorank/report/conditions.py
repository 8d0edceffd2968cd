"""The study's conditions as a reader would rather look at them than read: for the findings a grid decides (1: the
checkpoint curve, 2: the ranks, 3: MHA vs MLP, 5: MLP-only's recovered share), each condition's mean nDCG@10 with
its seeds as dots and a 95% CI (queries and seeds resampled: the hierarchical bootstrap of the findings), dev and
test side by side; and the table of every condition's seed spread (``conditions.json`` + the report's table).

Everything here is read from the study folder's TREC runs through the findings' per-query views
(:mod:`lorank.report.findings_section`), so the figures show exactly the numbers the verdicts were decided on."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorank.evaluation.stats import Side, boot_means, common_queries, percentile_ci
from lorank.plotting import pyplot, save_figure
from lorank.report.findings_model import PerQuery, rounded
from lorank.report.findings_rules import (_condition, _rank_arms, _seed_label, _siblings, condition_key,
                                          final_side)

N_BOOT = 2000
COMPONENT_ORDER = ("mha", "mlp", "all")
ROLE_COLOURS = {"dev": "#1f77b4", "test": "#d62728"}


@dataclass
class ConditionStat:
    """One condition on one view: its seeds' means over the queries they share, their mean, and its 95% CI."""

    label: str
    role: str
    sets: str
    n_seeds: int
    n_queries: int
    mean: float
    ci95: tuple[float, float]
    seed_means: dict[str, float] = field(default_factory=dict)
    sd: float | None = None
    spread: float | None = None  # max - min of the seed means

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(mean=rounded(self.mean), ci95=[rounded(x) for x in self.ci95], sd=rounded(self.sd),
                 spread=rounded(self.spread), seed_means={k: rounded(v) for k, v in self.seed_means.items()})
        return d


def side_stat(label: str, side: Side, pq: PerQuery, key: str) -> ConditionStat | None:
    """The statistics of one condition (`side`: seed -> qid -> nDCG@10) on the view `pq`; None without data."""
    qids = common_queries(side) if side else []
    if not qids:
        return None
    seeds = {s: float(np.mean([sc[q] for q in qids])) for s, sc in side.items()}
    vals = list(seeds.values())
    boots = boot_means([side], qids, N_BOOT, key)[:, 0]
    return ConditionStat(label, pq.role, "+".join(pq.labels), len(side), len(qids), float(np.mean(vals)),
                         percentile_ci(boots), seeds, float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                         max(vals) - min(vals) if len(vals) > 1 else None)


def bm25_stat(pq: PerQuery) -> ConditionStat | None:
    return side_stat("BM25", {"first stage": pq.bm25}, pq, f"bm25|{pq.eval_set}") if pq.bm25 else None


def rank_groups(runs: dict[str, dict[str, Any]], ref: str) -> dict[str, list[str]]:
    """Finding 2's conditions: 'r=1', ... per alpha arm (the arm named when there are several)."""
    arms = _rank_arms(runs, ref)
    out: dict[str, list[str]] = {}
    for policy, by_rank in arms.items():
        for rank in sorted(by_rank):
            out[f"r={rank}" + (f" [{policy}]" if len(arms) > 1 else "")] = by_rank[rank]
    return out


def component_groups(runs: dict[str, dict[str, Any]], ref: str) -> dict[str, list[str]]:
    """Finding 3's (and 5's) conditions: MHA-only, MLP-only and all projections, at the reference's other axes."""
    sib = _siblings(runs, ref, "components") if ref in runs else {}
    return {name: sib[name] for name in COMPONENT_ORDER if name in sib}


def group_stats(groups: dict[str, list[str]], pq: PerQuery, runs: dict[str, dict[str, Any]], tag: str
                ) -> list[ConditionStat]:
    out = [side_stat(label, final_side(pq, runs, rids), pq, f"{tag}|{label}|{pq.eval_set}")
           for label, rids in groups.items()]
    return [s for s in out if s is not None]


def all_condition_stats(runs: dict[str, dict[str, Any]], views: list[PerQuery]) -> list[ConditionStat]:
    """Every condition of the grid (runs equal in all axes but the seed) on every view: the seed-spread table."""
    conds: dict[tuple, list[str]] = {}
    for rid, ax in runs.items():
        conds.setdefault(condition_key(ax), []).append(rid)
    out = []
    for rids in conds.values():
        rids = _condition(runs, rids[0])
        label = condition_label(runs[rids[0]])
        for pq in views:
            out += group_stats({label: rids}, pq, runs, "cond")
    return out


def condition_label(ax: dict[str, Any]) -> str:
    """A condition's short name: 'r8-all', 'r32-all [scale]', ..."""
    label = f"r{ax.get('rank')}-{ax.get('components')}"
    if ax.get("alpha_policy") not in (None, "fixed"):
        label += f" [{ax['alpha_policy']}]"
    for k in ("model", "projections", "layers", "variant"):
        v = ax.get(k)
        if k == "model" or v in (None, "", "lora", "all"):
            continue
        label += f" {k}={v}"
    return label


def recovered_fraction(groups: dict[str, list[str]], pq: PerQuery, runs: dict[str, dict[str, Any]]
                       ) -> dict[str, Any] | None:
    """Finding 5 on one view: (MLP-only - BM25) / (all - BM25) with its bootstrap 95% CI."""
    if not {"mlp", "all"} <= set(groups) or not pq.bm25:
        return None
    mlp, full = final_side(pq, runs, groups["mlp"]), final_side(pq, runs, groups["all"])
    base = {"first stage": pq.bm25}
    qids = common_queries(mlp, full, base) if mlp and full else []
    if not qids:
        return None
    b = boot_means([mlp, full, base], qids, N_BOOT, f"recovered|{pq.eval_set}")
    means = [float(np.mean([np.mean([sc[q] for q in qids]) for sc in side.values()])) for side in (mlp, full, base)]
    gain = means[1] - means[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = (b[:, 0] - b[:, 2]) / (b[:, 1] - b[:, 2])
    return {"role": pq.role, "sets": "+".join(pq.labels), "fraction": (means[0] - means[2]) / gain if gain else math.nan,
            "ci95": percentile_ci(frac), "n_queries": len(qids)}


# ------------------------------------------------------------------------------------------------------ figures
def _panel(ax: Any, stats: list[ConditionStat], bm25: ConditionStat | None, title: str) -> None:
    colour = ROLE_COLOURS.get(stats[0].role if stats else "dev", "#555555")
    for i, s in enumerate(stats):
        seeds = list(s.seed_means.values())
        offs = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else [0.0]
        ax.scatter([i + o for o in offs], seeds, s=18, color="#888888", zorder=3,
                   label="a seed's mean" if i == 0 else None)
        ax.errorbar([i], [s.mean], yerr=[[s.mean - s.ci95[0]], [s.ci95[1] - s.mean]], fmt="o", color=colour, ms=7,
                    capsize=5, lw=2, zorder=4, label="mean, 95% CI (queries and seeds)" if i == 0 else None)
        ax.annotate(f"{s.mean:.3f}\n({s.n_seeds} seed{'s' if s.n_seeds != 1 else ''})", (i, s.ci95[1]),
                    xytext=(0, 4), textcoords="offset points", ha="center", va="bottom", fontsize=7.5)
    if bm25 is not None:
        # each panel's own first stage (dev and test differ): its value on the line, the legend names it once
        ax.axhline(bm25.mean, color="#555555", ls="--", lw=1, label="BM25 (the panel's queries)")
        ax.annotate(f"BM25 {bm25.mean:.3f}", (1.0, bm25.mean), xycoords=("axes fraction", "data"), xytext=(-3, 3),
                    textcoords="offset points", ha="right", va="bottom", fontsize=7, color="#555555")
    ax.set_xticks(range(len(stats)), [s.label for s in stats])
    ax.set_xlim(-0.6, len(stats) - 0.4)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def conditions_figure(panels: list[tuple[list[ConditionStat], ConditionStat | None, str]], title: str,
                      out: Path) -> Path:
    """One panel per view (dev, test), the conditions on the x axis, a shared nDCG@10 axis."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 0.6, 4.0), sharey=True, squeeze=False)
    lows, highs = [], []
    for ax, (stats, bm25, sub) in zip(axes[0], panels):
        _panel(ax, stats, bm25, sub)
        lows += [s.ci95[0] for s in stats] + [min(s.seed_means.values()) for s in stats] + ([bm25.mean] if bm25 else [])
        highs += [s.ci95[1] for s in stats]
    if lows and highs:
        pad = 0.1 * (max(highs) - min(lows) or 0.1)
        axes[0][0].set_ylim(min(lows) - pad, max(highs) + 2.2 * pad)
    axes[0][0].set_ylabel("nDCG@10")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.legend(handles, labels, fontsize=7.5, loc="lower center", ncol=len(labels), frameon=False)
    return save_figure(fig, out)


def recovered_figure(points: list[dict[str, Any]], line: float, out: Path) -> Path:
    """Finding 5: MLP-only's recovered share of the full adapter's gain over BM25 per view, with the declared line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    for i, p in enumerate(points):
        lo, hi = p["ci95"]
        ax.errorbar([i], [p["fraction"]], yerr=[[p["fraction"] - lo], [hi - p["fraction"]]], fmt="o", ms=7, capsize=5,
                    lw=2, color=ROLE_COLOURS.get(p["role"], "#555555"))
        ax.annotate(f"{p['fraction']:.0%}\n95% CI [{lo:.0%}, {hi:.0%}]", (i, p["fraction"]), xytext=(10, 0),
                    textcoords="offset points", ha="left", va="center", fontsize=7.5)
    ax.axhline(line, color="crimson", ls="--", lw=1, label=f"declared line {line:.0%}")
    ax.axhline(1.0, color="#555555", ls=":", lw=1, label="all of the gain")
    ax.set_xticks(range(len(points)), [f"{p['role']} ({p['sets']})" for p in points])
    ax.set_xlim(-0.6, len(points) - 0.4)
    ax.set_ylabel("(MLP-only - BM25) / (all - BM25)")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Finding 5: MLP-only's share of the gain over BM25 (95% CI)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


def _top(depth: int | None, sep: str, before: bool = False) -> str:
    """"BM25 top-N" joined by `sep` (after it, or before it) for a legend: the depth a figure's points were
    reranked at; "" when not known."""
    if not depth:
        return ""
    return f"{sep}BM25 top-{depth}" if before else f"BM25 top-{depth}{sep}"


def curve_figure(runs: dict[str, dict[str, Any]], ref: str, views: list[PerQuery], out: Path) -> Path | None:
    """Finding 1: the reference condition's dense dev curve per seed (thin) and its mean (thick), with every
    saved checkpoint's mean and 95% CI per view (dev: chosen on; test: scored once training had finished)."""
    rids = _condition(runs, ref)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8.4, 3.8))
    drawn = False
    dev = next((v for v in views if v.curve), None)
    if dev is not None:
        series = {r: dev.curve.get(r) or {} for r in rids}
        for r, pts in series.items():
            if pts:
                xs = sorted(pts)
                ax.plot(xs, [np.mean(list(pts[x].values())) for x in xs], color="#9ecae1", lw=1)
        shared = sorted(set.intersection(*(set(p) for p in series.values() if p))) if any(series.values()) else []
        if shared:
            label = f"dev curve ({_top(dev.curve_depth, ', ')}{len(rids)} seeds; thin: one seed)"
            ax.plot(shared, [np.mean([np.mean(list(series[r][x].values())) for r in rids if series[r]]) for x in shared],
                    color=ROLE_COLOURS["dev"], lw=2, label=label)
            drawn = True
    for k, pq in enumerate(views):
        steps = sorted(set.intersection(*(set(pq.checkpoints.get(r) or {}) for r in rids))) if rids else []
        for j, st in enumerate(steps):
            side = {_seed_label(runs, r): pq.checkpoints[r][st] for r in rids}
            s = side_stat(f"step {st}", side, pq, f"curve|{pq.eval_set}|{st}")
            if s is None:
                continue
            ax.errorbar([st + (k - 0.5) * 12], [s.mean], yerr=[[s.mean - s.ci95[0]], [s.ci95[1] - s.mean]], fmt="s",
                        ms=6, capsize=4, color=ROLE_COLOURS.get(pq.role, "#555555"),
                        label=f"{pq.role} checkpoint ({'+'.join(pq.labels)}{_top(pq.depth, ', ', before=True)}), "
                        "95% CI" if j == 0 else None)
            drawn = True
        if pq.bm25:
            ax.axhline(float(np.mean(list(pq.bm25.values()))), color=ROLE_COLOURS.get(pq.role, "#555555"), ls="--",
                       lw=0.8, alpha=0.7, label=f"BM25 ({pq.role})")
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("training step")
    ax.set_ylabel("nDCG@10")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_title(f"Finding 1: quality across checkpoints ({condition_label(runs[ref])})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, out)


def write_condition_figures(runs: dict[str, dict[str, Any]], ref: str, views: list[PerQuery], out_dir: Path,
                            recover_line: float = 0.90) -> dict[str, Any]:
    """The figures of findings 1, 2, 3 and 5 and the seed-spread table for `views` (dev first, then test), into
    `out_dir`; returns ``{"figures": {finding: png}, "conditions": [...], "recovered": [...]}`` (JSON-ready)."""
    out_dir = Path(out_dir)
    figures: dict[str, str] = {}
    if ref not in runs or not views:
        return {"figures": figures, "conditions": [], "recovered": []}
    for n, (groups, title) in {2: (rank_groups(runs, ref), "Finding 2: the LoRA ranks"),
                               3: (component_groups(runs, ref), "Finding 3: MHA-only, MLP-only and all projections"),
                               }.items():
        if len(groups) < 2:
            continue
        panels = [(group_stats(groups, pq, runs, f"f{n}"), bm25_stat(pq),
                   f"{pq.role}: {'+'.join(pq.labels)}{_top(pq.depth, ', ', before=True)}") for pq in views]
        panels = [p for p in panels if p[0]]
        if panels:
            figures[str(n)] = str(conditions_figure(panels, f"{title} (final checkpoint)", out_dir /
                                                   f"finding{n}_conditions.png"))
    curve = curve_figure(runs, ref, views, out_dir / "finding1_curve.png")
    if curve is not None:
        figures["1"] = str(curve)
    comps = component_groups(runs, ref)
    recovered = [r for r in (recovered_fraction(comps, pq, runs) for pq in views) if r is not None]
    if recovered:
        figures["5"] = str(recovered_figure(recovered, recover_line, out_dir / "finding5_recovered.png"))
    stats = all_condition_stats(runs, views)
    return {"figures": dict(sorted(figures.items())), "conditions": [s.to_dict() for s in stats],
            "recovered": [{**r, "fraction": rounded(r["fraction"]), "ci95": [rounded(x) for x in r["ci95"]]}
                          for r in recovered]}
