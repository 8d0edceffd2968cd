"""Out-of-domain check of the reference reranker (issue 23): SciFact test (300 queries, BEIR), BM25 first stage
(`lorank retrieve --beir`), the top-20 reranked by the adapter (`lorank rerank --beir`), paired t-tests against BM25.

    .venv/bin/python benchmarks/scifact_ood.py                     # ~22 min in bf16 on the 2-core AMX CPU
    .venv/bin/python benchmarks/scifact_ood.py --depth 20 --adapter adapters/smollm2-135m-msmarco12k-r8

The two runs go to --work (runs/scifact/; a run that exists is not made again, so an interrupted call goes on with
what is missing). Writes results/scifact_ood.json: nDCG@10 and MRR@10 (binary at grade >= 1, BEIR's
qrels) of BM25 and of the reranked run, the paired t-test (Holm per measure), how many pairs the 196-token input
truncates, the scoring rate and the commands.
"""
from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "scifact_ood.json"
LORANK = ".venv/bin/lorank"  # run from the repository root, as the other benchmarks


def truncation(adapter: str, beir: str, bm25_run: Path, depth: int) -> dict:
    """How many of the reranked (query, document) inputs are longer than the model's max length."""
    from lorank.data import load_beir_rerank_set, load_eval_data
    from lorank.reranker import Reranker

    rr = Reranker.from_adapter(adapter, dtype="fp32")
    rs = load_eval_data(load_beir_rerank_set(beir, bm25_run, split="test"), require_qrels=False)
    enc = rr.encoder
    lens = []
    for q, entries in rs.run.items():
        for e in entries[:depth]:
            p = rs.passages[e.docid]
            lens.append(len(enc.query_ids(rs.queries[q]) + enc.doc_ids(getattr(p, "text", p), getattr(p, "title", "") or "")
                            + enc.eos))
    cut = sum(n > enc.fmt.max_len for n in lens)
    return {"max_length": enc.fmt.max_len, "pairs": len(lens), "truncated": cut, "truncated_fraction": round(cut / len(lens), 4),
            "median_tokens": statistics.median(lens), "mean_tokens": round(sum(lens) / len(lens), 1)}


def _run(cmd: list[str]) -> float:
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", default="adapters/smollm2-135m-msmarco12k-r8")
    ap.add_argument("--beir", default="../shared/data/scifact")
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--work", default="runs/scifact")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--note", action="append", default=[], help="a line for the JSON's notes (repeatable)")
    a = ap.parse_args(argv)

    from lorank.atomic import atomic_write_json
    from lorank.precision import cpu_bf16_capability, decide
    from lorank.evaluation import evaluate_files

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    bm25, reranked = work / "bm25.run", work / f"reranked-top{a.depth}.run"
    commands = {"retrieve": [LORANK, "retrieve", "--beir", a.beir, "--out", str(bm25)],
                "rerank": [LORANK, "rerank", "--adapter", a.adapter, "--beir", a.beir, "--run", str(bm25),
                           "--depth", str(a.depth), "--out", str(reranked)]}
    walls = {}
    for name, path in (("retrieve", bm25), ("rerank", reranked)):
        if path.is_file():
            print(f"{path} exists: not made again", flush=True)
        else:
            walls[name] = round(_run(commands[name]), 1)
    qrels = Path(a.beir) / "qrels" / "test.tsv"
    res = evaluate_files(qrels, [bm25, reranked], rel_threshold=1, measures=["ndcg_cut_10", "recip_rank_10"]).to_dict()
    prec = decide(None, "cpu")
    out = {
        "adapter": a.adapter, "dataset": "BEIR SciFact test", "first_stage": "BM25 (bm25s, lorank retrieve --beir)",
        "depth": a.depth, "rel_threshold": 1,
        "bm25": {k: round(v, 4) for k, v in res["runs"][bm25.name]["aggregate"].items()},
        "reranked": {k: round(v, 4) for k, v in res["runs"][reranked.name]["aggregate"].items()},
        "vs_bm25": res["comparisons"], "queries": res["runs"][bm25.name]["num_queries"],
        "input_length": truncation(a.adapter, a.beir, bm25, a.depth),
        "wall_s": walls, "precision": {"dtype": "bf16" if prec.bf16 else "fp32", "reason": prec.reason},
        "notes": a.note,
        "device": {"cores": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine(),
                   "bf16_capability": cpu_bf16_capability()},
        "commands": {k: shlex.join(v) for k, v in commands.items()} | {
            "this": "python benchmarks/scifact_ood.py " + shlex.join(sys.argv[1:] if argv is None else argv)},
    }
    if "rerank" in walls:
        out["pairs_per_s"] = round(out["input_length"]["pairs"] / walls["rerank"], 2)
    atomic_write_json(Path(a.out), out)
    print(json.dumps({k: out[k] for k in ("bm25", "reranked", "input_length")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
