"""Hard negatives for training queries: BM25 (bm25s) or the bi-encoder teacher over one or more collections,
ranks in a window.

For each training query with a positive: retrieve the top ``window.last`` passages over the union of the
collections (``miner``: ``bm25``, or ``teacher``: the bi-encoder's exact inner product over every passage), keep
those ranked inside the window that are not a judged positive of the query, drop (and count) those that lie in
an evaluation set's pool (by passage id or text: the guarded sets of :mod:`lorank.mine.protocol`), and optionally
score every passage with the bi-encoder teacher (for ``contrastive_distill``/``distill_kl``) and drop negatives the
teacher scores above the query's best positive (likely false negatives). A judged positive that lies in an
evaluation pool is dropped (counted; a query left without a positive is skipped, counted). The teacher never sees
an evaluation pool's passage: the teacher miner encodes (and caches) the collection less those passages, and the
teacher scores only the kept positives and negatives. A training query that *is* an evaluation query (same id
or same text) is refused with an error: it would leak the evaluation into training.

The output is hard-negative JSONL (FlagEmbedding's format, which ``kind: hardneg`` reads): ``query_id``,
``query``, ``pos``/``neg`` texts, ``pos_ids``/``neg_ids``, ``neg_ranks`` and, with a teacher,
``pos_scores``/``neg_scores``; beside it ``<out>.summary.json`` with every count and the settings.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from lorank.atomic import atomic_open, atomic_write_json
from lorank.data.records import Passage
from lorank.errors import ConfigError, DataError
from lorank.mine.window import RankWindow
from lorank.retrieve.bm25 import bm25_retrieve
from lorank.retrieve.dense import dense_retrieve

log = logging.getLogger("lorank.mine")
MINERS = ("bm25", "teacher")


@dataclass
class MinedQuery:
    qid: str
    query: str
    positives: list[Passage]
    negatives: list[Passage]
    negative_ranks: list[int]
    positive_scores: list[float] | None = None
    negative_scores: list[float] | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"query_id": self.qid, "query": self.query,
                             "pos": [p.text for p in self.positives], "neg": [p.text for p in self.negatives],
                             "pos_ids": [p.pid for p in self.positives], "neg_ids": [p.pid for p in self.negatives],
                             "neg_ranks": self.negative_ranks}
        if any(p.title for p in self.positives + self.negatives):
            d["pos_titles"] = [p.title for p in self.positives]
            d["neg_titles"] = [p.title for p in self.negatives]
        if self.positive_scores is not None:
            d["pos_scores"] = self.positive_scores
            d["neg_scores"] = self.negative_scores
        return d


@dataclass
class MineStats:
    """Everything mining left out, counted (nothing is dropped silently)."""

    train_queries: int = 0
    queries_written: int = 0
    positives: int = 0
    negatives: int = 0
    queries_without_positive: int = 0
    queries_without_negatives: int = 0
    candidates_in_window: int = 0
    dropped_positive: int = 0
    dropped_eval_pool: int = 0  # negatives in the window that lie in an evaluation pool (by id or text)
    dropped_teacher_above_positive: int = 0
    truncated_to_max_negatives: int = 0
    positives_in_eval_pool: int = 0  # judged positives in an evaluation pool (by id or text): dropped
    queries_without_clean_positive: int = 0  # queries whose every positive lies in an evaluation pool: skipped
    collection_passages_in_eval_pool: int = 0  # never negatives, never encoded by the teacher miner
    collection_passages: int = 0
    duplicate_passage_ids: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        return (f"{self.queries_written}/{self.train_queries} queries written, {self.negatives} negatives "
                f"(mean {self.negatives / max(self.queries_written, 1):.1f}); dropped: {self.dropped_eval_pool} in an "
                f"evaluation pool, {self.dropped_positive} judged positives, {self.dropped_teacher_above_positive} "
                f"scored by the teacher above the positive, {self.positives_in_eval_pool} positives in an evaluation "
                f"pool ({self.queries_without_clean_positive} queries left with none); {self.queries_without_negatives} "
                f"queries left without negatives, {self.queries_without_positive} without a positive")


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def check_no_eval_queries(queries: dict[str, str], eval_sets: dict[str, Any]) -> None:
    """Refuse (ConfigError) when a training query is an evaluation query, by id or by text."""
    problems = []
    for name, rs in eval_sets.items():
        by_text = {_norm(t): q for q, t in rs.queries.items()}
        for qid, text in queries.items():
            if qid in rs.queries and _norm(rs.queries[qid]) == _norm(text):
                problems.append(f"training query {qid} is {name} query {qid} ({text!r})")
            elif _norm(text) in by_text:
                problems.append(f"training query {qid} ({text!r}) has the text of {name} query {by_text[_norm(text)]}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise ConfigError([f"evaluation query in the training set: {p}" for p in problems[:5]]
                          + ([f"{len(problems)} in all{more}: remove them from the training set"] if more else []))


def merge_collections(collections: Sequence[dict[str, Passage]], stats: MineStats) -> dict[str, Passage]:
    """The union by passage id. The same id with different text in two collections is an error."""
    out: dict[str, Passage] = {}
    for coll in collections:
        for pid, p in coll.items():
            old = out.get(pid)
            if old is None:
                out[pid] = p
            elif _norm(old.text) != _norm(p.text):
                raise DataError(None, None, f"passage id {pid} has different texts in two collections: "
                                            f"{old.text[:60]!r} vs {p.text[:60]!r}")
            else:
                stats.duplicate_passage_ids += 1
    stats.collection_passages = len(out)
    return out


def mine_queries(queries: dict[str, str], positives: dict[str, list[str]], corpus: dict[str, Passage],
                 window: RankWindow, eval_pool: set[str] | None = None, max_negatives: int | None = None,
                 teacher: Any = None, teacher_filter: bool = False, teacher_scale: float = 20.0,
                 stats: MineStats | None = None, progress: Callable[[int], None] | None = None,
                 bm25: dict[str, Any] | None = None, miner: str = "bm25", cache: bool = False,
                 eval_texts: set[str] | None = None) -> list[MinedQuery]:
    """Mine negatives for every query of ``positives`` (whose ids must be in ``corpus``). ``cache``: keep the
    teacher's embeddings in the lorank cache (``BiEncoder.encode(..., cache=True)``). ``eval_pool`` /
    ``eval_texts``: the passage ids / normalised texts of the evaluation pools: such a passage is neither a
    negative nor a positive, and the teacher never encodes it."""
    if miner not in MINERS:
        raise ConfigError(f"unknown miner {miner!r}: use one of {', '.join(MINERS)}")
    if miner == "teacher" and teacher is None:
        raise ConfigError("miner 'teacher' ranks the pool with the bi-encoder teacher: add --teacher")
    stats = stats if stats is not None else MineStats()
    eval_pool, eval_texts = eval_pool or set(), eval_texts or set()
    in_pool = {d for d, p in corpus.items() if d in eval_pool or (eval_texts and _norm(p.text) in eval_texts)}
    stats.collection_passages_in_eval_pool += len(in_pool)
    qids = [q for q in positives if q in queries]
    stats.train_queries += len(qids)
    clean: dict[str, list[str]] = {}
    for q in qids:  # judged positives in an evaluation pool are dropped; a query left without one is skipped
        clean[q] = [d for d in positives[q] if d not in in_pool and d not in eval_pool]
        stats.positives_in_eval_pool += len(positives[q]) - len(clean[q])
        stats.queries_without_clean_positive += not clean[q]
    qids = [q for q in qids if clean[q]]
    t0 = time.perf_counter()
    embeddings = None
    if miner == "teacher":  # the pool less the evaluation passages: they never reach the teacher or its cache
        pool = {d: p for d, p in corpus.items() if d not in in_pool} if in_pool else corpus
        embeddings = _pool_embeddings(pool, {q: queries[q] for q in qids}, teacher, cache)
        stats.seconds["teacher"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        run = _dense_run(embeddings, window.last)
        stats.seconds["dense"] = round(time.perf_counter() - t0, 2)
    else:
        run = bm25_retrieve(corpus, {q: queries[q] for q in qids}, k=window.last, **(bm25 or {}))
        stats.seconds["bm25"] = round(time.perf_counter() - t0, 2)
    mined: list[MinedQuery] = []
    excluded = in_pool | eval_pool
    for qid in qids:
        pos_ids = clean[qid]
        negs = _window_negatives(run.get(qid, []), window, set(positives[qid]), excluded, stats)
        mined.append(MinedQuery(qid, queries[qid], [corpus[d] for d in pos_ids], [corpus[d] for d, _ in negs],
                                [r for _, r in negs]))
        if progress:
            progress(1)
    if teacher is not None:
        t0 = time.perf_counter()
        _teacher_scores(mined, teacher, teacher_scale, cache, embeddings)
        stats.seconds["teacher"] = stats.seconds.get("teacher", 0.0) + round(time.perf_counter() - t0, 2)
    return _filter_and_cap(mined, teacher_filter, max_negatives, stats)


def _window_negatives(entries: list[Any], window: RankWindow, pos_set: set[str], excluded: set[str],
                      stats: MineStats) -> list[tuple[str, int]]:
    """(docid, rank) of one query's candidates in the rank window that are neither a judged positive (kept or
    not, ``pos_set``) nor an evaluation-pool passage (``excluded``); each drop counted in ``stats``."""
    negs: list[tuple[str, int]] = []
    for e in entries:
        if e.rank not in window:
            continue
        stats.candidates_in_window += 1
        if e.docid in pos_set:
            stats.dropped_positive += 1
        elif e.docid in excluded:
            stats.dropped_eval_pool += 1
        else:
            negs.append((e.docid, e.rank))
    return negs


def _filter_and_cap(mined: list[MinedQuery], teacher_filter: bool, max_negatives: int | None,
                    stats: MineStats) -> list[MinedQuery]:
    """The mined queries after the teacher filter (no negative the teacher scores above the best positive) and
    the cap of ``max_negatives``; a query left without negatives is dropped. Counted in ``stats``."""
    out = []
    for m in mined:
        if teacher_filter and m.positive_scores is not None:
            best = max(m.positive_scores)
            keep = [i for i, s in enumerate(m.negative_scores or []) if s <= best]
            stats.dropped_teacher_above_positive += len(m.negatives) - len(keep)
            m.negatives = [m.negatives[i] for i in keep]
            m.negative_ranks = [m.negative_ranks[i] for i in keep]
            m.negative_scores = [m.negative_scores[i] for i in keep]  # type: ignore[index]
        if max_negatives is not None and len(m.negatives) > max_negatives:
            stats.truncated_to_max_negatives += len(m.negatives) - max_negatives
            m.negatives, m.negative_ranks = m.negatives[:max_negatives], m.negative_ranks[:max_negatives]
            if m.negative_scores is not None:
                m.negative_scores = m.negative_scores[:max_negatives]
        if not m.negatives:
            stats.queries_without_negatives += 1
            continue
        out.append(m)
        stats.queries_written += 1
        stats.positives += len(m.positives)
        stats.negatives += len(m.negatives)
    return out


@dataclass
class PoolEmbeddings:
    """The teacher's embeddings of a whole mining pool and of the training queries."""

    doc_ids: list[str]
    doc_emb: Any
    query_ids: list[str]
    query_emb: Any


def _encode(teacher: Any, texts: list[str], cache: bool) -> Any:
    return teacher.encode(texts, cache=True) if cache else teacher.encode(texts)


def _pool_embeddings(corpus: dict[str, Passage], queries: dict[str, str], teacher: Any,
                     cache: bool) -> PoolEmbeddings:
    doc_ids = sorted(corpus)
    log.info("teacher: encoding the pool: %d passages and %d queries", len(doc_ids), len(queries))
    d_emb = _encode(teacher, [f"{corpus[d].title} {corpus[d].text}".strip() for d in doc_ids], cache)
    q_ids = list(queries)
    return PoolEmbeddings(doc_ids, d_emb, q_ids, _encode(teacher, [queries[q] for q in q_ids], cache))


def _dense_run(emb: PoolEmbeddings, k: int) -> dict[str, Any]:
    return dense_retrieve(emb.doc_ids, emb.doc_emb, emb.query_ids, emb.query_emb, k=k, tag="teacher")


def _teacher_scores(mined: list[MinedQuery], teacher: Any, scale: float, cache: bool = False,
                    pool: PoolEmbeddings | None = None) -> None:
    """Cosine x ``scale`` of the bi-encoder, each distinct passage and query encoded once (or read from ``pool``)."""
    if pool is not None:
        pids = {d: i for i, d in enumerate(pool.doc_ids)}
        qrow = {q: i for i, q in enumerate(pool.query_ids)}
        d_emb, q_emb = pool.doc_emb, pool.query_emb[[qrow[m.qid] for m in mined]]
    else:
        pids = {}
        texts: list[str] = []
        for m in mined:
            for p in m.positives + m.negatives:
                if p.pid not in pids:
                    pids[p.pid] = len(texts)
                    texts.append(f"{p.title} {p.text}".strip())
        log.info("teacher: encoding %d passages and %d queries", len(texts), len(mined))
        d_emb = _encode(teacher, texts, cache)
        q_emb = _encode(teacher, [m.query for m in mined], cache)
    for qi, m in enumerate(mined):
        score = lambda ps: [round(float(scale * (d_emb[pids[p.pid]] @ q_emb[qi])), 5) for p in ps]  # noqa: E731
        m.positive_scores = score(m.positives)
        m.negative_scores = score(m.negatives)


def write_mined(mined: Sequence[MinedQuery], out: str | Path, stats: MineStats) -> Path:
    """The JSONL (atomically) and ``<out>.summary.json`` beside it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w") as fh:
        for m in mined:
            fh.write(json.dumps(m.to_json(), ensure_ascii=False) + "\n")
    atomic_write_json(summary_path(out), asdict(stats))
    return out


def summary_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".summary.json")
