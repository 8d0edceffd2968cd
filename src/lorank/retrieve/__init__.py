"""First-stage retrieval. Python twin of `lorank retrieve`: `retrieve_beir`."""
from __future__ import annotations

from pathlib import Path

from lorank.data import load_beir
from lorank.data.records import RunEntry
from lorank.evaluation.trec_io import write_run
from lorank.retrieve.bm25 import bm25_retrieve, make_stemmer, pystemmer_available

__all__ = ["bm25_retrieve", "make_stemmer", "pystemmer_available", "retrieve_beir"]


def retrieve_beir(
    dir: str | Path,
    split: str = "test",
    k: int = 100,
    k1: float = 0.9,
    b: float = 0.4,
    out: str | Path | None = None,
    method: str = "lucene",
    stemmer: str | None = "auto",
    tag: str = "bm25",
) -> dict[str, list[RunEntry]]:
    """BM25 over a BEIR dataset folder for the queries judged in `split`.

    Only queries that have judgements in `qrels/<split>.tsv` are searched (all queries when
    the split has no qrels). With `out`, the run is written there in TREC format, atomically.
    """
    ds = load_beir(dir, split=split)
    queries = dict(ds.queries)
    if ds.qrels:
        queries = {q: t for q, t in queries.items() if q in ds.qrels}
    run = bm25_retrieve(ds.corpus, queries, k=k, k1=k1, b=b, method=method, stemmer=stemmer, tag=tag)
    if out is not None:
        write_run(out, run, tag=tag)
    return run
