"""An MS MARCO training folder: ``queries.tsv`` + ``qrels.txt`` + ``collection.tsv`` (MS MARCO layout).

``../shared/data/msmarco-train-12k`` is one: train queries, their judged-relevant passages and the text of
those passages, without negatives (``lorank mine`` finds them). Every file is validated as it is read (a bad
line is a ``DataError`` naming file and line); a query that ends up without a positive passage is counted and
reported, never silently dropped.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from lorank.data.records import Passage
from lorank.data.sources import _roots
from lorank.data.trec import load_qrels
from lorank.data.tsv import load_collection, load_queries
from lorank.errors import DataError

log = logging.getLogger("lorank.data")

FILES = {"queries": ("queries.tsv", "queries.train.tsv"), "qrels": ("qrels.txt", "qrels.train.tsv", "qrels.tsv"),
         "collection": ("collection.tsv",)}


@dataclass
class MsMarcoTrainSet:
    """Train queries with their positives. ``positives[qid]`` lists passage ids at grade >= ``rel_threshold``
    whose text is in ``passages``; ``counts`` says what was left out and why."""

    name: str
    queries: dict[str, str]
    passages: dict[str, Passage]
    positives: dict[str, list[str]]
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        c = self.counts
        return (f"{self.name}: {len(self.positives)} queries with a positive ({sum(map(len, self.positives.values()))} "
                f"positives); left out: {c.get('queries_without_qrels', 0)} queries without a judged positive, "
                f"{c.get('queries_positive_text_missing', 0)} whose positives are not in the collection "
                f"({c.get('positives_text_missing', 0)} positive ids without text), "
                f"{c.get('qrels_unknown_query', 0)} qrels lines of unknown queries")


def _find(folder: Path, kind: str) -> Path:
    for name in FILES[kind]:
        if (folder / name).is_file():
            return folder / name
    raise DataError(folder, None, f"not an MS MARCO folder: no {' or '.join(FILES[kind])}")


def resolve_msmarco_dir(name_or_path: str | Path, data_root: str | Path | None = None) -> Path:
    """A folder by path, or by name under the data root (``msmarco-train-12k`` -> ``../shared/data/...``)."""
    p = Path(name_or_path)
    if p.is_dir():
        return p

    tried = []
    for place, root in _roots(data_root):
        if root is None:
            tried.append(f"{place}: not given")
            continue
        if (root / str(name_or_path)).is_dir():
            return root / str(name_or_path)
        tried.append(f"{place}: no folder {root / str(name_or_path)}")
    raise DataError(str(name_or_path), None, "MS MARCO training folder not found; tried:\n  - " + "\n  - ".join(tried))


def load_msmarco_train(name_or_path: str | Path, data_root: str | Path | None = None, rel_threshold: int = 1,
                       max_queries: int | None = None) -> MsMarcoTrainSet:
    """Read an MS MARCO training folder. ``max_queries``: the first N queries with a positive (by qid
    order of the queries file), for quick runs."""
    folder = resolve_msmarco_dir(name_or_path, data_root)
    queries = load_queries(_find(folder, "queries"))
    passages = load_collection(_find(folder, "collection"))
    qrels_path = _find(folder, "qrels")
    qrels = load_qrels(qrels_path)
    counts = {"queries": len(queries), "queries_without_qrels": 0, "queries_positive_text_missing": 0,
              "positives_text_missing": 0, "qrels_unknown_query": 0}
    unknown = [q for q in qrels if q not in queries]
    counts["qrels_unknown_query"] = sum(len(qrels[q]) for q in unknown)
    if unknown:
        log.warning("%s: %d qrels lines name %d queries not in the queries file (e.g. %s): ignored", qrels_path,
                    counts["qrels_unknown_query"], len(unknown), unknown[0])
    positives: dict[str, list[str]] = {}
    for qid in queries:
        judged = [d for d, g in sorted(qrels.get(qid, {}).items()) if g >= rel_threshold]
        if not judged:
            counts["queries_without_qrels"] += 1
            continue
        have = [d for d in judged if d in passages]
        counts["positives_text_missing"] += len(judged) - len(have)
        if not have:
            counts["queries_positive_text_missing"] += 1
            continue
        positives[qid] = have
        if max_queries is not None and len(positives) >= max_queries:
            break
    ts = MsMarcoTrainSet(folder.name, queries, passages, positives, counts)
    if not positives:
        raise DataError(folder, None, "no query has a positive passage: " + ts.summary())
    left_out = counts["queries_without_qrels"] + counts["queries_positive_text_missing"]
    if left_out:
        log.warning("%s", ts.summary())
    return ts
