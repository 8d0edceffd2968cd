"""``lorank mine``: hard negatives for training queries (a BM25 or teacher window, optional teacher scores, filter).

Python twin of the CLI verb::

    from lorank.mine import mine
    res = mine("msmarco-train-12k", "mined.jsonl", collections=["self"], window="10-100")

See :mod:`lorank.mine.negatives` for what is kept, dropped and counted, and :mod:`lorank.mine.protocol` for the
evaluation protocol: an evaluation set's pool is no mining collection, and every evaluation set is guarded.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lorank.data import load_collection
from lorank.data.msmarco import load_msmarco_train
from lorank.data.records import Passage
from lorank.data.sources import EVAL_SETS, resolve_eval_set
from lorank.errors import ConfigError, DataError
from lorank.mine.negatives import (MinedQuery, MineStats, check_no_eval_queries, merge_collections, mine_queries,
                                   summary_path, write_mined)
from lorank.mine.protocol import check_mining_collections, guarded_eval_sets, load_guard, protocol_violations
from lorank.mine.window import RankWindow
from lorank.teacher import BiEncoder

__all__ = ["MineResult", "MineStats", "MinedQuery", "RankWindow", "check_mining_collections", "guarded_eval_sets",
           "load_collection_spec", "mine", "mine_train_set", "protocol_violations", "summary_path"]

log = logging.getLogger("lorank.mine")


@dataclass
class MineResult:
    path: Path | None
    stats: MineStats
    mined: list[MinedQuery]


def load_collection_spec(spec: str, train: Any, data_root: str | Path | None = None) -> dict[str, Passage]:
    """``self``: the training set's own collection (``train``, a loaded MsMarcoTrainSet); a folder holding
    ``collection.tsv``; or a ``collection.tsv`` file. An evaluation set's pool (``dl20``) is refused before this is
    called (:func:`lorank.mine.protocol.check_mining_collections`)."""
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
    raise DataError(spec, None, "unknown collection: use 'self', a folder with collection.tsv, or a collection.tsv "
                                "file (of training passages)")


def mine_train_set(train: str | Path, collections: Sequence[str] = ("self",), window: Any = "10-100",
                   exclude_eval: Sequence[str] = ("dl19",), max_negatives: int | None = None, teacher: bool = False,
                   teacher_dir: str | None = None, teacher_filter: bool = False, data_root: str | Path | None = None,
                   max_queries: int | None = None, rel_threshold: int = 1,
                   progress: Callable[[int], None] | None = None, miner: str = "bm25",
                   cache: bool = True, evaluated: Sequence[str] = (), test_sets: Sequence[str] = (),
                   protocol_sets: bool = True,
                   collections_field: str = "mine.collections") -> tuple[list[MinedQuery], MineStats]:
    """Mine in memory (the ``kind: msmarco`` training source calls this when it mines on the fly).

    The protocol (:mod:`lorank.mine.protocol`): a collection that is an evaluation set's pool is refused
    (``collections_field`` names the option in the message); the guarded sets are ``exclude_eval`` + ``evaluated``
    (the sets the training run evaluates on; ``test_sets`` among them) + the protocol's dev and test sets
    (``protocol_sets``; off only for data outside the protocol, e.g. ``lorank mine --no-exclude-eval``)."""
    check_mining_collections(collections, evaluated, test_sets, collections_field)
    win = RankWindow.parse(window)
    if teacher_filter and not teacher:
        raise ConfigError("teacher_filter needs teacher scores: add --teacher")
    stats = MineStats()
    t0 = time.perf_counter()
    ts = load_msmarco_train(train, data_root, rel_threshold=rel_threshold, max_queries=max_queries)
    stats.queries_without_positive = ts.counts["queries_without_qrels"] + ts.counts["queries_positive_text_missing"]
    guard = load_guard(guarded_eval_sets(exclude_eval, evaluated, protocol_sets), data_root,
                       required=[*exclude_eval, *evaluated])
    check_no_eval_queries({q: ts.queries[q] for q in ts.positives}, guard.sets)
    eval_pool = guard.pool_ids
    colls = [load_collection_spec(c, ts, data_root) for c in collections]
    if "self" not in collections:
        colls.append({d: ts.passages[d] for ds in ts.positives.values() for d in ds})  # positives are always there
    corpus = merge_collections(colls, stats)
    stats.seconds["load"] = round(time.perf_counter() - t0, 2)
    bi = None
    if teacher:
        bi = BiEncoder(teacher_dir)
    stats.settings = {"train": str(train), "collections": list(collections), "window": str(win),
                      "exclude_eval": list(exclude_eval), "max_negatives": max_negatives, "teacher": teacher,
                      "teacher_dir": teacher_dir, "teacher_filter": teacher_filter, "max_queries": max_queries,
                      "rel_threshold": rel_threshold, "miner": miner, "eval_pool_passages": len(eval_pool),
                      "guarded_eval_sets": list(guard.sets), "guarded_eval_sets_not_found": guard.not_found}
    mined = mine_queries(ts.queries, ts.positives, corpus, win, eval_pool, max_negatives, bi, teacher_filter,
                         stats=stats, progress=progress, miner=miner, cache=cache, eval_texts=guard.pool_texts)
    stats.seconds["total"] = round(time.perf_counter() - t0, 2)
    log.info("mined: %s", stats.summary())
    return mined, stats


def mine(train: str | Path, out: str | Path, **kw: Any) -> MineResult:
    """Mine hard negatives for an MS MARCO training folder and write them as hard-negative JSONL (+ summary)."""
    mined, stats = mine_train_set(train, **kw)
    path = write_mined(mined, out, stats)
    return MineResult(path, stats, mined)
