"""Latent LoRA features in a learning-to-rank model (issue 17): LambdaMART on BM25 + the reranker's score + the
r-dimensional LoRA activations A x of the adapted projections, trained on DL20, tested on DL19.

Writes results/ltr_latent.json (the rows: BM25, the reranker alone, LTR(bm25+score),
LTR(bm25+mlp), LTR(all), with nDCG@10 / MRR@10 and Holm-corrected paired t-tests against BM25 and against
the reranker; gain importance by group, layer and projection) and ltr_latent.png (importance by layer).
The feature tables and TREC runs go to --work (default runs/ltr_latent/, kept out of git: ~1 GB of
activations for a 30-layer model at depth 100).

    .venv/bin/python benchmarks/ltr_latent.py --adapter adapters/<reference-run>
    .venv/bin/python benchmarks/ltr_latent.py --adapter DIR --train dl20 --test dl19 --depth 100 \\
        --groups bm25,score,lora --threads 8

Smoke check on a small slice: --max-queries 5 --train-max-queries 10 --depth 20 --out /tmp/x.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _repo_relative(p: str | Path) -> str:
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="a lorank run dir (last checkpoint) or checkpoint dir")
    ap.add_argument("--train", default="dl20", help="LTR training queries: a named set or a TREC-DL folder")
    ap.add_argument("--test", default="dl19", help="test queries: a named set or a TREC-DL folder")
    ap.add_argument("--data", default=None, help="data root (else $LORANK_DATA, ../shared/data)")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--groups", default="bm25,score,lora", help="feature groups extracted (comma-separated)")
    ap.add_argument("--rows", default="bm25,reranker,bm25+score,bm25+mlp,all", help="comparison rows")
    ap.add_argument("--max-queries", type=int, default=None, help="first N judged test queries")
    ap.add_argument("--train-max-queries", type=int, default=None, help="first N judged training queries")
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=1, help="LightGBM threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reuse-features", action="store_true",
                    help="use the feature tables already in --work when they were made with the same settings")
    ap.add_argument("--work", default=str(ROOT / "runs" / "ltr_latent"), help="feature tables, runs, ltr.json")
    ap.add_argument("--out", default=str(RESULTS / "ltr_latent.json"), help="summary JSON (+ .png beside it)")
    a = ap.parse_args(argv)

    import torch

    from lorank.atomic import atomic_write_json
    from lorank.progress import ProgressLines
    from lorank.ltr.pipeline import ltr_study_step

    t0 = time.perf_counter()
    res = ltr_study_step(a.adapter, a.work, train=a.train, test=a.test, groups=a.groups.split(","),
                         rows=a.rows.split(","), depth=a.depth, max_queries=a.max_queries,
                         train_max_queries=a.train_max_queries, data_root=a.data, batch_tokens=a.batch_tokens,
                         seed=a.seed, threads=a.threads,
                         progress=lambda label, total: ProgressLines(label, total),  # a line every 30 s
                         reuse_features=a.reuse_features)
    wall = time.perf_counter() - t0
    out = Path(a.out)
    png = out.with_suffix(".png")
    if res["files"].get("plot"):
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(res["files"]["plot"], png)
    metas = {}
    for role, f in res["features_files"].items():
        m = json.loads(Path(f + ".meta.json").read_text(encoding="utf-8"))
        metas[role] = {k: m.get(k) for k in ("eval_set", "queries", "pairs", "judged_pairs", "columns",
                                             "latent_modules", "seconds", "skipped")}
    summary = {
        "benchmark": "ltr_latent", "issue": 17,
        "command": "python benchmarks/ltr_latent.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "adapter": res.get("adapter"), "train_set": res.get("train_set"), "test_set": res.get("test_set"),
        "depth": a.depth, "groups": a.groups.split(","),
        "headline": {r["row"]: {"ndcg_cut_10": r.get("ndcg_cut_10"), "recip_rank_10": r.get("recip_rank_10")}
                     for r in res["rows"]},
        "rows": [{k: v for k, v in r.items() if k != "grid"} for r in res["rows"]],
        "skipped_rows": res["skipped_rows"], "training": res["training"], "test": res["test"],
        "model": res["model"], "test_method": res["test_method"], "notes": res["notes"], "features": metas,
        # paths relative to the repository (the plot: beside this JSON), not to the machine that ran it
        "wall_s": round(wall, 1), "work_dir": _repo_relative(a.work), "plot": png.name if png.is_file() else None,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": "cuda" if torch.cuda.is_available() else "cpu",
                        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                        "host": platform.node()},
    }
    atomic_write_json(out, summary)
    for name, r in summary["headline"].items():
        print(f"{name:>18}  nDCG@10 {r['ndcg_cut_10']:.4f}  MRR@10 {r['recip_rank_10']:.4f}")
    print(f"wrote {out} ({wall:.0f} s)")
    return summary


if __name__ == "__main__":
    main()
