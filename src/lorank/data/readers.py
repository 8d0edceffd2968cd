"""Every reader of `lorank.data` in one place (they live in small modules, one format each).

- `tsv`: MS MARCO queries, collection, top1000 and triples
- `trec`: TREC runs and qrels (BEIR qrels too)
- `beir`: BEIR corpus and queries, and whole BEIR splits
- `training`: Tevatron and hard-negative JSONL
- `rank_llm`: rank_llm retrieve-results JSON
- `rerankset`, `irds`, `sources`: evaluation sets from folders, ir_datasets or by name

All readers validate as they read: a problem raises `DataError(path, line, problem)`, or,
with `lenient=True`, skips the record and counts it in the `ReadReport`.
"""
from __future__ import annotations

from lorank.data.beir import BeirDataset, iter_beir_corpus, iter_beir_queries, load_beir
from lorank.data.irds import load_ir_dataset
from lorank.data.lines import DataReport
from lorank.data.rank_llm import iter_rank_llm
from lorank.data.rerankset import RerankSet, load_beir_rerank_set, load_trec_dl_dir
from lorank.data.sources import find_shared_data, load_eval_data, resolve_data_root, resolve_eval_set
from lorank.data.training import iter_hardneg, iter_tevatron
from lorank.data.trec import iter_qrels, iter_run, load_qrels, load_run
from lorank.data.tsv import (
    iter_collection,
    iter_queries,
    iter_top1000,
    iter_triples,
    load_collection,
    load_queries,
)

__all__ = [
    "BeirDataset",
    "DataReport",
    "RerankSet",
    "find_shared_data",
    "iter_beir_corpus",
    "iter_beir_queries",
    "iter_collection",
    "iter_hardneg",
    "iter_qrels",
    "iter_queries",
    "iter_rank_llm",
    "iter_run",
    "iter_tevatron",
    "iter_top1000",
    "iter_triples",
    "load_beir",
    "load_beir_rerank_set",
    "load_collection",
    "load_ir_dataset",
    "load_qrels",
    "load_queries",
    "load_run",
    "load_trec_dl_dir",
    "load_eval_data",
    "resolve_data_root",
    "resolve_eval_set",
]
