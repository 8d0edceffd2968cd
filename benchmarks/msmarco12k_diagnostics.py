"""Issue 14 diagnostics of a trained MS MARCO checkpoint against the untrained model: the positive's rank among its
16 passages on 10 training-set queries (lines 0, 40, ..., 360 of a `lorank mine` file; the run samples its 400 queries
at random from 11,989, so these are mostly not among those it saw), and Spearman(score, grade) on 3 DL19 queries x
BM25 top-30. Usage: python benchmarks/msmarco12k_diagnostics.py base runs/msmarco12k-cpu/checkpoint-200 (mined file:
MINED=runs/mined-12k.jsonl, default /tmp/mined.jsonl)."""
import numpy as np, sys, json, itertools
from lorank.reranker import Reranker
from scipy.stats import spearmanr
from lorank.data import resolve_eval_set
lines = [json.loads(l) for l in itertools.islice(open(__import__("os").environ.get("MINED", "/tmp/mined.jsonl")), 0, 400, 40)]  # 10 training-set queries
rs = resolve_eval_set("dl19")
qs = sorted(q for q in rs.run if q in rs.qrels)[:3]
for name in sys.argv[1:]:
    rr = Reranker.from_adapter(name) if name != "base" else Reranker.from_pretrained(None, head_init="yes_no")
    ranks = []
    for l in lines:
        texts = [l["pos"][0]] + l["neg"][:15]
        s = rr.score(l["query"], texts)
        ranks.append(int((s > s[0]).sum()) + 1)
    pairs = [(rs.queries[q], rs.passages[e.docid].text, rs.passages[e.docid].title) for q in qs for e in rs.run[q][:30]]
    g = [rs.qrels[q].get(e.docid, 0) for q in qs for e in rs.run[q][:30]]
    s = rr.scorer.score_pairs(pairs)
    print(name, "train positive rank among 16:", ranks, "mean", np.mean(ranks), "| dl19 spearman(score, grade):", round(spearmanr(s, g)[0], 3), flush=True)
