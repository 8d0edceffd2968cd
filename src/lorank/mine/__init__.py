"""``lorank mine``: hard negatives for training queries (a BM25 or teacher window, optional teacher scores, filter).

Python twin of the CLI verb::

    from lorank.mine import mine
    res = mine("msmarco-train-12k", "mined.jsonl", collections=["self", "dl20"], window="10-100",
               exclude_eval=["dl19"])

See :mod:`lorank.mine.negatives` for what is kept, dropped and counted.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lorank.data.records import Passage
from lorank.errors import DataError
from lorank.mine.negatives import (MinedQuery, MineStats, check_no_eval_queries, merge_collections, mine_queries,
                                   summary_path, write_mined)
from lorank.mine.window import RankWindow

__all__ = ["MineResult", "MineStats", "MinedQuery", "RankWindow", "load_collection_spec", "mine", "mine_train_set",
           "summary_path"]

log = logging.getLogger("lorank.mine")


@dataclass
class MineResult:
    path: Path | None
    stats: MineStats
    mined: list[MinedQuery]


def load_collection_spec(spec: str, train: Any, data_root: str | Path | None = None) -> dict[str, Passage]:
    """``self``: the training set's own collection (``train``, a loaded MsMarcoTrainSet); ``dl19``/``dl20``:
    that evaluation set's candidate pool; a folder holding ``collection.tsv``; or a ``collection.tsv`` file."""
    from lorank.data import load_collection
    from lorank.data.sources import EVAL_SETS, resolve_eval_set

    if spec == "self":
        return train.passages
    p = Path(spec)
    if p.is_file():
        return load_collection(p)
    if p.is_dir():
        if (p / "collection.tsv").is_file():
            return load_collection(p / "collection.tsv")
        raise DataError(p, None, "collection folder has no collection.tsv")
    if spec.strip().lower() in EVAL_SETS:
        return resolve_eval_set(spec, data_root).passages
    raise DataError(spec, None, "unknown collection: use 'self', an evaluation set name (dl19, dl20), a folder with "
                                "collection.tsv, or a collection.tsv file")


def mine_train_set(train: str | Path, collections: Sequence[str] = ("self",), window: Any = "10-100",
                   exclude_eval: Sequence[str] = ("dl19",), max_negatives: int | None = None, teacher: bool = False,
                   teacher_dir: str | None = None, teacher_filter: bool = False, data_root: str | Path | None = None,
                   max_queries: int | None = None, rel_threshold: int = 1,
                   progress: Callable[[int], None] | None = None, miner: str = "bm25",
                   cache: bool = True) -> tuple[list[MinedQuery], MineStats]:
    """Mine in memory (the ``kind: msmarco`` training source calls this when it mines on the fly)."""
    from lorank.data.msmarco import load_msmarco_train
    from lorank.data.sources import resolve_eval_set

    win = RankWindow.parse(window)
    if teacher_filter and not teacher:
        from lorank.errors import ConfigError

        raise ConfigError("teacher_filter needs teacher scores: add --teacher")
    stats = MineStats()
    t0 = time.perf_counter()
    ts = load_msmarco_train(train, data_root, rel_threshold=rel_threshold, max_queries=max_queries)
    stats.queries_without_positive = ts.counts["queries_without_qrels"] + ts.counts["queries_positive_text_missing"]
    evals = {name: resolve_eval_set(name, data_root) for name in exclude_eval}
    check_no_eval_queries({q: ts.queries[q] for q in ts.positives}, evals)
    eval_pool = {d for rs in evals.values() for d in rs.passages}
    colls = [load_collection_spec(c, ts, data_root) for c in collections]
    if "self" not in collections:
        colls.append({d: ts.passages[d] for ds in ts.positives.values() for d in ds})  # positives are always there
    corpus = merge_collections(colls, stats)
    stats.seconds["load"] = round(time.perf_counter() - t0, 2)
    bi = None
    if teacher:
        from lorank.teacher import BiEncoder

        bi = BiEncoder(teacher_dir)
    stats.settings = {"train": str(train), "collections": list(collections), "window": str(win),
                      "exclude_eval": list(exclude_eval), "max_negatives": max_negatives, "teacher": teacher,
                      "teacher_dir": teacher_dir, "teacher_filter": teacher_filter, "max_queries": max_queries,
                      "rel_threshold": rel_threshold, "miner": miner, "eval_pool_passages": len(eval_pool)}
    mined = mine_queries(ts.queries, ts.positives, corpus, win, eval_pool, max_negatives, bi, teacher_filter,
                         stats=stats, progress=progress, miner=miner, cache=cache)
    stats.seconds["total"] = round(time.perf_counter() - t0, 2)
    log.info("mined: %s", stats.summary())
    return mined, stats


def mine(train: str | Path, out: str | Path, **kw: Any) -> MineResult:
    """Mine hard negatives for an MS MARCO training folder and write them as hard-negative JSONL (+ summary)."""
    mined, stats = mine_train_set(train, **kw)
    path = write_mined(mined, out, stats)
    return MineResult(path, stats, mined)
