"""The seed papers' views set against the trained adapters (issue 44): AdaLoRA's rank allocation against the dissected
adapter's ablation importance, DyLoRA's rank curve against the grid's separately trained ranks and a plain LoRA's
rank truncation, ICR's per-layer profile against the adapter's layer importance on a normalised depth axis
(``lorank analyze compare-views adalora | dylora | icr``; Python: :func:`compare_adalora`, :func:`compare_dylora`,
:func:`compare_icr`). Each writes a JSON with every point and its source, and a PNG.

It sits in ``report/`` because it reads a finished study (its plan, its ablations' TREC runs, its checkpoints' runs)
through :mod:`lorank.report.families`' readers.

What is random, and what the CIs resample. The importance side comes from per-query values: the nDCG@10 of each
query under each ablation configuration (``ablations/<subject>/<i>/runs/<sweep>/<config>.run``), pooled over the
chosen role's sets (queries keyed ``set:qid``). A correlation's 95% CI is a percentile bootstrap over those queries:
each draw resamples the queries (one draw for every configuration: paired), recomputes every unit's importance from
the resampled means, then Spearman's rho against the view's side (a percentile interval; since each resample adds
the queries' noise to the importances once more, it leans toward 0, and a point estimate near +-1, e.g. a view that
orders the units exactly as the observed importances do, can lie above it). An AdaLoRA allocation (one trained
adapter) is one fixed object and is held fixed; an ICR profile's per-layer nDCG@10 is resampled with the same query
draw (paired by set:qid) when the profile keeps per-query values (queries on one side only are left out of both and
counted), and held fixed when it does not (an older profile; the JSON says which). Units (layers,
windows, projections) are not independent draws (neighbouring layers share their inputs), so the rho's own p-value
is not reported as a test; the query bootstrap is the interval. ``n_units`` is the number of units correlated.

Layer l of an n-layer model sits at depth (l + 0.5) / n on the normalised axis (0: the input, 1: the output); a
window L{lo}-{hi} at :func:`lorank.report.families.depth`'s centre."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy import stats as sps

from lorank.ablate.run import run_file_stem
from lorank.ablate.windows import config_window
from lorank.atomic import atomic_write_json
from lorank.data import load_run, resolve_eval_set
from lorank.data.roles import role_of, set_key
from lorank.data.sources import eval_label
from lorank.errors import ConfigError
from lorank.evaluation.stats import boot_means, percentile_ci
from lorank.layout.adapter import peft_config_file
from lorank.layout.run import TREC_CHECKPOINT, trec_runs
from lorank.layout.study import run_dir
from lorank.plotting import pyplot, save_figure
from lorank.report.families import Family, _study, depth, family_of
from lorank.report.findings_data import per_query
from lorank.study.store import finished_ablations, finished_runs

MEASURE, N_BOOT = "ndcg_cut_10", 2000
LOO, WINDOWS, PROJECTIONS, TRUNCATION, PREFIX = (
    "layers-leave-one-out", "layer-windows", "projections", "rank-truncation", "rank-prefix")
BOOTSTRAP_NOTE = ("95% CI: percentile bootstrap over the queries (paired across configurations): each draw "
                  "recomputes every unit's importance from the resampled per-query nDCG@10, then rho; the view's side "
                  "is one fixed object, held fixed. A resampled importance carries the queries' noise once more, so "
                  "the resampled rhos lean toward 0: the interval can sit below a point estimate near +-1")
ICR_BOOTSTRAP_NOTE = (
    "95% CI: percentile bootstrap over the queries (queries keyed set:qid): each draw resamples the queries once, "
    "recomputes every layer's (window's) importance from the resampled per-query nDCG@10 and, where the profile keeps "
    "per-query values (each pair's icr_side), every layer's ICR nDCG@10 from the same draw (paired; queries on one "
    "side only are left out of both and counted), then rho. A profile without per-query values (an older "
    "icr_profile.json) is held fixed. Each resample adds the queries' noise once more, so the resampled rhos lean "
    "toward 0: the interval can sit below a point estimate near +-1")
UNITS_NOTE = ("units (layers, windows, projections) are not independent draws: rho describes one adapter's profile; "
              "its interval is the query bootstrap, and no p-value over units is reported")
PerQuery = dict[str, float]  # "set:qid" -> nDCG@10


def _read_json(path: str | Path, what: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such file ({what})")
    return json.loads(p.read_text(encoding="utf-8"))


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    if not path.is_file():
        raise ConfigError(f"{path}: no such TREC run (the per-query values need it: ablate with write_runs)")
    return {q: {e.docid: float(e.score) for e in es} for q, es in load_run(path).items()}


def _keyed(label: str, values: dict[str, float]) -> PerQuery:
    return {f"{label}:{q}": v for q, v in values.items()}


# -- a study's per-query side --------------------------------------------------------------------------------------

@dataclass
class StudyView:
    """A finished study read for these comparisons: its family (model, layers, subject) and the dissected adapter's
    per-query ablation values on one role's sets."""

    family: Family
    plan: Any
    role: str
    sets: list[str]  # eval labels pooled
    #: sweep -> config -> "set:qid" -> nDCG@10
    ablations: dict[str, dict[str, PerQuery]] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        full = next((c.get("full") for c in self.ablations.values() if c.get("full")), {})
        return len(full)


def _role(plan: Any, study_dir: Path, subject: str, role: str | None, sets: list[str] | None) -> str:
    found = [role_of(d.get("eval_set", "")) for _, _, d in finished_ablations(plan, study_dir, subject)
             if not sets or set_key(d.get("eval_set", "")) in {set_key(s) for s in sets}]
    if role:
        return role
    for r in ("test", "dev", "ood"):
        if r in found:
            return r
    raise ConfigError(f"{study_dir}: no finished ablation of {subject}"
                      + (f" on {', '.join(sets)}" if sets else "") + ": nothing to compare with")


def read_study(study_dir: str | Path, role: str | None = None, sets: list[str] | None = None) -> StudyView:
    """A finished study's dissected adapter, per query: every ablation configuration's nDCG@10 on the sets of `role`
    (default: test when its ablations ran on a test set, else dev), or on `sets` only (names or labels)."""
    study_dir = Path(study_dir)
    plan, findings = _study(study_dir)
    fam = family_of(study_dir, plan, findings)
    subject = fam.subject
    role = _role(plan, study_dir, subject, role, sets)
    keys = {set_key(s) for s in sets} if sets else None
    out: dict[str, dict[str, PerQuery]] = {}
    labels: list[str] = []
    for step, d, data in finished_ablations(plan, study_dir, subject):
        name = data.get("eval_set") or step.payload["eval"]
        if role_of(name) != role or (keys is not None and set_key(name) not in keys):
            continue
        label = eval_label(name)
        labels.append(label)
        rs = resolve_eval_set(step.payload["eval"], plan.spec.data_root).subset(step.payload.get("max_queries"))
        for sweep, entry in data.get("sweeps", {}).items():
            for row in entry["rows"]:
                f = d / "runs" / sweep.replace("/", "_") / f"{run_file_stem(row['config'])}.run"
                out.setdefault(sweep, {}).setdefault(row["config"], {}).update(
                    _keyed(label, per_query(rs.qrels, _read_run(f))))
    if keys is not None and {set_key(s) for s in labels} != keys:
        missing = sorted(keys - {set_key(s) for s in labels})
        raise ConfigError(f"{study_dir}: the dissected adapter ({subject}) has no ablation on {', '.join(missing)}")
    return StudyView(fam, plan, role, list(dict.fromkeys(labels)), out)


def sweep_of(view: StudyView, sweep: str) -> dict[str, PerQuery]:
    rows = view.ablations.get(sweep)
    if not rows:
        raise ConfigError(f"{view.family.study_dir}: the {sweep} sweep of {view.family.subject} did not run on "
                          f"{'+'.join(view.sets) or view.role} ({view.role}): nothing to compare with")
    return rows


# -- Spearman's rho with its query-bootstrap CI --------------------------------------------------------------------

def _rank_rows(a: np.ndarray) -> np.ndarray:
    return sps.rankdata(a, axis=-1)


def _rho_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of x with each row of y (NaN where a row is constant): x a fixed vector, or a matrix of as many
    rows as y (row i with row i: both sides resampled)."""
    if x.ndim == 2:
        rx, ry = _rank_rows(x), _rank_rows(y)
        rx, ry = rx - rx.mean(axis=1, keepdims=True), ry - ry.mean(axis=1, keepdims=True)
        den = np.sqrt((rx ** 2).sum(axis=1) * (ry ** 2).sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, (rx * ry).sum(axis=1) / np.where(den > 0, den, 1.0), np.nan)
    rx, ry = _rank_rows(x), _rank_rows(y)
    rx, ry = rx - rx.mean(), ry - ry.mean(axis=1, keepdims=True)
    den = np.sqrt((rx ** 2).sum() * (ry ** 2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ry @ rx) / np.where(den > 0, den, 1.0), np.nan)


@dataclass
class Resampled:
    """A view's side with per-query values, resampled with the adapter's side: `configs` (name -> "set:qid" ->
    value) and `of`, which maps name -> mean(s) (scalars or arrays of draws) to one value per unit."""

    configs: dict[str, PerQuery]
    of: Callable[[dict[str, np.ndarray]], np.ndarray]


def _common(configs: dict[str, PerQuery]) -> set[str]:
    return set.intersection(*(set(v) for v in configs.values()))


def correlate(x: list[float] | Resampled, configs: dict[str, PerQuery],
              importance: Callable[[dict[str, np.ndarray]], np.ndarray], key: str, n_boot: int = N_BOOT,
              seed: int = 0) -> dict[str, Any]:
    """rho(x, importance(means)) over units, and its 95% CI from `n_boot` query resamples. `configs`: every
    configuration the importance needs (config -> per-query values); `importance` maps config -> mean(s) (scalars
    or arrays of draws) to one value per unit, in the order of `x`. `x`: the view's values, held fixed, or a
    :class:`Resampled` side, drawn with the same queries as the adapter's (paired by "set:qid"; the queries of one
    side only are left out of both and counted: ``queries_view_only``, ``queries_adapter_only``); its point values
    (over the paired queries) are returned as ``x``."""
    adapter = _common(configs)
    view = _common(x.configs) if isinstance(x, Resampled) else adapter
    qids = sorted(adapter & view)
    if len(qids) < 2:
        raise ConfigError(f"{key}: fewer than two queries common to every configuration"
                          + (" and the view's per-query values" if isinstance(x, Resampled) else ""))
    names = list(configs)
    xnames = list(x.configs) if isinstance(x, Resampled) else []
    point = np.asarray(importance({n: np.mean([configs[n][q] for q in qids]) for n in names}), dtype=float)
    xv = (np.asarray(x.of({n: np.mean([x.configs[n][q] for q in qids]) for n in xnames}), dtype=float)
          if isinstance(x, Resampled) else np.asarray(x, dtype=float))
    if xv.shape != point.shape:
        raise ConfigError(f"{key}: {xv.size} units on the view's side, {point.size} on the adapter's")
    r = sps.spearmanr(xv, point)
    rho = float(r.statistic) if np.isfinite(r.statistic) else math.nan
    draws = boot_means([{"run": configs[n]} for n in names] + [{"run": x.configs[n]} for n in xnames], qids,
                       n_boot, key, seed)  # one query draw for both sides: paired
    imp = np.asarray(importance({n: draws[:, j] for j, n in enumerate(names)}), dtype=float).T  # n_boot x units
    xd = (np.asarray(x.of({n: draws[:, len(names) + j] for j, n in enumerate(xnames)}), dtype=float).T
          if isinstance(x, Resampled) else xv)
    rhos = _rho_rows(xd, imp)
    lo, hi = percentile_ci(rhos)
    out = {"rho": None if math.isnan(rho) else round(rho, 4),
           "ci95": [None if math.isnan(v) else round(v, 4) for v in (lo, hi)], "n_units": int(xv.size),
           "n_queries": len(qids), "n_boot": n_boot, "n_boot_defined": int(np.isfinite(rhos).sum()),
           "importance": [round(float(v), 6) for v in point]}
    if isinstance(x, Resampled):
        out.update(view_side="resampled with the queries", queries_view_only=len(view - adapter),
                   queries_adapter_only=len(adapter - view), x=[float(v) for v in xv])
    return out


def _rho_text(c: dict[str, Any]) -> str:
    rho, (lo, hi) = c["rho"], c["ci95"]
    if rho is None:
        return f"rho undefined (n={c['n_units']})"
    return f"rho {rho:+.2f} [{lo:+.2f}, {hi:+.2f}], n={c['n_units']}"


def _where(view: StudyView) -> str:
    return f"{view.role}: {'+'.join(view.sets)}, {view.n_queries} queries"


def _layer_index(config: str, prefix: str = "without L") -> int | None:
    return int(config.removeprefix(prefix)) if config.startswith(prefix) and config[len(prefix):].isdigit() else None


def loo_layers(view: StudyView) -> list[int]:
    """The layers a leave-one-layer-out sweep left out, in order; an error when one lies outside the model."""
    rows = sweep_of(view, LOO)
    layers = sorted(i for c in rows if (i := _layer_index(c)) is not None)
    if layers and layers[-1] >= view.family.n_layers:
        raise ConfigError(f"{view.family.study_dir}: leave-one-layer-out names L{layers[-1]}, but the model has "
                          f"{view.family.n_layers} layers")
    return layers


def layer_depth(layer: int, n_layers: int) -> float:
    """Layer `layer` of an `n_layers` model on the normalised depth axis: (layer + 0.5) / n_layers."""
    return round((layer + 0.5) / n_layers, 4)


def loo_correlation(view: StudyView, values: dict[int, float], key: str, n_boot: int, seed: int,
                    per_query: dict[int, PerQuery] | None = None) -> dict[str, Any]:
    """rho between a per-layer value of the view (layer -> value) and each layer's leave-one-layer-out drop (full -
    without L{l}: how much nDCG@10 the adapter loses without that layer's LoRA). With `per_query` (layer -> "set:qid"
    -> value) the view's side is resampled with the same queries (:class:`Resampled`), and each unit's ``x`` is its
    value over the paired queries."""
    rows = sweep_of(view, LOO)
    layers = [layer for layer in loo_layers(view) if layer in values]
    missing = sorted(set(values) - set(loo_layers(view)))
    if len(layers) < 3:
        raise ConfigError(f"{key}: fewer than three layers in both the view and the leave-one-layer-out sweep")
    configs = {"full": rows["full"], **{f"without L{i}": rows[f"without L{i}"] for i in layers}}
    x: list[float] | Resampled = [values[i] for i in layers]
    if per_query is not None:
        x = Resampled({f"L{i}": per_query[i] for i in layers}, lambda m: np.array([m[f"L{i}"] for i in layers]))
    c = correlate(x, configs, lambda m: np.array([m["full"] - m[f"without L{i}"] for i in layers]), key, n_boot, seed)
    xs = c.pop("x", [values[i] for i in layers])
    n = view.family.n_layers
    c["units"] = [{"unit": f"L{i}", "layer": i, "depth": layer_depth(i, n), "x": xx, "y": y}
                  for i, xx, y in zip(layers, xs, c.pop("importance"))]
    if missing:
        c["not_in_sweep"] = [f"L{i}" for i in missing]
    return c


def _window_x(per_layer: dict[int, Any], span: tuple[int, int], how: str) -> Any:
    """The view's per-layer values (scalars or arrays of draws) aggregated over a window's layers (a layer the view
    lacks counts 0)."""
    vals = np.broadcast_arrays(*[np.asarray(per_layer.get(i, 0.0), dtype=float) for i in range(span[0], span[1] + 1)])
    return (np.sum if how == "sum" else np.mean)(np.stack(vals), axis=0)


def window_correlation(view: StudyView, per_layer: dict[int, float], how: str, key: str, n_boot: int,
                       seed: int, per_query: dict[int, PerQuery] | None = None) -> dict[str, Any]:
    """rho between the view's per-layer value aggregated over each "only window" configuration's layers (`how`:
    sum or mean) and that window's nDCG@10 (LoRA kept on those layers only). `per_query`: as
    :func:`loo_correlation`'s."""
    rows = sweep_of(view, WINDOWS)
    wins = sorted(((c, span) for c in rows if (span := config_window(c))), key=lambda t: t[1])
    agg = np.sum if how == "sum" else np.mean
    xs = [float(agg([per_layer.get(i, 0.0) for i in range(lo, hi + 1)])) for _, (lo, hi) in wins]
    x: list[float] | Resampled = xs
    if per_query is not None:
        x = Resampled({f"L{i}": v for i, v in per_query.items()}, lambda m: np.array(
            [_window_x({i: m[f"L{i}"] for i in per_query}, span, how) for _, span in wins]))
    c = correlate(x, {w: rows[w] for w, _ in wins}, lambda m: np.array([m[w] for w, _ in wins]), key, n_boot, seed)
    xs = c.pop("x", xs)
    c["units"] = [{"unit": w.removeprefix("only "), "layers": list(span), **depth(*span, view.family.n_layers),
                   "x": xx, "y": y} for (w, span), xx, y in zip(wins, xs, c.pop("importance"))]
    return c


# -- AdaLoRA ---------------------------------------------------------------------------------------------------------

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


def _study_record(view: StudyView) -> dict[str, Any]:
    f = view.family
    return {"study_dir": str(f.study_dir), "study": f.name, "model": f.model, "n_layers": f.n_layers,
            "n_layers_from": f.n_layers_from, "subject": f.subject, "role": view.role, "sets": view.sets,
            "n_queries": view.n_queries, "where": _where(view)}


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


def _write(res: dict[str, Any], out: Path, name: str, plot: Callable[[dict[str, Any], Path], Path]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    res["figure"] = str(plot(res, out / f"{name}.png"))
    atomic_write_json(out / f"{name}.json", res)
    return res


# -- DyLoRA ----------------------------------------------------------------------------------------------------------

def _rank_of(config: str, prefix: str) -> int | None:
    rest = config.removeprefix(prefix)
    return int(rest) if config.startswith(prefix) and rest.isdigit() else None


def _mean_ci(side: dict[str, PerQuery], key: str, n_boot: int, seed: int) -> tuple[float, list[float | None], int]:
    """(the mean over queries of the per-query mean over replicates, its 95% CI: queries resampled and, with several
    replicates, the replicates within them (:func:`lorank.evaluation.stats.boot_means`), the number of queries)."""
    qids = sorted(set.intersection(*(set(v) for v in side.values())))
    mean = float(np.mean([[v[q] for q in qids] for v in side.values()]))
    lo, hi = percentile_ci(boot_means([side], qids, n_boot, key, seed)[:, 0])
    return mean, [round(lo, 4), round(hi, 4)], len(qids)


def _point(series: str, rank: int, side: dict[str, PerQuery], sets: list[str], source: str, key: str,
           n_boot: int, seed: int) -> dict[str, Any]:
    mean, ci, n = _mean_ci(side, key, n_boot, seed)
    point = {"series": series, "rank": rank, "ndcg": round(mean, 4), "ci95": ci, "role": "/".join(
        dict.fromkeys(role_of(s) for s in sets)), "sets": sets, "n_queries": n, "source": source}
    if len(side) > 1 or series.startswith("trained"):
        point["replicates"] = {k: round(float(np.mean(list(v.values()))), 4) for k, v in side.items()}
    return point


def _sweep_file(path: str | Path) -> tuple[Path, dict[str, Any]]:
    p = Path(path)
    f = p / "ablations.json" if p.is_dir() or not p.suffix else p
    data = _read_json(f, "a rank-prefix sweep: the ablations.json `lorank ablate --sweep rank-prefix` wrote")
    if PREFIX not in data.get("sweeps", {}):
        raise ConfigError(f"{f}: no {PREFIX} sweep in it (sweeps: {', '.join(data.get('sweeps', {})) or 'none'})")
    return f.parent, data


def _adapter_rank(data: dict[str, Any]) -> int | None:
    """The rank of the adapter a sweep dissected, from its adapter_config.json when the folder is here."""
    f = peft_config_file(data["adapter"]) if data.get("adapter") else None
    if f is not None and f.is_file():
        return int(json.loads(f.read_text(encoding="utf-8")).get("r") or 0) or None
    return None


def dylora_points(sweeps: list[str | Path], full_rank: int | None, n_boot: int, seed: int,
                  data_root: str | None = None) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(DyLoRA's prefix points, the sets its sweeps ran on, notes): every ``prefix k`` and the full adapter at its
    rank (`full_rank`, else its adapter_config.json), per query pooled over the sweeps' sets."""
    per: dict[str, PerQuery] = {}
    labels, notes, sources, rank = [], [], [], full_rank
    for path in sweeps:
        d, data = _sweep_file(path)
        label = eval_label(data["eval_set"])
        labels.append(label)
        sources.append(str(d / "runs" / PREFIX))
        rs = resolve_eval_set(data["eval_set"], data_root)
        rank = rank or _adapter_rank(data)
        for row in data["sweeps"][PREFIX]["rows"]:
            run = _read_run(d / "runs" / PREFIX / f"{run_file_stem(row['config'])}.run")
            per.setdefault(row["config"], {}).update(
                _keyed(label, per_query({q: rs.qrels[q] for q in run if q in rs.qrels}, run)))
    if rank is None:
        notes.append("the DyLoRA adapter's own rank is unknown (its folder is not here; give --full-rank): "
                     "its full-rank point is left out")
    ks = {c: k for c in per if (k := _rank_of(c, "prefix ")) is not None}
    if rank is not None:
        ks["full"] = rank
    pts = [_point("DyLoRA: first k components (rank-prefix)", k, {"run": per[c]}, labels, "; ".join(sources),
                  f"dylora/{c}", n_boot, seed) for c, k in sorted(ks.items(), key=lambda t: t[1])]
    return pts, labels, notes


def truncation_points(view: StudyView, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """The dissected adapter's rank truncation (top-k singular directions, its own scale), full at its rank."""
    rows = sweep_of(view, TRUNCATION)
    subject = view.family.subject
    ext = view.plan.adapters.get(subject.removeprefix("adapter:")) if subject.startswith("adapter:") else None
    full = int((ext.axes if ext is not None else view.plan.run(subject).axes)["rank"])
    ks = {c: k for c in rows if (k := _rank_of(c, "rank ")) is not None} | {"full": full}
    src = f"{view.family.study_dir}/ablations/{subject.replace(':', '-')}/*/runs/{TRUNCATION}"
    return [_point(f"plain LoRA r{full} truncated to its top k directions ({subject})", k, {"run": rows[c]},
                   view.sets, src, f"truncation/{c}", n_boot, seed) for c, k in sorted(ks.items(), key=lambda t: t[1])]


def grid_points(view: StudyView, n_boot: int, seed: int) -> list[dict[str, Any]]:
    """The study's trained ranks (plain LoRA on every projection and layer), each at its final checkpoint, per seed
    (replicates) and per query on the same sets; one series per alpha policy."""
    plan, study_dir = view.plan, view.family.study_dir
    by: dict[tuple[str, int], dict[str, PerQuery]] = {}
    srcs: dict[tuple[str, int], list[str]] = {}
    finished = finished_runs(plan, study_dir)  # a run still in training has no final checkpoint yet
    for r in plan.runs:
        a = r.axes
        plain = (a.get("components") == "all" and (a.get("variant") or "lora") == "lora"
                 and a.get("projections") in (None, "all") and str(a.get("layers", "all")) == "all")
        if r.run_id not in finished or not plain:
            continue
        mq = r.train_config.get("eval", {}).get("max_queries")
        side: PerQuery = {}
        for label in view.sets:
            files = trec_runs(run_dir(study_dir, r.run_id), TREC_CHECKPOINT, label)
            if not files:
                raise ConfigError(f"{run_dir(study_dir, r.run_id)}: no checkpoint run on {label} (runs_trec/"
                                  f"{TREC_CHECKPOINT}-N.{label}.run): the trained rank {a['rank']} has no per-query "
                                  "values there")
            f = files[max(files)]
            rs = resolve_eval_set(label, plan.spec.data_root).subset(mq)
            side.update(_keyed(label, per_query(rs.qrels, _read_run(f))))
            srcs.setdefault((a.get("alpha_policy") or "fixed", int(a["rank"])), []).append(str(f))
        by.setdefault((a.get("alpha_policy") or "fixed", int(a["rank"])), {})[f"s{a.get('seed')}"] = side
    return [_point(f"trained at rank r (the study's grid, alpha {policy})", k, side, view.sets, "; ".join(srcs[(policy, k)]),
                   f"grid/{policy}/{k}", n_boot, seed) for (policy, k), side in sorted(by.items())]


def _plot_dylora(res: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    series = list(dict.fromkeys(p["series"] for p in res["points"]))
    for i, s in enumerate(series):
        pts = [p for p in res["points"] if p["series"] == s]
        x = np.array([p["rank"] for p in pts], dtype=float) * (1.0 + 0.04 * (i - 1))  # a nudge: CIs side by side
        y = [p["ndcg"] for p in pts]
        err = [[p["ndcg"] - p["ci95"][0] for p in pts], [p["ci95"][1] - p["ndcg"] for p in pts]]
        ax.errorbar(x, y, yerr=err, fmt="o-", color=f"C{i}", capsize=3, ms=4, lw=1.2,
                    label=f"{s} [{pts[0]['role']}: {'+'.join(pts[0]['sets'])}, n={pts[0]['n_queries']}]")
        for xx, p in zip(x, pts):
            reps = list(p.get("replicates", {}).values())
            if len(reps) > 1:
                ax.scatter([xx] * len(reps), reps, s=10, color=f"C{i}", alpha=0.5, marker="x")
    ranks = sorted({p["rank"] for p in res["points"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks, [str(r) for r in ranks])
    ax.set_xlabel("rank (log2 axis)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("DyLoRA's rank prefixes vs separately trained ranks vs a plain LoRA's truncation\n"
                 "(bars: 95% CI, query bootstrap; x: single seeds)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return save_figure(fig, path)


def compare_dylora(sweeps: list[str | Path], study: str | Path, out: str | Path, *, full_rank: int | None = None,
                   n_boot: int = N_BOOT, seed: int = 0, command: str | None = None) -> dict[str, Any]:
    """The Python twin of ``lorank analyze compare-views dylora``: DyLoRA's rank-prefix sweep(s) (an ablations.json
    or its folder, one per set) beside the study's trained ranks and its dissected adapter's rank truncation, all on
    the sweeps' sets; writes ``OUT/dylora_rank_curve.json`` and ``.png``; returns the JSON's content."""
    if not sweeps:
        raise ConfigError("no rank-prefix sweep given: name the ablations.json of `lorank ablate --sweep rank-prefix`")
    dy, labels, notes = dylora_points(sweeps, full_rank, n_boot, seed)
    view = read_study(study, sets=labels)
    pts = dy + grid_points(view, n_boot, seed) + truncation_points(view, n_boot, seed)
    res = {"kind": "view_compare_dylora", "command": command, "sweeps": [str(s) for s in sweeps],
           "study": _study_record(view), "measure": MEASURE, "sets": labels,
           "ci": "95% percentile bootstrap over the queries (and, for the trained ranks with several seeds, the seeds "
                 "within them: a hierarchical bootstrap)", "notes": notes, "points": pts}
    return _write(res, Path(out), "dylora_rank_curve", _plot_dylora)


# -- ICR -------------------------------------------------------------------------------------------------------------

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
