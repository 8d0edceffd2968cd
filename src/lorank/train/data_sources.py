"""Turn the config's training sources into query pools."""
from __future__ import annotations

import logging

from lorank.config import TrainData
from lorank.data.records import TrainingExample
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
            pools += pools_from_qrels(rs.queries, rs.passages, rs.run, rs.qrels, src.threshold(),
                                      src.max_negative_grade, src.unjudged_negatives, src.judged_negatives,
                                      src.depth, stats)
        elif src.kind == "tevatron":
            pools += pools_from_examples(D.iter_tevatron(src.path), stats)
        elif src.kind == "hardneg":
            pools += pools_from_examples(D.iter_hardneg(src.path), stats)
        elif src.kind == "triples":
            pools += pools_from_triples(D.iter_triples(src.path), stats)
        elif src.kind == "msmarco":
            pools += msmarco_pools(src, data_root, stats)
    log.info("training pools: %s", stats.summary())
    return pools, stats


def msmarco_pools(src: TrainData, data_root: str | None, stats: PoolStats) -> list[QueryPool]:
    """An MS MARCO folder's queries and positives, with negatives from a ``lorank mine`` file (matched by
    query id; the file's positives must be among the folder's) or mined now (``mine:``)."""
    from lorank.data.msmarco import load_msmarco_train
    from lorank.mine import mine_train_set

    if src.mine is not None:
        m = src.mine
        mined, mstats = mine_train_set(src.path, m.collections, m.window, m.exclude_eval, m.max_negatives, m.teacher,
                                       None, m.teacher_filter, data_root, src.max_queries, src.threshold(),
                                       miner=m.miner)
        stats.notes.append(f"{src.path}: mined on the fly: {mstats.summary()}")
        stats.skipped_no_positive += mstats.queries_without_positive
        stats.skipped_no_negative += mstats.queries_without_negatives
        examples = [TrainingExample(q.query, q.positives, q.negatives, q.qid, q.positive_scores, q.negative_scores)
                    for q in mined]
        return pools_from_examples(examples, stats)
    from lorank.data import iter_hardneg

    ts = load_msmarco_train(src.path, data_root, rel_threshold=src.threshold(), max_queries=src.max_queries)
    stats.skipped_no_positive += ts.counts["queries_without_qrels"] + ts.counts["queries_positive_text_missing"]
    by_qid = {}
    for ex in iter_hardneg(src.negatives):
        if ex.qid is None:
            from lorank.errors import DataError

            raise DataError(src.negatives, None, "a negatives file for kind 'msmarco' needs query_id on every line "
                                                 "(write it with `lorank mine`)")
        by_qid[ex.qid] = ex
    examples = []
    for qid, pos_ids in ts.positives.items():
        ex = by_qid.get(qid)
        if ex is None:
            stats.skipped_no_negative += 1
            continue
        if ex.positive_scores is not None:  # teacher scores: kept when they belong to these very positives
            if [p.pid for p in ex.positives] != pos_ids:
                from lorank.errors import DataError

                raise DataError(src.negatives, None, f"query {qid}: the mined positives {[p.pid for p in ex.positives]} "
                                                     f"are not {src.path}'s {pos_ids}; mine again from this folder")
            examples.append(TrainingExample(ts.queries[qid], list(ex.positives), ex.negatives, qid,
                                            ex.positive_scores, ex.negative_scores))
            continue
        examples.append(TrainingExample(ts.queries[qid], [ts.passages[d] for d in pos_ids], ex.negatives, qid))
    unused = len(set(by_qid) - set(ts.positives))
    if unused:
        stats.notes.append(f"{src.negatives}: {unused} mined queries are not training queries of {src.path} "
                           "(or lie beyond max_queries): not used")
    return pools_from_examples(examples, stats)
