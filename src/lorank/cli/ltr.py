"""``lorank features`` and ``lorank ltr``: feature tables (:func:`lorank.features.extract.extract_features`) and
LambdaMART on latent LoRA features (:func:`lorank.ltr.run.ltr`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lorank.cli.common import cli_subject, console, err_console, fmt, guard, progress_factory

_GROUPS_HELP = ("Feature group (repeatable, or '+'-joined): bm25, score, mlp, mha, lora, with selectors "
                "mlp:L5-15, mlp:up, mha:q,v, :norm / :act (default: bm25, score, mlp).")


def features_cmd(
    out: Path = typer.Option(..., "--out", help="Feature table to write: .parquet or .csv (+ .meta.json beside it)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A lorank run dir (last checkpoint) or a checkpoint "
                                                                   "dir (not needed for bm25 alone)."),
    eval_set: Optional[str] = typer.Option(None, "--eval", help="A named set (dl19, dl20) or a TREC-DL-style folder."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="queries.tsv (with --run and --collection)."),
    run: Optional[Path] = typer.Option(None, "--run", help="First-stage TREC run (BM25)."),
    collection: Optional[Path] = typer.Option(None, "--collection", help="collection.tsv"),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="TREC qrels (fills the grade column)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder for named sets."),
    group: Optional[list[str]] = typer.Option(None, "--groups", "-g", help=_GROUPS_HELP),
    depth: int = typer.Option(100, "--depth", min=1, help="Candidates per query."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N judged queries."),
    batch_tokens: int = typer.Option(8192, "--batch-tokens", help="Padded tokens per forward batch."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle-based adapter (unsafe)."),
) -> None:
    """Per (query, candidate): BM25 score and rank, the reranker's score, and the latent LoRA activations A x."""
    from lorank.features.extract import extract_features

    with guard(), progress_factory() as pf:
        subject = cli_subject(adapter, eval_set, queries, run, collection, qrels, data, allow_pickle)
        meta = extract_features(subject, out, groups=group or None, depth=depth, max_queries=max_queries,
                                batch_tokens=batch_tokens, progress=pf)
    console.print(f"wrote {out}: {meta['pairs']} pairs of {meta['queries']} queries, {meta['columns']} columns "
                  f"(groups {', '.join(meta['groups'])}; {meta.get('latent_modules', 0)} LoRA modules) in "
                  f"{meta['seconds']:.1f} s", highlight=False, soft_wrap=True)
    if meta["skipped"]["queries_without_candidates"]:
        err_console.print(f"[yellow]note:[/] {meta['skipped']['queries_without_candidates']} queries have no "
                          "candidates in the run and were skipped", highlight=False)


def ltr_cmd(
    train: Path = typer.Option(..., "--train", help="Feature table of the training queries (lorank features)."),
    test: Path = typer.Option(..., "--test", help="Feature table of the test queries (same groups)."),
    out: Path = typer.Option(..., "--out", help="Output folder: ltr.json, runs/*.run, ltr_importance.png."),
    row: Optional[list[str]] = typer.Option(None, "--row", help="Comparison row (repeatable): bm25, reranker, all, "
                                            "or feature groups (bm25+mlp:L5-15), optionally NAME=GROUPS "
                                            "(default: bm25, reranker, bm25+score, bm25+mlp, all)."),
    test_qrels: Optional[str] = typer.Option(None, "--test-qrels", help="Qrels file or set name for the test "
                                             "queries (default: the set the test table was made from)."),
    train_qrels: Optional[str] = typer.Option(None, "--train-qrels", help="Training labels (default: the "
                                              "table's grade column; unjudged = 0)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder for named sets."),
    valid_frac: float = typer.Option(0.2, "--valid-frac", help="Share of training queries held out for tuning."),
    judged_only: bool = typer.Option(False, "--judged-only", help="Train on judged pairs only."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query split and LightGBM."),
    threads: int = typer.Option(1, "--threads", help="LightGBM threads."),
    rel_threshold: int = typer.Option(2, "--rel-threshold", help="Grade at or above which a passage is relevant "
                                                                 "(MRR; 2 for TREC DL)."),
) -> None:
    """LambdaMART (LightGBM lambdarank) on feature tables: BM25 / reranker / LTR rows with paired t-tests (Holm)."""
    from rich.table import Table

    from lorank.ltr.run import DEFAULT_ROWS, ltr

    with guard(), progress_factory() as pf:
        res = ltr(train, test, out, rows=row or DEFAULT_ROWS, test_qrels=test_qrels, train_qrels=train_qrels,
                  data_root=data, valid_frac=valid_frac, seed=seed, threads=threads, judged_only=judged_only,
                  rel_threshold=rel_threshold, progress=pf)
    t = Table(title=f"{res.get('test_set')}: {res['test']['judged_queries']} judged queries; trained on "
                    f"{res['training']['train_queries']} + {res['training']['valid_queries']} (tuning) queries of "
                    f"{res.get('train_set')} (* = Holm-adjusted p <= 0.05)")
    for c in ("row", "features", "nDCG@10", "MRR@10", "Δ nDCG vs BM25", "Δ nDCG vs reranker"):
        t.add_column(c, justify="left" if c == "row" else "right")

    def delta(r: dict[str, Any], base: str) -> str:
        d = (r.get(f"vs_{base}") or {}).get("ndcg_cut_10")
        return "-" if d is None else f"{d['delta']:+.4f}" + (" *" if d["significant"] else "")

    for r in res["rows"]:
        t.add_row(r["row"], str(r.get("features", "-")), fmt(r.get("ndcg_cut_10"), ".4f"),
                  fmt(r.get("recip_rank_10"), ".4f"), delta(r, "BM25"), delta(r, "reranker"))
    console.print(t)
    for s in res["skipped_rows"]:
        err_console.print(f"[yellow]skipped:[/] {s['row']}: {s['reason']}", highlight=False)
    for n in res["notes"]:
        err_console.print(f"[yellow]note:[/] {n}", highlight=False)
    for k, v in res["files"].items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)
