"""``lorank report STUDY_DIR``: the paper's tables and figures from a study directory.

Writes ``report/index.html`` (self-contained: images embedded as data URIs, and also written beside it),
``report/tables.md`` and the PNGs. Everything is recomputed from the study's files, so the report of a
half-finished study shows what exists and says what is missing.
"""
from __future__ import annotations

import base64
import html
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_text
from lorank.report import figures
from lorank.report.figures import LABELS

SIG = "†"


@dataclass
class Section:
    title: str
    text: str = ""
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # caption, header, rows
    images: list[tuple[str, Path]] = field(default_factory=list)  # caption, png
    raw_html: str = ""


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _read_run(path: Path) -> dict[str, dict[str, float]]:
    from lorank.data import load_run

    run = load_run(path)
    return {q: {e.docid: float(e.score) for e in entries} for q, entries in run.items()}


def _final_run_file(run_dir: Path, eval_set: str) -> Path | None:
    files = sorted((run_dir / "runs_trec").glob(f"checkpoint-*.{eval_set}.run"),
                   key=lambda p: int(p.name.split(".")[0].split("-")[-1]))
    return files[-1] if files else None


def build_report(study_dir: str | Path, console: Any = None) -> Path:
    """Write STUDY_DIR/report/{index.html, tables.md, *.png}; returns the HTML path."""
    from lorank.study.plan import build_plan
    from lorank.study.spec import expand, load_spec  # noqa: F401  (expand used through build_plan)
    from lorank.study.store import first_stage_rows, write_results

    study_dir = Path(study_dir)
    spec_file = study_dir / "study.yaml"
    if not spec_file.is_file():
        from lorank.errors import ConfigError

        raise ConfigError(f"{study_dir} is not a study directory (no study.yaml); run `lorank study SPEC.yaml -o DIR`")
    spec = load_spec(spec_file)
    plan = build_plan(spec, spec_file, check_data=False)
    out = study_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    df = write_results(plan, study_dir, include_first_stage=False)
    fs_rows = first_stage_rows(plan)
    ref = next((r for r in plan.runs if r.matches(spec.report.reference)), None) or next(
        (r for r in plan.runs if r.axes.get("components") == "all"), plan.runs[0])
    from lorank.train.checkpoint_eval import eval_label

    set_names = {eval_label(s): s for r in plan.runs for s in r.train_config.get("eval", {}).get("sets", [])}
    eval_sets = list(set_names)
    main_set = eval_sets[0] if eval_sets else None
    train_mq = ref.train_config.get("eval", {}).get("max_queries")
    # BM25 on exactly the queries the checkpoints were evaluated on
    first_stage = {r["eval_set"]: r for r in fs_rows if r.get("max_queries") == train_mq}
    sections: list[Section] = []
    state = _read_json(study_dir / "study_state.json")

    # --- overview
    ov = Section("Study")
    steps = state.get("steps", {})
    n_ok = sum(1 for s in steps.values() if s["status"] in ("ok", "cached"))
    failed = {k: v for k, v in steps.items() if v["status"] in ("failed", "skipped")}
    ov.text = (f"<b>{html.escape(spec.name)}</b>: {html.escape(spec.description)}<br>"
               f"{len(plan.runs)} training runs, {len(plan.steps)} steps ({n_ok} done"
               + (f", <span class='bad'>{len(failed)} failed or skipped</span>" if failed else "")
               + f"); reference run (the 'full adapter'): <code>{ref.run_id}</code>; main eval set: "
               f"{main_set}. Report generated {time.strftime('%Y-%m-%d %H:%M')}.")
    if failed:
        ov.tables.append(("Failed or skipped steps", ["step", "status", "detail"],
                          [[k, v["status"], v["detail"].splitlines()[0] if v["detail"] else ""]
                           for k, v in failed.items()]))
    if fs_rows:
        ov.tables.append(("First stage (BM25) on the evaluated queries", ["eval set", "queries", "nDCG@10", "MRR@10"],
                          [[r["eval_set"], r["config"], _fmt(r.get("ndcg_cut_10")), _fmt(r.get("recip_rank_10"))]
                           for r in fs_rows]))
    sections.append(ov)

    # --- checkpoint evolution
    ev = Section("Checkpoint evolution", "nDCG@10 and MRR@10 of every checkpoint (last point = final adapter) of the "
                 "study's own training runs.")
    ck = df[df["source"] == "checkpoint"] if len(df) else df
    for model in spec.models:
        for es in eval_sets:
            curves = {}
            for r in plan.runs:
                if r.model != model:
                    continue
                sub = ck[(ck["run_id"] == r.run_id) & (ck["eval_set"] == es)] if len(ck) else []
                if len(sub):
                    curves[_short(r, plan)] = [(int(a), float(b), float(c)) for a, b, c in
                                               zip(sub["step"], sub["ndcg_cut_10"], sub["recip_rank_10"])]
            if curves:
                from lorank.study.spec import _slug

                png = figures.checkpoint_curves(curves, first_stage.get(es), f"{_slug(model)}: checkpoints on {es}",
                                                out / f"curves_{_slug(model)}_{es}.png")
                ev.images.append((f"{_slug(model)}, {es}", png))
    if not ev.images:
        ev.text += " <span class='bad'>No checkpoint has been evaluated yet.</span>"
    sections.append(ev)

    # --- final-checkpoint comparisons vs the reference (per-query paired tests)
    finals = _final_comparisons(plan, study_dir, ref, main_set, set_names[main_set]) if main_set else {}

    def group_rows(vary: str) -> list[dict[str, Any]]:
        keep = [k for k in ("components", "projections", "layers", "variant", "seed", "model", "rank")
                if k != vary]
        rows = []
        for r in plan.runs:
            if all(_same(r, ref, k) for k in keep) and r.run_id in finals:
                rows.append({vary: r.axes.get(vary) if vary != "model" else r.model, **finals[r.run_id],
                             "is_reference": r.run_id == ref.run_id, "run_id": r.run_id})
        return rows

    def trained_table(sec: Section, vary: str, label: str, sort: Any = None) -> list[dict[str, Any]]:
        rows = group_rows(vary)
        if sort:
            rows.sort(key=sort)
        head = [label, "nDCG@10", "MRR@10", "Δ nDCG@10 vs ref", "p (Holm)", "run"]
        body = [[str(x[vary]) + (" (ref)" if x["is_reference"] else ""),
                 _fmt(x["ndcg_cut_10"]) + (SIG if x.get("significant") else ""),
                 _fmt(x["recip_rank_10"]) + (SIG if x.get("significant_mrr") else ""),
                 _fmt(x.get("delta")), _fmt(x.get("p"), 3), x["run_id"]] for x in rows]
        if main_set in first_stage:
            b = first_stage[main_set]
            body.append(["BM25", _fmt(b["ndcg_cut_10"]), _fmt(b["recip_rank_10"]), "", "", "first stage"])
        sec.tables.append((f"{label}: final checkpoints on {main_set} ({SIG} = p < 0.05 vs the reference, "
                           "paired t-test over queries, Holm-corrected)", head, body))
        return rows

    rk = Section("LoRA rank", "Runs that differ from the reference only in rank (final checkpoint).")
    rows = trained_table(rk, "rank", "rank", sort=lambda x: x["rank"])
    if len(rows) > 1:
        rk.images.append(("nDCG@10 by rank", figures.bar_table(
            rows, "rank", f"Final nDCG@10 by LoRA rank ({main_set})", out / "rank.png",
            base_value=first_stage.get(main_set, {}).get("ndcg_cut_10"))))
    sections.append(rk)

    cp = Section("MHA vs MLP", "Trained separately (top) and switched off at inference time in the reference "
                 "adapter (bottom: % recovered = (ablated - LoRA off) / (full - LoRA off)).")
    rows = trained_table(cp, "components", "LoRA on", sort=lambda x: ("all", "mha", "mlp").index(x["components"]))
    if len(rows) > 1:
        cp.images.append(("trained", figures.bar_table(
            rows, "components", f"Final nDCG@10 by component trained ({main_set})", out / "components_trained.png",
            base_value=first_stage.get(main_set, {}).get("ndcg_cut_10"))))
    sections.append(cp)

    ab_sections = {"components": cp,
                   "layers": Section("Layer importance", "Inference-time ablations over layers of the reference "
                                     "adapter (leave-one-out, keep-one, windows)."),
                   "projections": Section("Projection importance", "Each projection's LoRA delta removed, and "
                                          "each kept alone."),
                   "other": Section("Rank truncation and delta scale", "Top-k singular directions of each delta; "
                                    "the whole delta scaled.")}
    from lorank.report.subjects import dissects_note, subject_text

    dissected: dict[str, list[str]] = {}  # section key -> run ids (or adapter:<name>) its tables dissect
    for step in plan.steps:
        if step.kind != "ablate":
            continue
        f = study_dir / step.out_dir / "ablations.json"
        if not f.is_file():
            continue
        data = json.loads(f.read_text(encoding="utf-8"))
        for sweep, entry in data["sweeps"].items():
            key = ("components" if sweep == "components" else "layers" if sweep.startswith("layer")
                   else "projections" if sweep == "projections" else "other")
            sec = ab_sections[key]
            who = subject_text(plan, step.run_id)
            dissected.setdefault(key, []).append(step.run_id)
            png = Path(entry["plot"])
            if not png.is_absolute():
                png = study_dir / png
            if png.is_file():
                dst = out / f"ablation_{_safe(step.run_id)}_{_safe(sweep)}.png"
                shutil.copyfile(png, dst)
                sec.images.append((f"{sweep} — {who}", dst))
            head = ["configuration", "nDCG@10", "Δ vs full", "% recovered", "MRR@10", "p (Holm)"]
            body = [[r["config"], _fmt(r["ndcg_cut_10"]) + (SIG if r.get("significant_ndcg_cut_10") else ""),
                     _fmt(r["delta_ndcg_cut_10"]),
                     "-" if r["recovered_ndcg_cut_10"] is None else f"{r['recovered_ndcg_cut_10']:.0f}%",
                     _fmt(r["recip_rank_10"]) + (SIG if r.get("significant_recip_rank_10") else ""),
                     _fmt(r["p_ndcg_cut_10"], 3)] for r in entry["rows"]]
            sec.tables.append((f"{sweep} on {who} ({eval_label(data.get('eval_set', ''))}, "
                               f"{data.get('queries', '?')} queries x top-{data.get('depth')}; sweep "
                               f"{entry['wall_s']:.0f} s, compute {entry['cost_fraction']:.2f} of naive)", head, body))
    for key, ids in dissected.items():
        ab_sections[key].text += dissects_note(plan, ids)
    for key in ("layers", "projections", "other"):
        sec = ab_sections[key]
        if not sec.tables:
            sec.text += " <span class='muted'>(no such sweep in this study)</span>"
        sections.append(sec)

    sections.append(_side_by_side(plan, study_dir, ref, finals))

    an = Section("Adapter analysis", "Weight statistics, subspace similarity, layer-wise probes, activation "
                 "patching (lorank.analyze).")
    analysed: list[str] = []
    for step in plan.steps:
        if step.kind != "analyze" or step.payload.get("kind") == "ltr":  # ltr: its own section below
            continue
        d = study_dir / step.out_dir
        for png in sorted(d.glob("*.png")):
            dst = out / f"analysis_{_safe(step.step_id)}_{png.name}"
            shutil.copyfile(png, dst)
            an.images.append((f"{step.payload['kind']} — {subject_text(plan, step.run_id)}: {png.stem}", dst))
            analysed.append(step.run_id)
    an.text += dissects_note(plan, analysed)
    if not an.images:
        an.text += " <span class='muted'>(no analysis in this study, or not run yet)</span>"
    sections.append(an)
    from lorank.report.ltr_section import ltr_section

    lt = ltr_section(plan, study_dir, out)
    if lt is not None:
        sections.append(lt)
    from lorank.report.findings_section import findings_section

    sections.append(findings_section(plan, study_dir, out, df))

    cf = Section("Configs and software")
    versions = {}
    for r in plan.runs:
        cfg = _read_json(study_dir / "runs" / r.run_id / "config.json")
        if cfg.get("versions"):
            versions = cfg["versions"]
            break
    cf.tables.append(("Software versions", ["package", "version"], [[k, v] for k, v in versions.items()]))
    cf.raw_html = ("<details><summary>study.yaml</summary><pre>" + html.escape(spec_file.read_text(encoding="utf-8"))
                   + "</pre></details>" + "".join(
                       f"<details><summary>{html.escape(r.run_id)}</summary><pre>"
                       + html.escape(json.dumps(r.train_config, indent=2)) + "</pre></details>" for r in plan.runs))
    sections.append(cf)

    atomic_write_text(out / "tables.md", _markdown(spec.name, sections))
    page = out / "index.html"
    atomic_write_text(page, _html(spec.name, sections))
    return page


def _final_comparisons(plan: Any, study_dir: Path, ref: Any, eval_set: str, set_name: str) -> dict[str, dict[str, Any]]:
    from lorank.data import resolve_eval_set
    from lorank.score import compare

    runs = {}
    for r in plan.runs:
        f = _final_run_file(study_dir / "runs" / r.run_id, eval_set)
        if f is not None:
            runs[r.run_id] = _read_run(f)
    if ref.run_id not in runs:
        return {}
    mq = ref.train_config.get("eval", {}).get("max_queries")
    rs = resolve_eval_set(set_name, plan.spec.data_root).subset(mq)
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


def _side_by_side(plan: Any, study_dir: Path, ref: Any, finals: dict[str, dict[str, Any]]) -> Section:
    """Retrained restricted adapters next to the same restriction applied at inference time to the reference."""
    sec = Section("Retrained vs inference-time", "The same restriction two ways: an adapter trained with the "
                  "restricted LoRA spec, and the full reference adapter with everything else switched off at "
                  "inference time. Agreement means the ablation is a cheap proxy for retraining.")
    ablated: dict[str, dict[str, Any]] = {}
    for step in plan.steps:
        if step.kind == "ablate" and step.run_id == ref.run_id:
            f = study_dir / step.out_dir / "ablations.json"
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
        rows.append([r.label, _fmt(t["ndcg_cut_10"]) + (SIG if t.get("significant") else ""),
                     _fmt(None if full_t is None else t["ndcg_cut_10"] - full_t), name,
                     "-" if a is None else _fmt(a["ndcg_cut_10"]) + (SIG if a.get("significant_ndcg_cut_10") else ""),
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


def _same(a: Any, b: Any, key: str) -> bool:
    if key == "model":
        return a.model == b.model
    return a.axes.get(key) == b.axes.get(key)


def _short(run: Any, plan: Any) -> str:
    return (f"{run.model} " if len(plan.spec.models) > 1 else "") + (run.label or run.run_id)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(s))[:120]


def _read_json(p: Path) -> dict[str, Any]:
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _markdown(name: str, sections: list[Section]) -> str:
    import re

    lines = [f"# {name}: tables", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [re.sub(r"<[^>]+>", "", s.text), ""]
        for cap, head, rows in s.tables:
            lines += [f"**{cap}**", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
            lines.append("")
        for cap, png in s.images:
            lines += [f"![{cap}]({png.name})", ""]
    return "\n".join(lines) + "\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1150px;color:#222;
padding:0 1rem;line-height:1.45} h1{margin-bottom:.2rem} h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;
margin-top:2.2rem} table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem} caption{text-align:left;
font-weight:600;padding:.3rem 0;max-width:1100px} th,td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left} figure{margin:.5rem 0 1.5rem}
figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9rem} .bad{color:#b00020}
.muted{color:#777} pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.8rem} nav a{margin-right:.8rem}
"""


def _html(name: str, sections: list[Section]) -> str:
    def anchor(t: str) -> str:
        return "".join(c.lower() if c.isalnum() else "-" for c in t)

    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(name)} — lorank "
             f"report</title><style>{CSS}</style></head><body><h1>{html.escape(name)}</h1>",
             "<nav>" + "".join(f"<a href='#{anchor(s.title)}'>{html.escape(s.title)}</a>" for s in sections) + "</nav>"]
    for s in sections:
        parts.append(f"<section id='{anchor(s.title)}'><h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p>{s.text}</p>")
        for cap, head, rows in s.tables:
            parts.append(f"<table><caption>{html.escape(cap)}</caption><tr>"
                         + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
                         + "</table>")
        for cap, png in s.images:
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<figure><img alt='{html.escape(cap)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(cap)} (<a href='{html.escape(png.name)}'>{html.escape(png.name)}"
                         "</a>)</figcaption></figure>")
        parts.append(s.raw_html + "</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["build_report", "LABELS"]
