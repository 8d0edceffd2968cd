"""``lorank rerank``: a candidate run reranked with a trained adapter (:class:`lorank.reranker.Reranker`, or
:func:`lorank.inference.shard.sharded_rerank` with ``--processes N``), or, with ``--method icr``, by in-context
reranking over a base model's attention (:class:`lorank.inference.icr.ICRReranker`, ``lorank.ICRReranker``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lorank.cli.common import cli_subject, console, guard, progress
from lorank.data import load_run
from lorank.errors import ConfigError

METHODS = ("adapter", "icr")


def rerank_cmd(
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="A lorank run dir (its last checkpoint is used) or "
                                           "a checkpoint dir (--method adapter, which needs it)."),
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
    method: str = typer.Option("adapter", "--method", help="adapter: the trained adapter's scores; icr: in-context "
                               "reranking, the attention of a base model (--model) to each candidate, no adapter "
                               "(docs/views.md)."),
    model: Optional[str] = typer.Option(None, "--model", help="--method icr: the base model (name, dir, .gguf or hub "
                                        "id; default: the embedded SmolLM2-135M)."),
    window: Optional[int] = typer.Option(None, "--window", help="--method icr: candidates per prompt (default: all "
                                         "that fit --max-tokens); more are ranked in sliding windows."),
    stride: Optional[int] = typer.Option(None, "--stride", help="--method icr: how far the windows move (default: half "
                                         "a window)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="--method icr: the longest prompt (default: "
                                             "the model's context length)."),
    doc_max_words: int = typer.Option(300, "--doc-max-words", min=0, help="--method icr: cut each candidate to this "
                                      "many words (0: no cut; 300 as the ICR paper)."),
) -> None:
    """Rerank a candidate run with a trained adapter (or by in-context reranking: --method icr) and write a TREC run."""
    from lorank.evaluation import evaluate

    with guard():
        _check_method(method, adapter, model, processes)
        rs = cli_subject(adapter, eval_set, queries, run, collection, qrels, beir=beir, split=split,
                         verb="rerank").candidates
        n = sum(min(len(v), depth) for v in rs.run.values())
        if method == "icr":
            icr = dict(window=window, stride=stride, max_tokens=max_tokens, doc_max_words=doc_max_words or None)
            result, used = _rerank_icr(rs, out, depth, n, model, device, icr)
        else:
            result, used = _rerank_adapter(rs, out, adapter, depth, n, processes, allow_pickle, prefix_cache,
                                           merge_lora, device)
    console.print(f"wrote {out} ({len(result)} queries, {n} pairs scored) with {used}")
    if rs.qrels:
        thr = rel_threshold if rel_threshold is not None else (1 if beir is not None else 2)
        res = evaluate(rs.qrels, result, rel_threshold=thr)
        console.print(f"{res.num_queries} judged queries, binary relevance at grade >= {thr} (nDCG uses the grades)"
                      f"; the reranked top-{depth} only, so recall and MAP are cut there:")
        console.print({k: round(v, 4) for k, v in res.aggregate.items()})


def _check_method(method: str, adapter: Optional[Path], model: Optional[str], processes: int) -> None:
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}: use one of {', '.join(METHODS)}")
    if method == "adapter":
        if adapter is None:
            raise ConfigError("--method adapter (the default) needs --adapter DIR (or use --method icr, which needs "
                              "no adapter)")
        if model is not None:
            raise ConfigError("--model names the base model of --method icr; an adapter names its own base")
    elif adapter is not None:
        raise ConfigError("--method icr reads a base model's attention (--model), not an adapter: leave out --adapter")
    elif processes > 1:
        raise ConfigError("--method icr scores in one process: leave out --processes")


def _rerank_icr(rs: Any, out: Path, depth: int, n: int, model: Optional[str], device: Optional[str],
                icr: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str]:
    from lorank.evaluation import write_run
    from lorank.inference.icr import ICRPrompt, ICRReranker

    words = icr.pop("doc_max_words")
    rr = ICRReranker.from_pretrained(model, device=device, prompt=ICRPrompt(doc_max_words=words), **icr)
    console.print(f"ICR over {n} candidates on {next(rr.model.parameters()).device}; precision {rr.precision}; "
                  f"{rr.meta['model']}")
    with progress("rerank (icr)", n) as tick:
        result = rr.rerank(rs.queries, rs.passages, rs.run, depth=depth, progress=tick)
    write_run(out, result, tag="lorank-icr")
    return result, f"ICR ({rr.meta['model']})"


def _rerank_adapter(rs: Any, out: Path, adapter: Path, depth: int, n: int, processes: int, allow_pickle: bool,
                    prefix_cache: bool, merge_lora: bool, device: Optional[str]) -> tuple[Any, str]:
    from lorank.evaluation import write_run
    from lorank.reranker import Reranker

    qs, ps, r = rs.queries, rs.passages, rs.run
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
        return load_run(out), f"{processes} processes"
    rr = Reranker.from_adapter(adapter, allow_pickle=allow_pickle, device=device)
    rr.scorer.prefix_cache = prefix_cache
    rr.scorer.merge_lora = merge_lora
    d = rr.scorer.describe()
    console.print(f"scoring {n} pairs on {rr.device}; precision {d['precision']} ({d['reason']})"
                  + ("; prefix cache" if prefix_cache else "") + ("; LoRA merged" if merge_lora else ""))
    with progress("rerank", n) as tick:
        result = rr.rerank(qs, ps, r, depth=depth, progress=tick)
    write_run(out, result, tag="lorank")
    return result, str(rr.meta.get("checkpoint"))
