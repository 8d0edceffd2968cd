"""``lorank report STUDY_DIR``: the paper's tables and figures from a study directory.

Writes ``report/index.html`` (self-contained: images embedded as data URIs, and also written beside it),
``report/tables.md`` and the PNGs. Everything is recomputed from the study's files, so the report of a
half-finished study shows what exists and says what is missing.

The study is read once (:mod:`lorank.report.context`); each section comes from the module of its subject
(:mod:`~lorank.report.trained_sections`, :mod:`~lorank.report.dissection_sections`,
:mod:`~lorank.report.ltr_section`, :mod:`~lorank.report.findings_section`) and the page is rendered by
:mod:`lorank.report.page`.
"""
from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Sequence

from lorank.atomic import atomic_write_text
from lorank.layout.run import config_file
from lorank.layout.study import run_dir
from lorank.report.context import ReportContext, load_context
from lorank.report.dissection_sections import ablation_sections, analysis_section
from lorank.report.findings_section import findings_section, findings_view
from lorank.report.ltr_section import ltr_section
from lorank.report.page import Section, read_json, render_html, render_markdown
from lorank.report.pooled_ablations import pooled_sweeps
from lorank.report.trained_sections import (checkpoint_section, components_section, final_comparisons,
                                            overview_section, rank_section, side_by_side_section)


def build_report(study_dir: str | Path, console: Any = None, opening: Sequence[Section] = (),
                 findings: Section | None = None, compare_runs: bool = True) -> Path:
    """Write STUDY_DIR/report/{index.html, tables.md, *.png}; returns the HTML path.

    ``opening``: sections shown first (what a reader should take away: ``lorank demo``'s). ``findings``: a section
    shown in place of the study's own findings, which are then neither computed nor written (the demo shows the
    committed study's). ``compare_runs=False``: the study's training runs are smoke checks, not conditions: their
    checkpoint curves come after the dissection, labelled so, and the sections that compare runs (rank, MHA vs MLP
    trained, retrained vs inference-time) and the dissection sections without a sweep are left out."""
    ctx = load_context(study_dir)
    view = findings_view(ctx.plan, ctx.study_dir)  # the per-query numbers the findings test, read once
    curves = checkpoint_section(ctx, view, smoke=not compare_runs)
    sections = [*opening, overview_section(ctx, smoke=not compare_runs)] + ([curves] if compare_runs else [])
    finals = final_comparisons(ctx) if compare_runs else {}  # final checkpoints vs the reference (paired tests)
    cp = components_section(ctx, finals, trained=compare_runs)
    pooled = pooled_sweeps(ctx.plan, ctx.study_dir)  # each ablation sweep over the eval sets together, once
    dissection = ablation_sections(ctx, cp, pooled)  # the components sweep goes into cp
    if compare_runs:
        sections += [rank_section(ctx, finals), cp, *dissection, side_by_side_section(ctx, finals, pooled)]
    else:
        sections += [s for s in (cp, *dissection) if s.tables or s.images]
    sections.append(analysis_section(ctx))
    lt = ltr_section(ctx.plan, ctx.study_dir, ctx.out)
    if lt is not None:
        sections.append(lt)
    sections += ([] if compare_runs else [curves]) + [
        findings if findings is not None else findings_section(ctx.plan, ctx.study_dir, ctx.results, view),
        configs_section(ctx)]
    atomic_write_text(ctx.out / "tables.md", render_markdown(ctx.spec.name, sections))
    page = ctx.out / "index.html"
    atomic_write_text(page, render_html(ctx.spec.name, sections))
    _remove_stale_pngs(ctx.out, sections)
    return page


def _remove_stale_pngs(out: Path, sections: list[Section]) -> None:
    """PNGs in the report folder that no section shows any more (an older report's, under names since changed)
    are removed, so that the folder is what the page shows."""
    shown = {Path(png).resolve() for s in sections for _, png in s.images}
    for png in out.glob("*.png"):
        if png.resolve() not in shown:
            png.unlink()


def configs_section(ctx: ReportContext) -> Section:
    """Software versions (from the first run's config.json), the study spec and every run's resolved config."""
    cf = Section("Configs and software")
    versions = {}
    for r in ctx.plan.runs:
        cfg = read_json(config_file(run_dir(ctx.study_dir, r.run_id)))
        if cfg.get("versions"):
            versions = cfg["versions"]
            break
    cf.tables.append(("Software versions", ["package", "version"], [[k, v] for k, v in versions.items()]))
    cf.raw_html = ("<details><summary>study.yaml</summary><pre>"
                   + html.escape(ctx.spec_file.read_text(encoding="utf-8")) + "</pre></details>" + "".join(
                       f"<details><summary>{html.escape(r.run_id)}</summary><pre>"
                       + html.escape(json.dumps(r.train_config, indent=2)) + "</pre></details>" for r in ctx.plan.runs))
    return cf


__all__ = ["build_report"]
