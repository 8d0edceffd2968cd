"""The report sections about the study's trained runs: the overview, checkpoint curves, the final
checkpoints compared with the reference (by rank, by component trained), and retrained vs inference-time."""
from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

from lorank.report.figures import bar_table, checkpoint_curves
from lorank.report.context import ReportContext
from lorank.report.page import SIG, Section, fmt


def overview_section(ctx: ReportContext) -> Section:
    spec, plan = ctx.spec, ctx.plan
    ov = Section("Study")
    steps = ctx.state.get("steps", {})
    n_ok = sum(1 for s in steps.values() if s["status"] in ("ok", "cached"))
    failed = {k: v for k, v in steps.items() if v["status"] in ("failed", "skipped")}
    waiting = [s for s in plan.steps if s.pending]
    ov.text = (f"<b>{html.escape(spec.name)}</b>: {html.escape(spec.description)}<br>"
               f"{len(plan.runs)} training runs, {len(plan.steps)} steps ({n_ok} done"
               + (f", <span class='bad'>{len(failed)} failed or skipped</span>" if failed else "")
               + (f", {len(waiting)} pending: " + html.escape("; ".join(dict.fromkeys(w.pending for w in waiting)))
                  if waiting else "")
               + f"); reference run (the 'full adapter'): <code>{ctx.ref.run_id}</code>; main eval set: "
               f"{ctx.main_set}. Report generated {time.strftime('%Y-%m-%d %H:%M')}.")
    if failed:
        ov.tables.append(("Failed or skipped steps", ["step", "status", "detail"],
                          [[k, v["status"], v["detail"].splitlines()[0] if v["detail"] else ""]
                           for k, v in failed.items()]))
    if ctx.first_stage_rows:
        ov.tables.append(("First stage (BM25) on the evaluated queries", ["eval set", "queries", "nDCG@10", "MRR@10"],
                          [[r["eval_set"], r["config"], fmt(r.get("ndcg_cut_10")), fmt(r.get("recip_rank_10"))]
                           for r in ctx.first_stage_rows]))
    return ov


def checkpoint_section(ctx: ReportContext) -> Section:
    from lorank.study.spec import _slug

    plan, df = ctx.plan, ctx.results
    ev = Section("Checkpoint evolution", "nDCG@10 and MRR@10 of every checkpoint (last point = final adapter) of the "
                 "study's own training runs.")
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
                png = checkpoint_curves(curves, ctx.first_stage.get(es),
                                                f"{_slug(model)}: checkpoints on {es}",
                                                ctx.out / f"curves_{_slug(model)}_{es}.png")
                ev.images.append((f"{_slug(model)}, {es}", png))
    if not ev.images:
        ev.text += " <span class='bad'>No checkpoint has been evaluated yet.</span>"
    return ev


def final_comparisons(ctx: ReportContext) -> dict[str, dict[str, Any]]:
    """run id -> final checkpoint's nDCG@10 / MRR@10 on the main eval set, with the paired test vs the reference."""
    from lorank.data import resolve_eval_set
    from lorank.score import compare

    if not ctx.main_set:
        return {}
    plan, ref = ctx.plan, ctx.ref
    runs = {}
    for r in plan.runs:
        f = _final_run_file(ctx.study_dir / "runs" / r.run_id, ctx.main_set)
        if f is not None:
            runs[r.run_id] = _read_run(f)
    if ref.run_id not in runs:
        return {}
    mq = ref.train_config.get("eval", {}).get("max_queries")
    rs = resolve_eval_set(ctx.set_names[ctx.main_set], plan.spec.data_root).subset(mq)
    order = [ref.run_id] + [k for k in runs if k != ref.run_id]
    cmp = compare(rs.qrels, {k: runs[k] for k in order}, baseline=ref.run_id,
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
            rows, "rank", f"Final nDCG@10 by LoRA rank ({ctx.main_set})", ctx.out / "rank.png",
            base_value=ctx.first_stage.get(ctx.main_set, {}).get("ndcg_cut_10"))))
    return rk


def components_section(ctx: ReportContext, finals: dict[str, dict[str, Any]]) -> Section:
    """Trained MHA / MLP / all runs; :mod:`lorank.report.dissection_sections` adds the components ablation."""
    cp = Section("MHA vs MLP", "Trained separately (top) and switched off at inference time in the reference "
                 "adapter (bottom: % recovered = (ablated - LoRA off) / (full - LoRA off)).")
    rows = _trained_table(ctx, finals, cp, "components", "LoRA on",
                          sort=lambda x: ("all", "mha", "mlp").index(x["components"]))
    if len(rows) > 1:
        cp.images.append(("trained", bar_table(
            rows, "components", f"Final nDCG@10 by component trained ({ctx.main_set})",
            ctx.out / "components_trained.png", base_value=ctx.first_stage.get(ctx.main_set, {}).get("ndcg_cut_10"))))
    return cp


def side_by_side_section(ctx: ReportContext, finals: dict[str, dict[str, Any]]) -> Section:
    """Retrained restricted adapters next to the same restriction applied at inference time to the reference."""
    plan, ref = ctx.plan, ctx.ref
    sec = Section("Retrained vs inference-time", "The same restriction two ways: an adapter trained with the "
                  "restricted LoRA spec, and the full reference adapter with everything else switched off at "
                  "inference time. Agreement means the ablation is a cheap proxy for retraining.")
    ablated: dict[str, dict[str, Any]] = {}
    for step in plan.steps:
        if step.kind == "ablate" and step.run_id == ref.run_id:
            f = ctx.study_dir / step.out_dir / "ablations.json"
            if f.is_file():
                for entry in json.loads(f.read_text(encoding="utf-8"))["sweeps"].values():
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
        sec.tables.append(("Retrained (final checkpoint, main eval set) vs inference-time (ablation eval set); "
                           f"{SIG} = p < 0.05 vs the full adapter", ["retrained run", "nDCG@10", "Δ vs full (trained)",
                                                                     "inference-time config", "nDCG@10",
                                                                     "% recovered"], rows))
    else:
        sec.text += (" <span class='muted'>(no restricted run in the grid: add e.g. a block {components: [mha, mlp]} "
                     "or {layers: ['5-15']})</span>")
    return sec


def _trained_table(ctx: ReportContext, finals: dict[str, dict[str, Any]], sec: Section, vary: str, label: str,
                   sort: Any = None) -> list[dict[str, Any]]:
    """Adds to `sec` the table of the runs that differ from the reference only in `vary`; returns its rows."""
    ref, main_set = ctx.ref, ctx.main_set
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
    from lorank.data import load_run

    run = load_run(path)
    return {q: {e.docid: float(e.score) for e in entries} for q, entries in run.items()}


def _final_run_file(run_dir: Path, eval_set: str) -> Path | None:
    files = sorted((run_dir / "runs_trec").glob(f"checkpoint-*.{eval_set}.run"),
                   key=lambda p: int(p.name.split(".")[0].split("-")[-1]))
    return files[-1] if files else None


def _same(a: Any, b: Any, key: str) -> bool:
    if key == "model":
        return a.model == b.model
    return a.axes.get(key) == b.axes.get(key)


def _short(run: Any, plan: Any) -> str:
    return (f"{run.model} " if len(plan.spec.models) > 1 else "") + (run.label or run.run_id)
