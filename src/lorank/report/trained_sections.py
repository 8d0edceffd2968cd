"""The report sections about the study's trained runs: the overview, checkpoint curves, the final
checkpoints compared with the reference (by rank, by component trained), and retrained vs inference-time."""
from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from lorank.data import load_run, resolve_eval_set
from lorank.data.roles import role_of
from lorank.evaluation import compare, evaluate
from lorank.layout.run import TREC_CHECKPOINT, trec_runs
from lorank.layout.study import run_dir
from lorank.report.figures import bar_table, checkpoint_curves, pooled_curves
from lorank.report.context import ReportContext
from lorank.report.findings_data import ablation_subject
from lorank.report.findings_model import mean_of
from lorank.report.page import SIG, Section, fmt
from lorank.report.subjects import subject_text
from lorank.study.spec import _slug
from lorank.study.store import finished_ablations, finished_runs
from lorank.study.timing import time_rows


def overview_section(ctx: ReportContext, smoke: bool = False) -> Section:
    """The study in one paragraph (steps done, failed, pending), the time it took, and its first stage. ``smoke``: its training runs
    are smoke checks, so no run is named as the tables' reference."""
    spec, plan = ctx.spec, ctx.plan
    ov = Section("Study")
    steps = ctx.state.get("steps", {})
    n_ok = sum(1 for s in steps.values() if s["status"] in ("ok", "cached"))
    failed = {k: v for k, v in steps.items() if v["status"] in ("failed", "skipped")}
    stopped = {k: v for k, v in steps.items() if v["status"] == "interrupted"}
    waiting = [s for s in plan.steps if s.pending]
    ov.text = (f"<b>{html.escape(spec.name)}</b>: {html.escape(spec.description)}<br>"
               f"{len(plan.runs)} training runs, {len(plan.steps)} steps ({n_ok} done"
               + (f", <span class='bad'>{len(failed)} failed or skipped</span>" if failed else "")
               + (f", {len(stopped)} interrupted (resumable)" if stopped else "")
               + (f", {len(waiting)} pending: " + html.escape("; ".join(dict.fromkeys(w.pending for w in waiting)))
                  if waiting else "")
               + ("); the training runs are smoke checks" if smoke else
                  f"); reference run (the 'full adapter'): <code>{ctx.ref.run_id}</code>; main eval set: "
                  f"{ctx.main_set}; final checkpoints compared on {ctx.compare_label}")
               + f". Report generated {time.strftime('%Y-%m-%d %H:%M')}.")
    if failed:
        ov.tables.append(("Failed or skipped steps", ["step", "status", "detail"],
                          [[k, v["status"], v["detail"].splitlines()[0] if v["detail"] else ""]
                           for k, v in failed.items()]))
    if stopped:
        ov.tables.append(("Interrupted steps: stopped by a signal, resumed by running the study again",
                          ["step", "detail"], [[k, v["detail"].splitlines()[0] if v["detail"] else ""]
                                               for k, v in stopped.items()]))
    header, rows = time_rows(ctx.time)
    ov.tables.append(("Time the study took (time.json; by step: lorank study-time): CPU hours measured by each "
                      "step's call ledger, wall hours with pauses included; calls made before the ledger existed "
                      "apart, their wall time as the run files give it", header, rows))
    if ctx.first_stage_rows:
        ov.tables.append(("First stage (BM25) on the evaluated queries, with each set's role (dev: may choose; test: "
                          "reported only)", ["eval set", "role", "queries", "nDCG@10", "MRR@10"],
                          [[r["eval_set"], r.get("role") or role_of(r["eval_set"]), r["config"],
                            fmt(r.get("ndcg_cut_10")), fmt(r.get("recip_rank_10"))] for r in ctx.first_stage_rows]))
    return ov


def checkpoint_section(ctx: ReportContext, view: Any = None, smoke: bool = False) -> Section:
    """Per eval set: each run's checkpoints. With `view` (the findings' per-query numbers,
    :class:`lorank.report.findings_model.PerQuery`) pooled over several sets, also the pooled curve that finding 1
    is tested on. ``smoke``: the runs are smoke checks of training (the demo's), titled and labelled so."""
    plan, df = ctx.plan, ctx.results
    ev = Section("Checkpoint evolution", "nDCG@10 and MRR@10 of every checkpoint (last point = final adapter) of the "
                 "study's own training runs.")
    if smoke:
        ev = Section("Smoke check of training", "The study's own training runs are a smoke check: they show that "
                     "training, its checkpoints and their evaluation run end to end, not what training reaches (too "
                     "few steps and queries for that; nothing here is compared or dissected). nDCG@10 and MRR@10 of "
                     "every checkpoint.")
    ck = df[df["source"] == "checkpoint"] if len(df) else df
    for model in ctx.spec.models:
        for es in ctx.eval_sets:
            curves = {}
            for r in plan.runs:
                if r.model != model:
                    continue
                sub = ck[(ck["run_id"] == r.run_id) & (ck["eval_set"] == es)] if len(ck) else []
                if len(sub):
                    curves[_short(r, plan)] = [(int(a), float(b), float(c)) for a, b, c in
                                               zip(sub["step"], sub["ndcg_cut_10"], sub["recip_rank_10"])]
            if curves:
                role = role_of(es)
                png = checkpoint_curves(curves, ctx.first_stage.get(es),
                                                f"{_slug(model)}: checkpoints on {es} ({role})",
                                                ctx.out / f"curves_{_slug(model)}_{es}.png")
                ev.images.append((f"{_slug(model)}, {es} ({role})", png))
    if view is not None and len(view.labels) > 1:
        _pooled_curve(ctx, view, ev)
    if not ev.images:
        ev.text += " <span class='bad'>No checkpoint has been evaluated yet.</span>"
    return ev


def _pooled_curve(ctx: ReportContext, view: Any, ev: Section) -> None:
    """nDCG@10 by checkpoint over the pooled queries (a step counts only where every pooled query has its value:
    a checkpoint evaluated on some of the sets is left out and named); then the same for the dense cheap curve
    (``eval.curve``: every N steps at a shallower depth), where the runs have one."""
    label = "+".join(view.labels)
    everyone = set(view.bm25)
    for attr, title, stem in (
            ("checkpoints", f"checkpoints on {label} pooled ({len(everyone)} queries; the findings' view)"
                            + (f", BM25 top-{view.depth}" if view.depth else ""), f"curves_{label}"),
            ("curve", f"dense curve on {label} pooled ({len(everyone)} queries)"
                      + (f", BM25 top-{view.curve_depth}" if view.curve_depth else ""), f"curves_dense_{label}")):
        curves: dict[str, list[tuple[int, float]]] = {}
        partial = []
        for r in ctx.plan.runs:
            pts = []
            for step, scores in sorted(getattr(view, attr).get(r.run_id, {}).items()):
                if everyone and everyone <= set(scores):
                    pts.append((step, mean_of({q: scores[q] for q in everyone})))
                else:
                    partial.append(f"{_short(r, ctx.plan)} step {step}")
            if pts:
                curves[_short(r, ctx.plan)] = pts
        if not curves:
            if partial and attr == "curve":  # the dense curve scored on only some of the pooled sets: say so once
                ev.text += f" The dense curve covers only some of {label}: not drawn pooled."
            continue
        png = pooled_curves(curves, mean_of(view.bm25), title, ctx.out / f"{stem}.png")
        ev.images.append((f"{label} pooled" + (", dense curve" if attr == "curve" else ""), png))
        if partial:
            what = "pooled curve" if attr == "checkpoints" else "pooled dense curve"
            ev.text += (f" Left out of the {what}, evaluated on only some of {label}: "
                        + html.escape(", ".join(partial)) + ".")


def final_comparisons(ctx: ReportContext) -> dict[str, dict[str, Any]]:
    """run id -> final checkpoint's nDCG@10 / MRR@10 on the comparison set(s) (``ctx.compare_sets``: DL19 + DL20
    pooled where the spec's ``report.findings_sets`` says so, as the findings test them), with the paired test vs
    the reference. Several sets: each run's last checkpoint evaluated on all of them, their queries together. The
    pooled first stage goes into ``ctx.first_stage[ctx.compare_label]``."""
    sets = [s for s in ctx.compare_sets if s in ctx.set_names]
    if not sets:
        return {}
    plan, ref = ctx.plan, ctx.ref
    mq = ref.train_config.get("eval", {}).get("max_queries")
    pooled = len(sets) > 1

    def key(es: str, q: str) -> str:
        return f"{es}:{q}" if pooled else q

    qrels: dict[str, dict[str, int]] = {}
    bm25: dict[str, dict[str, float]] = {}
    runs: dict[str, dict[str, dict[str, float]]] = {}
    finished = finished_runs(plan, ctx.study_dir)  # a run still in training has no final checkpoint yet
    files = {r.run_id: _final_run_files(run_dir(ctx.study_dir, r.run_id), sets) for r in plan.runs
             if r.run_id in finished}
    for es in sets:
        rs = resolve_eval_set(ctx.set_names[es], plan.spec.data_root).subset(mq)
        qrels.update({key(es, q): dict(v) for q, v in rs.qrels.items()})
        bm25.update({key(es, q): {e.docid: float(e.score) for e in entries} for q, entries in rs.run.items()})
        for rid, fs in files.items():
            if fs:
                runs.setdefault(rid, {}).update({key(es, q): d for q, d in _read_run(fs[es]).items()})
    if ref.run_id not in runs:
        return {}
    if pooled:
        agg = evaluate(qrels, bm25, rel_threshold=2, measures=["ndcg_cut_10", "recip_rank_10"]).aggregate
        ctx.first_stage[ctx.compare_label] = {"eval_set": ctx.compare_label, "config": "all queries",
                                              "ndcg_cut_10": agg["ndcg_cut_10"], "recip_rank_10": agg["recip_rank_10"]}
    order = [ref.run_id] + [k for k in runs if k != ref.run_id]
    cmp = compare(qrels, {k: runs[k] for k in order}, baseline=ref.run_id,
                  measures=["ndcg_cut_10", "recip_rank_10"])
    out = {}
    for k in order:
        agg = cmp.results[k].aggregate
        row = {"ndcg_cut_10": float(agg["ndcg_cut_10"]), "recip_rank_10": float(agg["recip_rank_10"])}
        if k != ref.run_id:
            c, cm = cmp.get(k, "ndcg_cut_10"), cmp.get(k, "recip_rank_10")
            row.update(delta=c.delta, p=c.p_adjusted, significant=c.significant, significant_mrr=cm.significant)
        out[k] = row
    return out


def rank_section(ctx: ReportContext, finals: dict[str, dict[str, Any]]) -> Section:
    rk = Section("LoRA rank", "Runs that differ from the reference only in rank (final checkpoint).")
    rows = _trained_table(ctx, finals, rk, "rank", "rank", sort=lambda x: x["rank"])
    if len(rows) > 1:
        rk.images.append(("nDCG@10 by rank", bar_table(
            rows, "rank", f"Final nDCG@10 by LoRA rank ({ctx.compare_label})", ctx.out / "rank.png",
            base_value=ctx.first_stage.get(ctx.compare_label, {}).get("ndcg_cut_10"))))
    return rk


def components_section(ctx: ReportContext, finals: dict[str, dict[str, Any]], trained: bool = True) -> Section:
    """Trained MHA / MLP / all runs; :mod:`lorank.report.dissection_sections` adds the components ablation.
    ``trained=False``: the ablation alone (the study's runs are not conditions to compare)."""
    if not trained:
        return Section("MHA vs MLP", "Each component's LoRA deltas kept alone at inference time in the dissected "
                       "adapter, the others switched off (% recovered = (ablated - LoRA off) / (full - LoRA off)).")
    cp = Section("MHA vs MLP", "Trained separately (top) and switched off at inference time in the reference "
                 "adapter (bottom: % recovered = (ablated - LoRA off) / (full - LoRA off)).")
    rows = _trained_table(ctx, finals, cp, "components", "LoRA on",
                          sort=lambda x: ("all", "mha", "mlp").index(x["components"]))
    if len(rows) > 1:
        cp.images.append(("trained", bar_table(
            rows, "components", f"Final nDCG@10 by component trained ({ctx.compare_label})",
            ctx.out / "components_trained.png",
            base_value=ctx.first_stage.get(ctx.compare_label, {}).get("ndcg_cut_10"))))
    return cp


def side_by_side_section(ctx: ReportContext, finals: dict[str, dict[str, Any]], pooled: list[Any]) -> Section:
    """Retrained restricted adapters next to the same restriction applied at inference time to the adapter the
    study dissects; `pooled` (its sweeps over the eval sets together) is read before each set's own rows."""
    plan, ref = ctx.plan, ctx.ref
    sec = Section("Retrained vs inference-time", "The same restriction two ways: an adapter trained with the "
                  "restricted LoRA spec, and the full reference adapter with everything else switched off at "
                  "inference time. Agreement means the ablation is a cheap proxy for retraining.")

    subject = ablation_subject(plan, ref)  # the reference run, or the external adapter the study dissects
    ablated: dict[str, dict[str, Any]] = {}
    where = "ablation eval set"
    for ps in pooled:  # pooled over the sets first, as the findings
        if ps.subject == subject:
            where = ps.where
            for r in ps.rows:
                ablated.setdefault(r["config"], r)
    for _, _, data in finished_ablations(plan, ctx.study_dir, subject):
        for entry in data["sweeps"].values():
            for r in entry["rows"]:
                ablated.setdefault(r["config"], r)
    rows = []
    for r in plan.runs:
        name = _inference_name(r, ref)
        if name is None or r.run_id not in finals:
            continue
        t = finals[r.run_id]
        a = ablated.get(name)
        full_t = finals.get(ref.run_id, {}).get("ndcg_cut_10")
        rows.append([r.label, fmt(t["ndcg_cut_10"]) + (SIG if t.get("significant") else ""),
                     fmt(None if full_t is None else t["ndcg_cut_10"] - full_t), name,
                     "-" if a is None else fmt(a["ndcg_cut_10"]) + (SIG if a.get("significant_ndcg_cut_10") else ""),
                     "-" if a is None or a["recovered_ndcg_cut_10"] is None else f"{a['recovered_ndcg_cut_10']:.0f}%"])
    if rows:
        sec.tables.append((f"Retrained (final checkpoint, {ctx.compare_label}) vs inference-time ({where}, "
                           f"{subject_text(plan, subject)}); {SIG} = p < 0.05 vs the full adapter", ["retrained run", "nDCG@10", "Δ vs full (trained)",
                                                                     "inference-time config", "nDCG@10",
                                                                     "% recovered"], rows))
    else:
        sec.text += (" <span class='muted'>(no restricted run in the grid: add e.g. a block {components: [mha, mlp]} "
                     "or {layers: ['5-15']})</span>")
    return sec


def _trained_table(ctx: ReportContext, finals: dict[str, dict[str, Any]], sec: Section, vary: str, label: str,
                   sort: Any = None) -> list[dict[str, Any]]:
    """Adds to `sec` the table of the runs that differ from the reference only in `vary`; returns its rows."""
    ref, main_set = ctx.ref, ctx.compare_label
    keep = [k for k in ("components", "projections", "layers", "variant", "seed", "model", "rank") if k != vary]
    rows = []
    for r in ctx.plan.runs:
        if all(_same(r, ref, k) for k in keep) and r.run_id in finals:
            rows.append({vary: r.axes.get(vary) if vary != "model" else r.model, **finals[r.run_id],
                         "is_reference": r.run_id == ref.run_id, "run_id": r.run_id})
    if sort:
        rows.sort(key=sort)
    head = [label, "nDCG@10", "MRR@10", "Δ nDCG@10 vs ref", "p (Holm)", "run"]
    body = [[str(x[vary]) + (" (ref)" if x["is_reference"] else ""),
             fmt(x["ndcg_cut_10"]) + (SIG if x.get("significant") else ""),
             fmt(x["recip_rank_10"]) + (SIG if x.get("significant_mrr") else ""),
             fmt(x.get("delta")), fmt(x.get("p"), 3), x["run_id"]] for x in rows]
    if main_set in ctx.first_stage:
        b = ctx.first_stage[main_set]
        body.append(["BM25", fmt(b["ndcg_cut_10"]), fmt(b["recip_rank_10"]), "", "", "first stage"])
    sec.tables.append((f"{label}: final checkpoints on {main_set} ({SIG} = p < 0.05 vs the reference, "
                       "paired t-test over queries, Holm-corrected)", head, body))
    return rows


def _inference_name(run: Any, ref: Any) -> str | None:
    """The inference-time ablation of the reference adapter that matches a run trained with a restricted spec."""
    diff = [k for k in ("components", "projections", "layers") if run.axes.get(k) != ref.axes.get(k)]
    if len(diff) != 1 or any(run.axes.get(k) != ref.axes.get(k) for k in ("rank", "alpha", "variant", "seed")):
        return None
    k = diff[0]
    v = run.axes.get(k)
    if k == "components":
        return f"{v}-only" if v in ("mha", "mlp") else None
    if k == "projections":
        ps = v if isinstance(v, list) else [v]
        return f"only {ps[0]}" if len(ps) == 1 else None
    if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
        return f"only L{int(v)}"
    if isinstance(v, str) and "-" in v:
        return f"only L{v.replace(' ', '')}"
    return None


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    run = load_run(path)
    return {q: {e.docid: float(e.score) for e in entries} for q, entries in run.items()}


def _final_run_files(run: Path, sets: list[str]) -> dict[str, Path] | None:
    """The TREC runs of the last checkpoint evaluated on every one of `sets` (None: no such checkpoint)."""
    by_set = {es: trec_runs(run, TREC_CHECKPOINT, es) for es in sets}
    common = set.intersection(*(set(d) for d in by_set.values())) if by_set else set()
    return {es: by_set[es][max(common)] for es in sets} if common else None


def _same(a: Any, b: Any, key: str) -> bool:
    if key == "model":
        return a.model == b.model
    return a.axes.get(key) == b.axes.get(key)


def _short(run: Any, plan: Any) -> str:
    return (f"{run.model} " if len(plan.spec.models) > 1 else "") + (run.label or run.run_id)
