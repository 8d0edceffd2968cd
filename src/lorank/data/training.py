"""Training data in JSONL: Tevatron groups and hard-negative groups with teacher scores.

Both yield `TrainingExample`s (one query, its positives and negatives). A bad record is a
problem for the line it is on; in lenient mode that record is skipped and counted.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from lorank.data.jsonl import (
    as_number,
    as_object,
    check_json_text,
    get_id,
    get_list,
    get_text,
    iter_json_lines,
)
from lorank.data.lines import LineProblem, Reading, parse_records
from lorank.data.records import Passage, ReadReport, TrainingExample


# -------------------------------------------------------------------------------------- Tevatron
def _tevatron_passage(value: Any, what: str) -> Passage:
    obj = as_object(value, what)
    pid = get_id(obj, "docid", f"{what}.docid", required=False) or ""
    title = get_text(obj, "title", f"{what}.title", required=False, allow_empty=True)
    text = get_text(obj, "text", f"{what}.text", required=True, allow_empty=True)
    if not text.strip() and not title.strip():
        raise LineProblem(f"empty {what}.text")
    return Passage(pid, text, title)


def _tevatron_example(value: Any) -> TrainingExample:
    obj = as_object(value)
    query = get_text(obj, "query")
    qid = get_id(obj, "query_id", required=False)
    positives = [
        _tevatron_passage(p, f"positive_passages[{i}]")
        for i, p in enumerate(get_list(obj, "positive_passages"))
    ]
    if not positives:
        raise LineProblem("'positive_passages' is empty: a training group needs a positive")
    negatives = [
        _tevatron_passage(p, f"negative_passages[{i}]")
        for i, p in enumerate(get_list(obj, "negative_passages", required=False))
    ]
    return TrainingExample(query, positives, negatives, qid=qid)


def iter_tevatron(
    path: str | Path, lenient: bool = False, report: ReadReport | None = None
) -> Iterator[TrainingExample]:
    """Stream Tevatron training JSONL: `query_id` (optional), `query`, `positive_passages`
    and `negative_passages` (optional), each passage `{docid, title, text}`."""
    reading = Reading.start(path, lenient, report)
    yield from parse_records(reading, _tevatron_example, items=iter_json_lines(reading))


# ------------------------------------------------------------------------------ hard negatives
def _texts(obj: dict[str, Any], key: str) -> list[Passage]:
    """The passages of ``pos``/``neg``, with their ids (``pos_ids``/``neg_ids``) and titles
    (``pos_titles``/``neg_titles``) when the line has them (as ``lorank mine`` writes)."""
    texts = [check_json_text(t, f"{key}[{i}]") for i, t in enumerate(get_list(obj, key))]
    extra = {}
    for suffix in ("ids", "titles"):
        k = f"{key}_{suffix}"
        if obj.get(k) is None:
            continue
        vals = get_list(obj, k)
        if len(vals) != len(texts):
            raise LineProblem(f"'{k}' has {len(vals)} entries but '{key}' has {len(texts)} passages")
        extra[suffix] = [check_json_text(str(v) if suffix == "ids" and isinstance(v, int) else v, f"{k}[{i}]",
                                         allow_empty=suffix == "titles") for i, v in enumerate(vals)]
    ids, titles = extra.get("ids", [""] * len(texts)), extra.get("titles", [""] * len(texts))
    return [Passage(pid, t, title) for pid, t, title in zip(ids, texts, titles)]


def _scores(obj: dict[str, Any], key: str, passages: list[Passage], passages_key: str) -> list[float]:
    scores = [as_number(s, f"{key}[{i}]") for i, s in enumerate(get_list(obj, key))]
    if len(scores) != len(passages):
        raise LineProblem(
            f"'{key}' has {len(scores)} scores but '{passages_key}' has {len(passages)} passages"
        )
    return scores


def _hardneg_example(value: Any) -> TrainingExample:
    obj = as_object(value)
    query = get_text(obj, "query")
    qid = get_id(obj, "query_id", required=False) or get_id(obj, "qid", required=False)
    positives, negatives = _texts(obj, "pos"), _texts(obj, "neg")
    if not positives:
        raise LineProblem("'pos' is empty: a training group needs a positive")
    has_pos, has_neg = obj.get("pos_scores") is not None, obj.get("neg_scores") is not None
    if has_pos != has_neg:
        given, missing = ("pos_scores", "neg_scores") if has_pos else ("neg_scores", "pos_scores")
        raise LineProblem(f"'{given}' given without '{missing}': teacher scores need both")
    pos_scores = _scores(obj, "pos_scores", positives, "pos") if has_pos else None
    neg_scores = _scores(obj, "neg_scores", negatives, "neg") if has_neg else None
    return TrainingExample(query, positives, negatives, qid, pos_scores, neg_scores)


def iter_hardneg(
    path: str | Path, lenient: bool = False, report: ReadReport | None = None
) -> Iterator[TrainingExample]:
    """Stream hard-negative JSONL: `query`, `pos` and `neg` (lists of passage texts) and,
    optionally, teacher scores `pos_scores` / `neg_scores`, ids `pos_ids` / `neg_ids` and titles
    `pos_titles` / `neg_titles`, each aligned with its list."""
    reading = Reading.start(path, lenient, report)
    yield from parse_records(reading, _hardneg_example, items=iter_json_lines(reading))
