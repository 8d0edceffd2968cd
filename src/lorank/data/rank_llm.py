"""rank_llm retrieve-results JSON: `[{query, hits: [{qid, docid, rank, score, content}]}]`.

`query` is either a string or `{text, qid}`; the qid may also come from the hits, which
must then all agree. Problems name the line the record starts on and, in the text, the
record (0-based) and hit index. In lenient mode a bad hit is skipped on its own, a bad
record (no query, no hits list) with all its hits. A file of one record per line (JSONL)
is read too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from lorank.data.jsonl import as_int, as_number, as_object, check_json_text, get_id, get_list, get_text
from lorank.data.jsonl import iter_json_records
from lorank.data.lines import LineProblem, Reading
from lorank.data.records import Candidate, ReadReport


def _record_query(rec: dict[str, Any]) -> tuple[str | None, str]:
    query = rec.get("query")
    if isinstance(query, dict):
        return get_id(query, "qid", "query.qid", required=False), get_text(query, "text", "query.text")
    if query is None:
        raise LineProblem("missing 'query'")
    return None, check_json_text(query, "'query'")


def _hit(value: Any, qid: str | None, query: str) -> Candidate:
    hit = as_object(value, "hit")
    hit_qid = get_id(hit, "qid", "hit qid", required=False)
    if qid is None:
        qid = hit_qid
        if qid is None:
            raise LineProblem("no qid: neither 'query.qid' nor the hit's 'qid' is given")
    elif hit_qid is not None and hit_qid != qid:
        raise LineProblem(f"hit qid {hit_qid!r} differs from the record's qid {qid!r}")
    docid = get_id(hit, "docid")
    rank = as_int(hit["rank"], "'rank'") if hit.get("rank") is not None else None
    if rank is not None and rank < 0:
        raise LineProblem(f"'rank' {rank} is negative")
    score = as_number(hit["score"], "'score'") if hit.get("score") is not None else None
    return Candidate(qid, query, docid, get_text(hit, "content"), rank, score)


def iter_rank_llm(
    path: str | Path, lenient: bool = False, report: ReadReport | None = None
) -> Iterator[Candidate]:
    """Stream the candidates of a rank_llm retrieve-results file, record by record, hit by hit.

    A docid listed twice for the same qid is a problem.
    """
    reading = Reading.start(path, lenient, report)
    seen: dict[str, set[str]] = {}
    for index, line, value in iter_json_records(reading):
        try:
            rec = as_object(value)
            qid, query = _record_query(rec)
            hits = get_list(rec, "hits")
        except LineProblem as e:
            reading.bad(line, f"record {index}: {e}")
            continue
        for j, hit in enumerate(hits):
            try:
                cand = _hit(hit, qid, query)
                qid = cand.qid
                docs = seen.setdefault(qid, set())
                if cand.docid in docs:
                    raise LineProblem(f"duplicate docid {cand.docid!r} for qid {qid!r}")
                docs.add(cand.docid)
            except LineProblem as e:
                reading.bad(line, f"record {index}, hit {j}: {e}")
                continue
            reading.good()
            yield cand
