"""Turn the config's training sources into query pools."""
from __future__ import annotations

import logging

from lorank.config import TrainData
from lorank.train.groups import PoolStats, QueryPool, pools_from_examples, pools_from_qrels, pools_from_triples

log = logging.getLogger("lorank.train")


def build_pools(sources: list[TrainData], data_root: str | None = None) -> tuple[list[QueryPool], PoolStats]:
    from lorank import data as D

    stats = PoolStats()
    pools: list[QueryPool] = []
    for src in sources:
        if src.kind == "trec":
            rs = D.resolve_eval_set(src.path, data_root)
            if rs.qrels is None:
                from lorank.errors import DataError

                raise DataError(src.path, None, "a 'trec' training source needs qrels")
            pools += pools_from_qrels(rs.queries, rs.passages, rs.run, rs.qrels, src.rel_threshold,
                                      src.max_negative_grade, src.unjudged_negatives, src.judged_negatives,
                                      src.depth, stats)
        elif src.kind == "tevatron":
            pools += pools_from_examples(D.iter_tevatron(src.path), stats)
        elif src.kind == "hardneg":
            pools += pools_from_examples(D.iter_hardneg(src.path), stats)
        elif src.kind == "triples":
            pools += pools_from_triples(D.iter_triples(src.path), stats)
    log.info("training pools: %s", stats.summary())
    return pools, stats
