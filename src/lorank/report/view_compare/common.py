"""What the three views (:mod:`.adalora`, :mod:`.dylora`, :mod:`.icr`) share: a finished study read per query
(:class:`StudyView`, :func:`read_study`, :func:`sweep_of`), Spearman's rho with its query-bootstrap CI
(:func:`correlate`, :class:`Resampled`) and the notes that describe it, the per-layer and per-window correlations on
the normalised depth axis (:func:`loo_correlation`, :func:`window_correlation`, :func:`layer_depth`), and the study
record and JSON + PNG writer every view's output ends with. The package's docstring says what the CIs resample."""
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
from lorank.report.families import Family, _study, depth, family_of
from lorank.report.findings_data import per_query
from lorank.study.store import finished_ablations

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


# -- what every view writes: the study it read, its JSON and PNG -----------------------------------------------------

def _where(view: StudyView) -> str:
    return f"{view.role}: {'+'.join(view.sets)}, {view.n_queries} queries"


def _study_record(view: StudyView) -> dict[str, Any]:
    f = view.family
    return {"study_dir": str(f.study_dir), "study": f.name, "model": f.model, "n_layers": f.n_layers,
            "n_layers_from": f.n_layers_from, "subject": f.subject, "role": view.role, "sets": view.sets,
            "n_queries": view.n_queries, "where": _where(view)}


def _write(res: dict[str, Any], out: Path, name: str, plot: Callable[[dict[str, Any], Path], Path]) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    res["figure"] = str(plot(res, out / f"{name}.png"))
    atomic_write_json(out / f"{name}.json", res)
    return res
