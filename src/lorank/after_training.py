"""A training run looked at after the fact: its saved checkpoints (or exported adapters kept from an earlier
machine) evaluated on evaluation sets, their paired tests against the first stage, the shipped step at its own
depth, and the standalone ``lorank mine`` command of its mining.

Moved from benchmarks/train_msmarco12k.py (issue 42: benchmarks/ holds scripts only), which and
benchmarks/negative_window.py call it; rows and TREC runs go where ``lorank train`` writes them (the run's
``metrics.jsonl`` and ``runs_trec/``), so an interrupted evaluation resumes.
"""
from __future__ import annotations

import time
from pathlib import Path

from lorank.train.config import EvalSpec, MineSpec
from lorank.data.sources import eval_label
from lorank.export import vs_first_stage
from lorank.layout.checkpoints import checkpoint_dir
from lorank.layout.run import read_metrics
from lorank.reranker import Reranker
from lorank.train.checkpoint_eval import CheckpointEvaluator


def evaluate_checkpoints(run_dir: Path, steps: list[int], sets: list[str], depth: int,
                         folders: dict[int, Path] | None = None, out_dir: Path | None = None) -> None:
    """Evaluate each step's checkpoint (``run_dir/checkpoint-N``, or ``folders[N]``: e.g. an exported adapter kept
    from an earlier machine) on ``sets`` at ``depth``; rows and TREC runs go to ``out_dir`` (default ``run_dir``)."""
    spec = EvalSpec(sets=sets, depth=depth)
    out_dir = out_dir or run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluator = None
    for step in steps:
        ckpt = (folders or {}).get(step, checkpoint_dir(run_dir, step))
        rr = Reranker.from_adapter(ckpt)
        if evaluator is None:
            # each checkpoint is loaded only to be scored: LoRA merged into the base weights (3.68 vs 2.68 pairs/s, fp32)
            evaluator = CheckpointEvaluator(rr.encoder, int(rr.tokenizer.pad_token_id), spec, out_dir, merge_lora=True)
        t0 = time.perf_counter()
        rows = evaluator(rr.model, step, ckpt)
        for r in rows:
            print(f"step {step} {r['eval_set']} (top-{depth}): nDCG@10 {r['ndcg_cut_10']:.4f} MRR@10 "
                  f"{r['recip_rank_10']:.4f} ({r['pairs_per_s']:.1f} pairs/s, precision {rr.scorer.precision})", flush=True)
        if not rows:
            print(f"step {step}: already evaluated", flush=True)
        del rr
        print(f"  {time.perf_counter() - t0:.0f} s", flush=True)

def significance(run_dir: Path, step: int, sets: list[str]) -> dict:
    """Paired t-tests (Holm per measure) of the checkpoint's reranked run vs the BM25 run, over judged queries:
    :func:`lorank.export.vs_first_stage`, the comparison an exported adapter records."""
    vs = vs_first_stage(run_dir, step, [{"eval_set": eval_label(s)} for s in sets], sources={eval_label(s): s for s in sets})
    return {label: v["tests"] for label, v in vs.items() if "tests" in v}

def pooled_vs_first_stage(run_dir: Path, step: int, sets: list[str]) -> dict | None:
    """The checkpoint on ``sets`` pooled (the protocol's dev set: DL19 + DL20 as one, each query once): its figures,
    the first stage's, and paired t-tests (one per measure, unadjusted) with 95% bootstrap CIs, over the pooled
    judged queries; None with fewer than two sets or when a set's reranked run is missing (not evaluated yet)."""
    from types import SimpleNamespace

    from lorank.data import load_run, resolve_eval_set
    from lorank.evaluation import pool_sets
    from lorank.export import MEASURES, one_vs_first_stage
    from lorank.layout.run import TREC_CHECKPOINT, trec_run_file

    if len(sets) < 2:
        return None
    parts = {}
    for s in sets:
        f = trec_run_file(run_dir, TREC_CHECKPOINT, step, eval_label(s))
        if not f.is_file():
            return None
        rs = resolve_eval_set(s)
        parts[eval_label(s)] = (rs.qrels, {"first_stage": rs.run, "reranked": load_run(f)})
    qrels, runs = pool_sets(parts)
    labels = list(parts)
    pooled = SimpleNamespace(qrels=qrels, run=runs["first_stage"], name="+".join(labels))
    vs = one_vs_first_stage(pooled, runs["reranked"])  # its tests hold the reranked run's figures ("value")
    figures = {t["measure"]: round(float(t["value"]), 4) for t in vs["tests"]}
    return {"sets": labels, "queries": len(qrels), **{m: figures[m] for m in MEASURES}, **vs}


def mine_window(data: list[dict]) -> str:
    """The BM25 window the run's (first) mining source used, as ``lorank mine --window`` takes it (``MineSpec``'s
    default where no source mined on the fly)."""
    spec = next((d["mine"] for d in data if isinstance(d, dict) and isinstance(d.get("mine"), dict)), {})
    return MineSpec.model_validate(spec).window

def mine_command(data: list[dict]) -> str:
    """The ``lorank mine`` command that mines what the run's (first) mining source mined on the fly: its
    collections, window and excluded sets (a run whose config mined over an evaluation pool, as the legacy
    ``[self, dl20]`` did, is recorded as it was; ``lorank mine`` now refuses that pool)."""
    spec = next((d["mine"] for d in data if isinstance(d, dict) and isinstance(d.get("mine"), dict)), {})
    m = MineSpec.model_validate(spec)
    return " ".join([".venv/bin/lorank mine --train msmarco-train-12k", *(f"--collection {c}" for c in m.collections),
                     f"--window {m.window}", *(f"--exclude-eval {e}" for e in m.exclude_eval),
                     "--out runs/mined-12k.jsonl"])

def headline(eval_dir: Path, step: int, sets: list[str]) -> dict:
    """The shipped checkpoint's evaluation at the headline depth (its own folder, ``--headline-depth``): figures
    per set, and paired t-tests vs BM25 at that depth."""
    rows = [r for r in read_metrics(eval_dir) if r["step"] == step]
    return {"step": step, "depth": rows[0]["depth"] if rows else None,
            "sets": {r["eval_set"]: {k: r.get(k) for k in ("ndcg_cut_10", "recip_rank_10", "recall_100", "map")}
                     for r in rows if r["eval_set"] in [eval_label(s) for s in sets]},
            "vs_bm25": significance(eval_dir, step, sets), "folder": str(eval_dir)}
