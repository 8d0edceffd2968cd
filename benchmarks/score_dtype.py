"""The weights' dtype for CPU scoring: fp32 weights under the scorer's bf16 autocast against bf16 weights, in one run.

    flock /tmp/lorank-heavy.lock .venv/bin/python benchmarks/score_dtype.py \\
        --checkpoint studies_out/paper-smollm2-cpu-seeds/runs/smollm2-135m-r8-all-s43-3b4bee/checkpoint-1000

A checkpoint of a finished training run is loaded twice by ``Reranker.from_adapter`` (``dtype="fp32"``, then
``"bf16"``; the score head is fp32 in both), its LoRA merged as ``lorank rerank`` scores, and the first ``--queries``
judged queries of ``--eval`` (DL19, dev) reranked at ``--depth`` (50) by each, ``--repeats`` times in alternating order
(nothing else should run: take the heavy lock). Reported per dtype: pairs/s (the scoring call alone, tokenisation
included, loading not), nDCG@10, and how the scores compare with the run's own checkpoint evaluation of the same
set (``runs_trec/checkpoint-N.<set>.run``, scored during training with the run's bf16 base weights): the largest
absolute difference, the share of pairs with the very same score, and the queries ranked identically.

Writes results/score_dtype.json. It decided lorank.precision.weights_dtype_name's CPU default (session 27).

``--ablation SWEEP`` measures an ablation sweep instead (``lorank.ablate`` on the checkpoint, the first ``--queries``
queries at ``--depth``, LoRA merged per configuration as on a CPU by default), once per dtype: configuration-pairs/s
(every configuration's pairs over the sweep's wall time), the rate the cost model prices ablations at. Writes
results/score_dtype_ablation.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "score_dtype.json"


def _in_training(ckpt: Path, label: str) -> tuple[dict[str, dict[str, float]], dict]:
    """The run's own evaluation of ``label`` at the checkpoint's step: its scores and its metrics row."""
    from lorank.data import load_run
    from lorank.layout.checkpoints import step_of
    from lorank.layout.run import TREC_CHECKPOINT, read_metrics, trec_run_file

    step = step_of(ckpt)
    f = trec_run_file(ckpt.parent, TREC_CHECKPOINT, step, label) if step is not None else None
    if f is None or not f.is_file():
        raise SystemExit(f"{ckpt}: not a checkpoint of a run with its own evaluation of {label}")
    scores = {q: {e.docid: e.score for e in entries} for q, entries in load_run(f).items()}
    row = next((r for r in read_metrics(ckpt.parent) if r["step"] == step and r["eval_set"] == label), {})
    return scores, row


def _compare(a: dict[str, dict[str, float]], b: dict[str, dict[str, float]]) -> dict:
    keys = [(q, d) for q in a for d in a[q]]
    missing = [k for k in keys if k[1] not in b.get(k[0], {})]
    if missing:
        raise SystemExit(f"{len(missing)} scored pairs are not in the run's own evaluation (first: {missing[0]})")
    diffs = [abs(a[q][d] - b[q][d]) for q, d in keys]
    # the run's file also lists the first stage's candidates below the reranked depth: rank the same pairs
    ranked = sum(sorted(a[q], key=lambda d: (-a[q][d], d)) == sorted(a[q], key=lambda d: (-b[q][d], d)) for q in a)
    return {"max_abs_diff": round(max(diffs), 6), "same_score_share": round(sum(x == 0 for x in diffs) / len(diffs), 4),
            "queries_ranked_identically": f"{ranked}/{len(a)}"}


def _machine() -> dict:
    """The CPU the measurement ran on; refuses a CPU where bf16 is not lorank's choice (nothing to compare)."""
    import torch
    from lorank.precision import cpu_bf16_capability

    cap = cpu_bf16_capability()
    if not cap:
        raise SystemExit("this CPU has no AVX512-BF16/AMX: bf16 is not lorank's choice here, nothing to compare")
    return {"cores": os.cpu_count(), "threads": torch.get_num_threads(), "cpu_bf16": cap,
            "processor": platform.processor() or platform.machine()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="checkpoint-N of a finished lorank training run")
    ap.add_argument("--eval", default="dl19")
    ap.add_argument("--queries", type=int, default=43)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ablation", default=None, help="a sweep (components, ...): measure it instead of reranking")
    a = ap.parse_args()
    if a.ablation:
        return ablation(a)
    a.out = a.out or OUT

    from lorank.data import resolve_eval_set
    from lorank.data.sources import eval_label
    from lorank.evaluation import evaluate
    from lorank.inference.runs import rerank_to_run
    from lorank.reranker import Reranker

    machine = _machine()
    rs = resolve_eval_set(a.eval).subset(a.queries)
    label = eval_label(a.eval)
    own, own_row = _in_training(a.checkpoint, label)
    res: dict[str, dict] = {}
    t_all = time.perf_counter()
    for rep in range(a.repeats):
        for dtype in (("fp32", "bf16") if rep % 2 == 0 else ("bf16", "fp32")):
            rr = Reranker.from_adapter(a.checkpoint, dtype=dtype)
            rr.scorer.merge_lora = True
            t = time.perf_counter()
            scores = rr.scorer.rerank(rs.queries, rs.passages, rs.run, depth=a.depth)
            wall = time.perf_counter() - t
            n = sum(len(v) for v in scores.values())
            r = res.setdefault(dtype, {"pairs": n, "pairs_per_s": [], "scores": scores,
                                       "weights": sorted({str(p.dtype) for p in rr.model.parameters()}),
                                       "precision": rr.scorer.precision})
            r["pairs_per_s"].append(round(n / wall, 2))
            print(f"{dtype} repeat {rep}: {n} pairs in {wall:.1f} s = {n / wall:.2f} pairs/s", flush=True)
            del rr
    out = {"what": "CPU scoring of one checkpoint with fp32 weights under bf16 autocast and with bf16 weights, one "
                   "process, alternating order; scores compared with the run's own checkpoint evaluation (bf16 base "
                   "weights during training)",
           "checkpoint": str(a.checkpoint), "eval_set": label, "role": "dev", "queries": len(rs.queries),
           "depth": a.depth, "repeats": a.repeats,
           "in_training_evaluation": {k: own_row.get(k) for k in ("ndcg_cut_10", "depth", "pairs", "pairs_per_s",
                                                                   "precision", "lora_merged")},
           "machine": {**machine, "load_after": round(os.getloadavg()[0], 2)},
           "command": "python benchmarks/score_dtype.py " + " ".join(sys.argv[1:]), "wall_s": 0.0, "dtypes": {}}
    for dtype, r in res.items():
        run = rerank_to_run(r["scores"], rs.run, a.depth)
        agg = evaluate(rs.qrels, run).aggregate
        out["dtypes"][dtype] = {"weights": r["weights"], "precision": r["precision"], "pairs": r["pairs"],
                                "pairs_per_s": r["pairs_per_s"], "ndcg_cut_10": round(float(agg["ndcg_cut_10"]), 4),
                                "vs_in_training_evaluation": _compare(r["scores"], own)}
    f, b = (max(out["dtypes"][d]["pairs_per_s"]) for d in ("fp32", "bf16"))
    out["speedup_bf16_weights"] = round(b / f, 3)
    out["wall_s"] = round(time.perf_counter() - t_all, 1)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "machine"}, indent=1))
    return 0


def ablation(a: argparse.Namespace) -> int:
    import tempfile

    import lorank
    from lorank.reranker import Reranker

    machine = _machine()
    out = {"what": f"the {a.ablation} ablation sweep of one checkpoint with fp32 weights under bf16 autocast and with "
                   "bf16 weights, one process, LoRA merged per configuration: configuration-pairs/s over the sweep",
           "checkpoint": str(a.checkpoint), "eval_set": a.eval, "role": "dev", "depth": a.depth,
           "machine": machine,
           "command": "python benchmarks/score_dtype.py " + " ".join(sys.argv[1:]), "dtypes": {}}
    for dtype in ("fp32", "bf16"):
        rr = Reranker.from_adapter(a.checkpoint, dtype=dtype)
        subject = lorank.resolve_subject(a.checkpoint, a.eval, reranker=rr)
        with tempfile.TemporaryDirectory() as tmp:
            res = lorank.ablate(subject, sweeps=[a.ablation], depth=a.depth, max_queries=a.queries, out_dir=tmp,
                                write_runs=False, resume=False)
        sw = res["sweeps"][a.ablation]
        configs = len(sw["rows"])
        rate = configs * res["pairs"] / sw["wall_s"]
        out["dtypes"][dtype] = {"configurations": configs, "pairs": res["pairs"], "queries": res["queries"],
                                "wall_s": round(sw["wall_s"], 1), "merged": sw.get("merged"),
                                "configuration_pairs_per_s": round(rate, 2)}
        print(f"{dtype}: {configs} configurations x {res['pairs']} pairs in {sw['wall_s']:.1f} s = {rate:.2f}/s",
              flush=True)
        del rr, subject
    out["speedup_bf16_weights"] = round(out["dtypes"]["bf16"]["configuration_pairs_per_s"]
                                        / out["dtypes"]["fp32"]["configuration_pairs_per_s"], 3)
    path = a.out or OUT.with_name("score_dtype_ablation.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["dtypes"], indent=1), out["speedup_bf16_weights"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
