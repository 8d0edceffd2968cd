"""Issue 14: how hard are the mined negatives, by BM25 rank band? The share the bi-encoder teacher (all-MiniLM-L6-v2)
scores above the query's best positive, over the first N training queries of the 12k set, ranks 1-100 mined over the
set's own positives and the DL20 pool (DL19 queries refused, DL19-pool passages dropped), as the training configs mine.

    .venv/bin/python benchmarks/negative_window_teacher.py --queries 300     # ~1 min on 2 cores

A high share means confusable negatives (hard, or unjudged positives); a share near 0 means the group is easy.
Writes ``results/negative_window_teacher.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "results" / "negative_window_teacher.json"
BANDS = {"1-9": (1, 9), "10-30": (10, 30), "31-100": (31, 100), "1-30": (1, 30), "10-100": (10, 100)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    from lorank.mine import mine_train_set

    mined, stats = mine_train_set("msmarco-train-12k", collections=["self", "dl20"], window="1-100",
                                  exclude_eval=["dl19"], teacher=True, max_queries=a.queries)
    bands = {}
    for name, (lo, hi) in BANDS.items():
        above = total = 0
        for m in mined:
            best = max(m.positive_scores)
            for rank, s in zip(m.negative_ranks, m.negative_scores):
                if lo <= rank <= hi:
                    total += 1
                    above += s > best
        bands[name] = {"negatives": total, "teacher_above_positive": above,
                       "share": round(above / total, 4) if total else None}
    res = {"queries": len(mined), "mining": stats.summary(), "bands": bands,
           "command": "python benchmarks/negative_window_teacher.py " + " ".join(sys.argv[1:])}
    from lorank.atomic import atomic_write_json

    atomic_write_json(a.out, res)
    print(json.dumps(bands, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
