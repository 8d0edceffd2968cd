"""``lorank demo``: the README's main job on the shared real data.

Current stages: check the embedded default model, then evaluate the BM25 first stage of TREC DL
2019 and 2020, the baseline every reranker in lorank is measured against. Results go to
``OUT/bm25_eval.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lorank.atomic import atomic_write_json

DEMO_SETS = ("dl19", "dl20")


def run_demo(out: str | Path = "demo_out", data: str | Path | None = None, console: Any = None) -> dict[str, Any]:
    from rich.console import Console
    from rich.table import Table

    from lorank.data import resolve_eval_set
    from lorank.models.source import describe_default
    from lorank.score import evaluate

    console = console or Console()
    out = Path(out)
    model = describe_default()
    console.print(f"[bold]default model[/]: {model['gguf']} ({model['size_mb']} MB)")
    results: dict[str, Any] = {"model": model, "sets": {}}
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
    console.print(f"wrote {out / 'bm25_eval.json'}")
    return results
