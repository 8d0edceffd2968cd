"""Measure the cost of a leave-one-layer-out sweep, naive vs cached vs cached with LoRA merged, on the same adapter
and pairs, in one run.

    .venv/bin/python benchmarks/ablation_sweep_cost.py --adapter runs/e1 --eval dl19 --queries 5 --depth 20
    .venv/bin/python benchmarks/ablation_sweep_cost.py --adapter adapters/smollm2-135m-msmarco12k-r8 --modes cached,merged \
        --out results/ablation_sweep_merge.json

Writes results/ablation_sweep_cost.json with layers, naive_s, cached_s, cost_fraction
(= cached_s / naive_s), the layer-forward counts, and the largest score difference between the two; with the
``merged`` mode also merged_s, merged_speedup (cached_s / merged_s) and how far the merged scores are from the
cached ones (largest difference, lowest Spearman over configurations: merging rounds the deltas into bf16 weights).
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
    ap.add_argument("--modes", default="naive,cached", help="comma-separated: naive, cached, merged")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "ablation_sweep_cost.json")
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
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for mode in modes:
        t0 = time.perf_counter()
        res[mode] = score_configs(rr.model, seqs, int(rr.tokenizer.pad_token_id), cfgs, bf16=rr.scorer.bf16,
                                  use_cache=mode != "naive", merge_lora=mode == "merged")
        res[mode].wall_s = time.perf_counter() - t0
        print(mode, f"{res[mode].wall_s:.1f} s, {res[mode].layer_calls} layer forwards", flush=True)
    out: dict = {"layers": len(cfgs) - 1, "configs": len(cfgs) + 1, "pairs": len(seqs), "queries": len(qids),
                 "depth": a.depth, "precision": "bf16" if rr.scorer.bf16 else "fp32",
                 **{f"{m}_s": round(res[m].wall_s, 2) for m in modes},
                 **{f"{m}_layer_forwards": res[m].layer_calls for m in modes}}
    if "naive" in res and "cached" in res:
        diff = max(float(np.max(np.abs(res["naive"].scores[k] - res["cached"].scores[k]))) for k in res["naive"].scores)
        out.update(cost_fraction=round(res["cached"].wall_s / res["naive"].wall_s, 4),
                   layer_forward_fraction=round(res["cached"].layer_calls / res["naive"].layer_calls, 4),
                   max_abs_score_diff=diff)
    if "merged" in res and "cached" in res:
        from scipy.stats import spearmanr

        m, c = res["merged"].scores, res["cached"].scores
        out.update(merged_speedup=round(res["cached"].wall_s / res["merged"].wall_s, 3),
                   merged_max_abs_score_diff=max(float(np.max(np.abs(m[k] - c[k]))) for k in c),
                   merged_min_spearman=round(min(float(spearmanr(m[k], c[k])[0]) for k in c), 5))
    out.update(adapter=str(rr.meta.get("checkpoint")),
               command="python benchmarks/ablation_sweep_cost.py " + " ".join(sys.argv[1:]))
    atomic_write_json(a.out, out)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
