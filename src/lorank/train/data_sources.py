"""Turn the config's training sources into query pools."""
from __future__ import annotations

import logging
from typing import Any, Sequence

from lorank import data as D
from lorank.train.config import TrainData
from lorank.data import iter_hardneg
from lorank.data.msmarco import load_msmarco_train
from lorank.data.records import TrainingExample
from lorank.data.roles import role_of, TEST
from lorank.errors import ConfigError, DataError
from lorank.mine import mine_train_set
from lorank.mine.negatives import check_no_eval_queries
from lorank.mine.protocol import guarded_eval_sets, load_guard
from lorank.train.groups import PoolStats, QueryPool, pools_from_examples, pools_from_qrels, pools_from_triples

log = logging.getLogger("lorank.train")


def build_pools(sources: list[TrainData], data_root: str | None = None, evaluated: Sequence[str] = (),
                test_sets: Sequence[str] = ()) -> tuple[list[QueryPool], PoolStats]:
    """``evaluated``: every set the run evaluates on (``eval.sets`` + ``eval.test_sets``), guarded by a ``kind:
    msmarco`` source beside the protocol's sets (:mod:`lorank.mine.protocol`); a test set is never trained on."""
    stats = PoolStats()
    pools: list[QueryPool] = []
    for src in sources:
        if src.kind == "trec":
            if role_of(src.path, test_sets) == TEST:
                raise ConfigError(f"data: {src.path} is a test set of the evaluation protocol: its queries and qrels "
                                  "may not enter training data (train on msmarco-train-12k; DL20 only for a smoke "
                                  "check evaluated on DL19)")
            rs = D.resolve_eval_set(src.path, data_root)
            if rs.qrels is None:
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
            pools += msmarco_pools(src, data_root, stats, evaluated, test_sets)
    log.info("training pools: %s", stats.summary())
    return pools, stats


def msmarco_pools(src: TrainData, data_root: str | None, stats: PoolStats, evaluated: Sequence[str] = (),
                  test_sets: Sequence[str] = ()) -> list[QueryPool]:
    """An MS MARCO folder's queries and positives, with negatives from a ``lorank mine`` file (matched by
    query id; the file's positives must be among the folder's) or mined now (``mine:``). Either way the evaluation
    sets are guarded (:mod:`lorank.mine.protocol`): ``mine.exclude_eval`` + ``evaluated`` + the protocol's sets."""
    if src.mine is not None:
        m = src.mine
        mined, mstats = mine_train_set(src.path, m.collections, m.window, m.exclude_eval, m.max_negatives, m.teacher,
                                       None, m.teacher_filter, data_root, src.max_queries, src.threshold(),
                                       miner=m.miner, evaluated=evaluated, test_sets=test_sets)
        stats.notes.append(f"{src.path}: mined on the fly: {mstats.summary()}")
        stats.protocol[src.path] = {
            "guarded_eval_sets": mstats.settings["guarded_eval_sets"],
            "guarded_eval_sets_not_found": mstats.settings["guarded_eval_sets_not_found"],
            "negatives_in_eval_pool_dropped": mstats.dropped_eval_pool,
            "positives_in_eval_pool_dropped": mstats.positives_in_eval_pool,
            "queries_without_clean_positive": mstats.queries_without_clean_positive,
            "collection_passages_in_eval_pool": mstats.collection_passages_in_eval_pool}
        stats.skipped_no_positive += mstats.queries_without_positive
        stats.skipped_no_negative += mstats.queries_without_negatives
        examples = [TrainingExample(q.query, q.positives, q.negatives, q.qid, q.positive_scores, q.negative_scores)
                    for q in mined]
        return pools_from_examples(examples, stats)

    ts = load_msmarco_train(src.path, data_root, rel_threshold=src.threshold(), max_queries=src.max_queries)
    stats.skipped_no_positive += ts.counts["queries_without_qrels"] + ts.counts["queries_positive_text_missing"]
    by_qid = {}
    for ex in iter_hardneg(src.negatives):
        if ex.qid is None:
            raise DataError(src.negatives, None, "a negatives file for kind 'msmarco' needs query_id on every line "
                                                 "(write it with `lorank mine`)")
        by_qid[ex.qid] = ex
    guard, counts = _guard_file(src, data_root, ts, evaluated, stats)
    examples = []
    for qid, pos_ids in ts.positives.items():
        ex = by_qid.get(qid)
        if ex is None:
            stats.skipped_no_negative += 1
            continue
        if ex.positive_scores is not None:  # teacher scores: kept when they belong to these very positives
            if [p.pid for p in ex.positives] != pos_ids:
                raise DataError(src.negatives, None, f"query {qid}: the mined positives {[p.pid for p in ex.positives]} "
                                                     f"are not {src.path}'s {pos_ids}; mine again from this folder")
            ex = TrainingExample(ts.queries[qid], list(ex.positives), ex.negatives, qid,
                                 ex.positive_scores, ex.negative_scores)
        else:
            ex = TrainingExample(ts.queries[qid], [ts.passages[d] for d in pos_ids], ex.negatives, qid)
        ex = _drop_eval_pool(ex, guard, counts)  # its passages in an evaluation pool, by id or text
        if ex is not None:
            examples.append(ex)
    log.info("%s: evaluation pools (%s): dropped %d positives and %d negatives of %s, %d queries left without a "
             "positive", src.path, ", ".join(counts["guarded_eval_sets"]), counts["positives_in_eval_pool_dropped"],
             counts["negatives_in_eval_pool_dropped"], src.negatives, counts["queries_without_clean_positive"])
    unused = len(set(by_qid) - set(ts.positives))
    if unused:
        stats.notes.append(f"{src.negatives}: {unused} mined queries are not training queries of {src.path} "
                           "(or lie beyond max_queries): not used")
    return pools_from_examples(examples, stats)


def _guard_file(src: TrainData, data_root: str | None, ts: Any, evaluated: Sequence[str],
                stats: PoolStats) -> tuple[Any, dict[str, Any]]:
    """The guard of a negatives file (``negatives:``): the protocol's sets + ``evaluated``; a training query that
    is an evaluation query is refused, as when mining."""
    guard = load_guard(guarded_eval_sets((), evaluated), data_root, required=evaluated)
    check_no_eval_queries({q: ts.queries[q] for q in ts.positives}, guard.sets)
    counts = {"guarded_eval_sets": list(guard.sets), "guarded_eval_sets_not_found": guard.not_found,
              "negatives_in_eval_pool_dropped": 0, "positives_in_eval_pool_dropped": 0,
              "queries_without_clean_positive": 0}
    stats.protocol[src.path] = counts
    return guard, counts


def _drop_eval_pool(ex: TrainingExample, guard: Any, counts: dict[str, Any]) -> TrainingExample | None:
    """A negatives-file example less its passages (positives and negatives, by id or text) that lie in an
    evaluation pool; None when no positive is left (counted)."""
    scored = ex.positive_scores is not None and ex.negative_scores is not None
    pos = list(zip(ex.positives, ex.positive_scores if scored else [None] * len(ex.positives)))
    negs = list(zip(ex.negatives, ex.negative_scores if scored else [None] * len(ex.negatives)))
    keep_pos = [(p, s) for p, s in pos if not guard.in_pool(p.pid, p.text)]
    keep_neg = [(p, s) for p, s in negs if not guard.in_pool(p.pid, p.text)]
    counts["positives_in_eval_pool_dropped"] += len(pos) - len(keep_pos)
    counts["negatives_in_eval_pool_dropped"] += len(negs) - len(keep_neg)
    if not keep_pos:
        counts["queries_without_clean_positive"] += 1
        return None
    if len(keep_pos) == len(pos) and len(keep_neg) == len(negs):
        return ex
    return TrainingExample(ex.query, [p for p, _ in keep_pos], [p for p, _ in keep_neg], ex.qid,
                           [s for _, s in keep_pos] if scored else None, [s for _, s in keep_neg] if scored else None)
