"""The report sections that dissect an adapter: the inference-time ablation sweeps (components, layers,
projections, rank truncation and scale) and the adapter analyses (weights, similarity, probes, patching)."""
from __future__ import annotations

import shutil

from lorank.ablate.run import plot_sweep, where_text
from lorank.data.sources import eval_label
from lorank.report.context import ReportContext
from lorank.report.page import SIG, Section, fmt, safe_name
from lorank.report.pooled_ablations import PooledSweep
from lorank.evaluation.stats import fmt_p
from lorank.report.subjects import dissects_note, subject_text
from lorank.study.store import finished_ablations

HEAD = ["configuration", "nDCG@10", "Δ vs full", "% recovered", "MRR@10", "p (Holm)"]


def _body(rows: list[dict]) -> list[list[str]]:
    return [[r["config"], fmt(r["ndcg_cut_10"]) + (SIG if r.get("significant_ndcg_cut_10") else ""),
             fmt(r["delta_ndcg_cut_10"]),
             "-" if r["recovered_ndcg_cut_10"] is None else f"{r['recovered_ndcg_cut_10']:.0f}%",
             fmt(r["recip_rank_10"]) + (SIG if r.get("significant_recip_rank_10") else ""),
             fmt_p(r["p_ndcg_cut_10"])] for r in rows]


def ablation_sections(ctx: ReportContext, components: Section, pooled: list[PooledSweep]) -> list[Section]:
    """Adds the components sweep to `components` (the "MHA vs MLP" section); returns the layer, projection and
    rank/scale sections. `pooled`: the sweeps pooled over eval sets (:func:`lorank.report.pooled_ablations.pooled_sweeps`)."""
    plan, out = ctx.plan, ctx.out
    ab_sections = {"components": components,
                   "layers": Section("Layer importance", "Inference-time ablations over layers of the reference "
                                     "adapter (leave-one-out, keep-one, windows)."),
                   "projections": Section("Projection importance", "Each projection's LoRA delta removed, and "
                                          "each kept alone."),
                   "other": Section("Rank truncation and delta scale", "Top-k singular directions of each delta; "
                                    "the whole delta scaled.")}
    dissected: dict[str, list[str]] = {}  # section key -> run ids (or adapter:<name>) its tables dissect

    def section_key(sweep: str) -> str:
        return ("components" if sweep == "components" else "layers" if sweep.startswith("layer")
                else "projections" if sweep == "projections" else "other")

    for ps in pooled:  # first: the view the findings test
        sec, who = ab_sections[section_key(ps.sweep)], subject_text(plan, ps.subject)
        dst = out / f"ablation_{safe_name(ps.subject)}_{safe_name(ps.sweep)}_pooled.png"
        plot_sweep(ps.sweep, ps.rows, dst, where=ps.where)
        sec.images.append((f"{ps.sweep}, {ps.where} — {who}", dst))
        sec.tables.append((f"{ps.sweep} on {who} ({ps.where}; paired over all of them)" + (
            f"; left out, not on every set: {', '.join(ps.left_out)}" if ps.left_out else ""), HEAD, _body(ps.rows)))
    for step, _, data in finished_ablations(plan, ctx.study_dir):
        label = eval_label(data.get("eval_set", step.payload["eval"]))
        for sweep, entry in data["sweeps"].items():
            key = section_key(sweep)
            sec = ab_sections[key]
            who = subject_text(plan, step.run_id)
            dissected.setdefault(key, []).append(step.run_id)
            where = where_text(label, data.get("queries", 0), data.get("depth"))
            dst = out / f"ablation_{safe_name(step.run_id)}_{safe_name(label)}_{safe_name(sweep)}.png"
            plot_sweep(sweep, entry["rows"], dst, where=where)  # re-drawn: one file per set, the set in its title
            sec.images.append((f"{sweep}, {where} — {who}", dst))
            sec.tables.append((f"{sweep} on {who} ({where}; sweep {entry['wall_s']:.0f} s, compute "
                               f"{entry['cost_fraction']:.2f} of naive)", HEAD, _body(entry["rows"])))
    for key, ids in dissected.items():
        ab_sections[key].text += dissects_note(plan, ids)
    sections = []
    for key in ("layers", "projections", "other"):
        sec = ab_sections[key]
        if not sec.tables:
            sec.text += " <span class='muted'>(no such sweep in this study)</span>"
        sections.append(sec)
    return sections


def analysis_section(ctx: ReportContext) -> Section:
    """The PNGs of every analysis step but ltr (which has its own section, :mod:`lorank.report.ltr_section`)."""
    plan = ctx.plan
    an = Section("Adapter analysis", "Weight statistics, subspace similarity, layer-wise probes, activation "
                 "patching (lorank.analyze).")
    analysed: list[str] = []
    for step in plan.steps:
        if step.kind != "analyze" or step.payload.get("kind") == "ltr":
            continue
        d = ctx.study_dir / step.out_dir
        sides = [step.run_id] + ([step.payload["against"]] if step.payload.get("against") else [])  # a compare: both
        who = " vs ".join(subject_text(plan, r) for r in sides)
        for png in sorted(d.glob("*.png")):
            dst = ctx.out / f"analysis_{safe_name(step.step_id)}_{png.name}"
            shutil.copyfile(png, dst)
            an.images.append((f"{step.payload['kind']} — {who}: {png.stem}", dst))
            analysed += sides
    an.text += dissects_note(plan, analysed)
    if not an.images:
        an.text += " <span class='muted'>(no analysis in this study, or not run yet)</span>"
    return an
