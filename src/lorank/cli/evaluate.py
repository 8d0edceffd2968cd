"""``lorank evaluate`` and ``lorank retrieve``: metrics and significance of TREC runs (:func:`lorank.evaluation.evaluate_files`),
and the BM25 first stage over a BEIR folder (:func:`lorank.retrieve.retrieve_beir`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lorank.cli.common import console, err_console, guard


def evaluate_cmd(
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels file (qid iter docid grade)."),
    run: list[Path] = typer.Option(..., "--run", help="TREC run file; repeat for several runs (the first is the baseline)."),
    rel_threshold: int = typer.Option(2, "--rel-threshold", help="Grade at or above which a document is relevant for MRR, recall, MAP."),
    per_query: bool = typer.Option(False, "--per-query", help="Also print (and write to JSON) per-query values."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results to this JSON file (atomically)."),
    measure: Optional[list[str]] = typer.Option(None, "--measure", help="Measure name (repeatable); default ndcg_cut_10, recip_rank_10, recall_100, map."),
) -> None:
    """Evaluate TREC runs against qrels; with 2+ runs, paired t-tests vs the first run (Holm-corrected)."""
    from rich.table import Table

    from lorank.evaluation import evaluate_files
    from lorank.evaluation.stats import fmt_p

    with guard():
        res = evaluate_files(qrels, run, rel_threshold=rel_threshold, per_query=per_query,
                             json_out=json_out, measures=measure or None)
    t = Table(title=f"{Path(qrels).name}: {next(iter(res.results.values())).num_queries} judged queries, "
                    f"binary relevance at grade >= {rel_threshold}")
    t.add_column("run")
    for m in res.measures:
        t.add_column(m, justify="right")
    for name, r in res.results.items():
        t.add_row(name, *(f"{r.aggregate[m]:.4f}" for m in res.measures))
    console.print(t)
    for name, r in res.results.items():
        if r.missing_queries:
            err_console.print(f"[yellow]note:[/] {name}: {len(r.missing_queries)} judged queries have no "
                              f"results and count as 0", highlight=False)
        if r.ignored_queries:
            err_console.print(f"[yellow]note:[/] {name}: {len(r.ignored_queries)} run queries have no "
                              f"judgements and are ignored", highlight=False)
    if res.comparisons:
        s = Table(title=f"vs baseline {res.baseline}: paired t-test, Holm-adjusted per measure "
                        f"(* = adjusted p <= {res.alpha})")
        for col in ("run", "measure", "delta", "p", "p (Holm)", ""):
            s.add_column(col, justify="left" if col in ("run", "measure") else "right")
        for c in res.comparisons:
            s.add_row(c.run, c.measure, f"{c.delta:+.4f}", fmt_p(c.p_value), fmt_p(c.p_adjusted),
                      "*" if c.significant else "")
        console.print(s)
    if per_query:
        for name, r in res.results.items():
            pq = Table(title=f"per query: {name}")
            pq.add_column("qid")
            for m in res.measures:
                pq.add_column(m, justify="right")
            for q in r.per_query[res.measures[0]]:
                pq.add_row(q, *(f"{r.per_query[m][q]:.4f}" for m in res.measures))
            console.print(pq)
    if json_out is not None:
        console.print(f"wrote {json_out}", highlight=False)


def retrieve_cmd(
    beir: Path = typer.Option(..., "--beir", help="BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)."),
    split: str = typer.Option("test", "--split", help="Which qrels split's queries to search."),
    k: int = typer.Option(100, "--k", help="Documents per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.4, "--b", help="BM25 b."),
    out: Path = typer.Option(..., "--out", help="TREC run file to write (atomically)."),
) -> None:
    """BM25 first-stage retrieval (bm25s) over a BEIR dataset; writes a TREC run."""
    from lorank.retrieve import retrieve_beir

    with guard():
        run = retrieve_beir(beir, split=split, k=k, k1=k1, b=b, out=out)
    n = sum(len(v) for v in run.values())
    console.print(f"wrote {out}: {len(run)} queries, {n} results (BM25 k1={k1} b={b}, top {k})", highlight=False)
