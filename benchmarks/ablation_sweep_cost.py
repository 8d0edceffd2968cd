"""Measure the cost of a leave-one-layer-out sweep, cached vs naive, on the same adapter and pairs.

    .venv/bin/python benchmarks/ablation_sweep_cost.py --adapter runs/e1 --eval dl19 --queries 5 --depth 20

Writes benchmarks/results/ablation_sweep_cost.json with layers, naive_s, cached_s, cost_fraction
(= cached_s / naive_s), the layer-forward counts, and the largest score difference between the two.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--eval", default="dl19")
    ap.add_argument("--queries", type=int, default=5, help="first N queries (sorted ids) of the eval set")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablation_sweep_cost.json")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from lorank.ablate.engine import score_configs
    from lorank.ablate.sweeps import BASE, build_sweep
    from lorank.atomic import atomic_write_json
    from lorank.data import resolve_eval_set
    from lorank.reranker import Reranker

    rr = Reranker.from_adapter(a.adapter)
    rs = resolve_eval_set(a.eval)
    qids = sorted(rs.run)[: a.queries]
    seqs = [rr.encoder.encode(rs.queries[q], rs.passages[e.docid].text, rs.passages[e.docid].title)
            for q in qids for e in rs.run[q][: a.depth]]
    cfgs = [BASE] + build_sweep("layers-leave-one-out", rr.model)
    res = {}
    for mode in ("naive", "cached"):
        t0 = time.perf_counter()
        res[mode] = score_configs(rr.model, seqs, int(rr.tokenizer.pad_token_id), cfgs, bf16=rr.scorer.bf16,
                                  use_cache=mode == "cached")
        res[mode].wall_s = time.perf_counter() - t0
        print(mode, f"{res[mode].wall_s:.1f} s, {res[mode].layer_calls} layer forwards", flush=True)
    diff = max(float(np.max(np.abs(res["naive"].scores[k] - res["cached"].scores[k]))) for k in res["naive"].scores)
    out = {"layers": len(cfgs) - 1, "configs": len(cfgs) + 1, "pairs": len(seqs), "queries": len(qids),
           "depth": a.depth, "naive_s": round(res["naive"].wall_s, 2), "cached_s": round(res["cached"].wall_s, 2),
           "cost_fraction": round(res["cached"].wall_s / res["naive"].wall_s, 4),
           "naive_layer_forwards": res["naive"].layer_calls, "cached_layer_forwards": res["cached"].layer_calls,
           "layer_forward_fraction": round(res["cached"].layer_calls / res["naive"].layer_calls, 4),
           "max_abs_score_diff": diff, "adapter": str(rr.meta.get("checkpoint")),
           "command": "python benchmarks/ablation_sweep_cost.py " + " ".join(sys.argv[1:])}
    atomic_write_json(a.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
