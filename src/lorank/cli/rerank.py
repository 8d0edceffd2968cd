"""``lorank rerank``: a candidate run reranked with a trained adapter (:class:`lorank.reranker.Reranker`, or
:func:`lorank.inference.shard.sharded_rerank` with ``--processes N``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lorank.cli.common import cli_subject, console, guard, progress
from lorank.data import load_run


def rerank_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="A lorank run dir (its last checkpoint is used) or a checkpoint dir."),
    out: Path = typer.Option(..., "--out", help="TREC run to write (atomically)."),
    eval_set: Optional[str] = typer.Option(None, "--eval", help="A named set (dl19, dl20) or a TREC-DL-style folder."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="queries.tsv (with --run and --collection)."),
    run: Optional[Path] = typer.Option(None, "--run", help="First-stage TREC run to rerank."),
    collection: Optional[Path] = typer.Option(None, "--collection", help="collection.tsv with the candidates' text."),
    beir: Optional[Path] = typer.Option(None, "--beir", help="A BEIR folder (corpus.jsonl, queries.jsonl, qrels/) whose "
                                        "--split --run reranks, e.g. the run of lorank retrieve --beir; its qrels "
                                        "evaluate the result."),
    split: str = typer.Option("test", "--split", help="With --beir: the qrels split whose queries --run holds."),
    depth: int = typer.Option(100, "--depth", min=1, help="Rerank this many candidates per query."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading a pickle-based adapter (unsafe)."),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="Evaluate the reranked run against these qrels."),
    rel_threshold: Optional[int] = typer.Option(None, "--rel-threshold", help="Grade at or above which a document is "
                                                "relevant for MRR, recall, MAP (default: 1 with --beir, whose qrels "
                                                "are binary; else 2, TREC DL's)."),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="Score with N local processes, split by query (each with cores/N threads); "
                                       "under torchrun use lorank.inference.shard.rerank_shard."),
    prefix_cache: bool = typer.Option(False, "--prefix-cache/--no-prefix-cache",
                                      help="Encode each query's prefix once and reuse its KV cache for its candidates."),
    merge_lora: bool = typer.Option(True, "--merge-lora/--no-merge-lora",
                                    help="Merge the LoRA deltas into the base weights before scoring (one matmul per "
                                         "projection; scores equal within the precision's rounding)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: $LORANK_DEVICE, "
                                         "else a GPU where there is one); with --processes each worker takes a GPU."),
) -> None:
    """Rerank a candidate run with a trained adapter and write a TREC run."""
    from lorank.reranker import Reranker
    from lorank.evaluation import evaluate, write_run

    with guard():
        rs = cli_subject(adapter, eval_set, queries, run, collection, qrels, beir=beir, split=split,
                         verb="rerank").candidates
        qs, ps, r, qr = rs.queries, rs.passages, rs.run, rs.qrels
        n = sum(min(len(v), depth) for v in r.values())
        if processes > 1:
            from lorank.inference.shard import ScorerSpec, sharded_rerank

            if allow_pickle:
                raise typer.BadParameter("--allow-pickle is not supported with --processes > 1")
            from lorank.models.device import resolve_device
            from lorank.precision import decide

            prec = decide(None, resolve_device(device))
            console.print(f"scoring {n} pairs with {processes} processes; precision {prec}")
            sharded_rerank(ScorerSpec(adapter=str(adapter), prefix_cache=prefix_cache, bf16=prec.bf16, device=device,
                                      merge_lora=merge_lora),
                           qs, ps, r, out, depth=depth, processes=processes)
            result, used = load_run(out), f"{processes} processes"
        else:
            rr = Reranker.from_adapter(adapter, allow_pickle=allow_pickle, device=device)
            rr.scorer.prefix_cache = prefix_cache
            rr.scorer.merge_lora = merge_lora
            d = rr.scorer.describe()
            console.print(f"scoring {n} pairs on {rr.device}; precision {d['precision']} ({d['reason']})"
                          + ("; prefix cache" if prefix_cache else "") + ("; LoRA merged" if merge_lora else ""))
            with progress("rerank", n) as tick:
                result = rr.rerank(qs, ps, r, depth=depth, progress=tick)
            write_run(out, result, tag="lorank")
            used = str(rr.meta.get("checkpoint"))
    console.print(f"wrote {out} ({len(result)} queries, {n} pairs scored) with {used}")
    if qr:
        thr = rel_threshold if rel_threshold is not None else (1 if beir is not None else 2)
        res = evaluate(qr, result, rel_threshold=thr)
        console.print(f"{res.num_queries} judged queries, binary relevance at grade >= {thr} (nDCG uses the grades)"
                      f"; the reranked top-{depth} only, so recall and MAP are cut there:")
        console.print({k: round(v, 4) for k, v in res.aggregate.items()})

