"""DyLoRA's view: its rank curve (the nDCG@10 of a DyLoRA adapter's first k components, sweep ``rank-prefix``) beside
the study's separately trained ranks and its plain LoRA's rank truncation, each point with its query-bootstrap CI
(``lorank analyze compare-views dylora``; :func:`compare_dylora`)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lorank.ablate.run import run_file_stem
from lorank.data import resolve_eval_set
from lorank.data.roles import role_of
from lorank.data.sources import eval_label
from lorank.errors import ConfigError
from lorank.evaluation.stats import boot_means, percentile_ci
from lorank.layout.adapter import peft_config_file
from lorank.layout.run import TREC_CHECKPOINT, trec_runs
from lorank.layout.study import run_dir
from lorank.plotting import pyplot, save_figure
from lorank.report.findings_data import per_query
from lorank.report.view_compare.common import (MEASURE, N_BOOT, PREFIX, TRUNCATION, PerQuery, StudyView, _keyed,
                                               _read_json, _read_run, _study_record, _write, read_study, sweep_of)
from lorank.study.store import finished_runs


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
