"""Training groups: 1 positive + (G-1) hard negatives per query, drawn afresh every epoch.

Pools are built from (a) qrels + a first-stage run, (b) Tevatron JSONL, (c) MS MARCO triples,
(d) hard-negative JSONL with teacher scores. The :class:`GroupDataset` samples deterministically
from ``(seed, epoch, index)``, so a resumed run sees exactly the groups an uninterrupted one would.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from lorank.data.records import Passage, TrainingExample

log = logging.getLogger("lorank.train")


@dataclass
class QueryPool:
    qid: str
    query: str
    positives: list[Passage]
    negatives: list[Passage]
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None


@dataclass
class Group:
    qid: str
    query: str
    passages: list[Passage]  # index 0 is the positive
    teacher: list[float] | None = None


@dataclass
class PoolStats:
    queries: int = 0
    positives: int = 0
    negatives: int = 0
    skipped_no_positive: int = 0
    skipped_no_negative: int = 0
    notes: list[str] = field(default_factory=list)
    #: per kind-msmarco source: the evaluation sets mining guarded and what it dropped (lorank.mine.protocol)
    protocol: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.queries} queries, {self.positives} positives, {self.negatives} negatives; "
                f"skipped {self.skipped_no_positive} without a positive, {self.skipped_no_negative} without negatives")


def pools_from_qrels(queries: dict[str, str], passages: dict[str, Passage], run: dict[str, list],
                     qrels: dict[str, dict[str, int]], rel_threshold: int = 2, max_negative_grade: int = 0,
                     unjudged_negatives: bool = True, judged_negatives: bool = True,
                     depth: int = 100, stats: PoolStats | None = None) -> list[QueryPool]:
    """Positives: judged >= rel_threshold. Negatives: judged <= max_negative_grade and/or unjudged
    candidates in the run's top ``depth``. Queries with no positive or no negative are counted and skipped."""
    stats = stats if stats is not None else PoolStats()
    pools = []
    for qid in sorted(qrels):
        if qid not in queries:
            continue
        judged = qrels[qid]
        pos_ids = sorted(d for d, g in judged.items() if g >= rel_threshold and d in passages)
        neg_ids: list[str] = []
        if judged_negatives:
            neg_ids += sorted(d for d, g in judged.items() if g <= max_negative_grade and d in passages)
        if unjudged_negatives:
            neg_ids += [e.docid for e in run.get(qid, [])[:depth] if e.docid not in judged and e.docid in passages]
        if not pos_ids:
            stats.skipped_no_positive += 1
            continue
        if not neg_ids:
            stats.skipped_no_negative += 1
            continue
        seen: set[str] = set()
        neg_ids = [d for d in neg_ids if not (d in seen or seen.add(d))]
        pools.append(QueryPool(qid, queries[qid], [passages[d] for d in pos_ids], [passages[d] for d in neg_ids]))
        stats.queries += 1
        stats.positives += len(pos_ids)
        stats.negatives += len(neg_ids)
    return pools


def pools_from_examples(examples: Iterable[TrainingExample], stats: PoolStats | None = None) -> list[QueryPool]:
    """Tevatron JSONL / hard-negative JSONL examples -> pools (teacher scores kept when present)."""
    stats = stats if stats is not None else PoolStats()
    pools = []
    for i, ex in enumerate(examples):
        if not ex.positives:
            stats.skipped_no_positive += 1
            continue
        if not ex.negatives:
            stats.skipped_no_negative += 1
            continue
        pools.append(QueryPool(ex.qid or f"q{i}", ex.query, list(ex.positives), list(ex.negatives),
                               ex.positive_scores, ex.negative_scores))
        stats.queries += 1
        stats.positives += len(ex.positives)
        stats.negatives += len(ex.negatives)
    return pools


def pools_from_triples(triples: Iterable, stats: PoolStats | None = None) -> list[QueryPool]:
    """MS MARCO triples: all triples of one query text merge into one pool."""
    stats = stats if stats is not None else PoolStats()
    by_q: dict[str, QueryPool] = {}
    for t in triples:
        pool = by_q.get(t.query)
        if pool is None:
            pool = by_q[t.query] = QueryPool(f"t{len(by_q)}", t.query, [], [])
        pid_p, pid_n = f"{pool.qid}-p{len(pool.positives)}", f"{pool.qid}-n{len(pool.negatives)}"
        if all(p.text != t.positive for p in pool.positives):
            pool.positives.append(Passage(pid_p, t.positive))
        if all(p.text != t.negative for p in pool.negatives):
            pool.negatives.append(Passage(pid_n, t.negative))
    pools = list(by_q.values())
    for p in pools:
        stats.queries += 1
        stats.positives += len(p.positives)
        stats.negatives += len(p.negatives)
    return pools


class GroupDataset:
    """A torch-style dataset of groups. ``unit='positive'`` yields one group per (query, positive)
    each epoch; ``unit='query'`` one group per query with a random positive (Tevatron style).

    Negatives are drawn without replacement when the pool is large enough, with replacement otherwise.
    ``set_epoch`` (called by accelerate's dataloader, and by lorank's trainer) changes the draw.
    """

    def __init__(self, pools: Sequence[QueryPool], group_size: int, seed: int = 0, unit: str = "positive"):
        if group_size < 2:
            raise ValueError("group_size must be >= 2 (1 positive + at least 1 negative)")
        if unit not in ("positive", "query"):
            raise ValueError("unit must be 'positive' or 'query'")
        if not pools:
            raise ValueError("no training groups: every query lacked a positive or negatives")
        self.pools = list(pools)
        self.group_size = group_size
        self.seed = seed
        self.unit = unit
        self.epoch = 0
        self.index = ([(i, j) for i, p in enumerate(self.pools) for j in range(len(p.positives))]
                      if unit == "positive" else [(i, -1) for i in range(len(self.pools))])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int) -> Group:
        pi, pos_j = self.index[idx]
        pool = self.pools[pi]
        rng = random.Random(hash((self.seed, self.epoch, idx)) & 0xFFFFFFFF)
        if pos_j < 0:
            pos_j = rng.randrange(len(pool.positives))
        k = self.group_size - 1
        n = len(pool.negatives)
        neg_idx = rng.sample(range(n), k) if n >= k else [rng.randrange(n) for _ in range(k)]
        passages = [pool.positives[pos_j]] + [pool.negatives[i] for i in neg_idx]
        teacher = None
        if pool.positive_scores is not None and pool.negative_scores is not None:
            teacher = [pool.positive_scores[pos_j]] + [pool.negative_scores[i] for i in neg_idx]
        return Group(pool.qid, pool.query, passages, teacher)
