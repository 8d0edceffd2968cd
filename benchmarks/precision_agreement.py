"""Does a result depend on the CPU that scored it? The same checkpoint scored in bf16 (AVX512-BF16/AMX CPUs, where
``dtype: auto`` picks it) and in fp32 (AVX2-only CPUs), on the same sets and depth, compared per query.

lorank's results are scored on whichever 2-core CPU a session gets, so one curve or one study can mix bf16 and
fp32 evaluations. This measures how far apart they are: nDCG@10 / MRR@10 of each, the paired t-test between them
(per query), the mean |delta nDCG@10| per query, the fraction of queries whose top-10 is the same set, and the
Spearman correlation of the two score lists per query.

    .venv/bin/python benchmarks/precision_agreement.py \\
        --adapter results/resume/msmarco12k-reference-curve/checkpoint-4000 --step 4000 --depth 50 \\
        --against runs/msmarco12k-reference/runs_trec --against-precision fp32

scores the checkpoint in the precision this CPU does not use for ``--against`` (``--precision``, default: the other
one) into ``--work`` (resumable: the checkpoint evaluator's metrics.jsonl), with LoRA merged as the curve's
evaluations are, then writes results/precision_agreement.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "precision_agreement.json"


def agreement(qrels: dict, a: dict, b: dict, name_a: str, name_b: str) -> dict:
    """Per-query agreement of two rankings of the same candidates (``{qid: {docid: score}}``)."""
    import numpy as np
    from scipy.stats import spearmanr

    from lorank.evaluation import evaluate
    from lorank.evaluation.significance import paired_ttest
    from lorank.evaluation.trec_io import trec_order

    ea, eb = evaluate(qrels, a, per_query=True), evaluate(qrels, b, per_query=True)
    qs = sorted(ea.per_query["ndcg_cut_10"])
    out = {name_a: {k: round(v, 6) for k, v in ea.aggregate.items()},
           name_b: {k: round(v, 6) for k, v in eb.aggregate.items()}, "queries": len(qs)}
    for m in ("ndcg_cut_10", "recip_rank_10"):
        x = [ea.per_query[m][q] for q in qs]
        y = [eb.per_query[m][q] for q in qs]
        out[f"p_{m}"] = round(float(paired_ttest(x, y)), 6)
        out[f"mean_abs_delta_{m}"] = round(float(np.mean(np.abs(np.subtract(x, y)))), 6)
    same_top10, rho = 0, []
    for q in qs:
        if q not in a or q not in b:
            continue
        same_top10 += set(trec_order(a[q])[:10]) == set(trec_order(b[q])[:10])
        docs = sorted(set(a[q]) & set(b[q]))
        rho.append(spearmanr([a[q][d] for d in docs], [b[q][d] for d in docs]).statistic)
    out["same_top10_set"] = round(same_top10 / len(qs), 4)
    out["spearman_scores_median"] = round(float(np.median(rho)), 4)
    out["spearman_scores_min"] = round(float(np.min(rho)), 4)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True, help="the checkpoint (or exported adapter) scored both ways")
    ap.add_argument("--step", type=int, required=True, help="its step: names the runs checkpoint-STEP.SET.run")
    ap.add_argument("--sets", default="dl19,dl20")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--against", required=True, help="folder of the other precision's runs (checkpoint-STEP.SET.run)")
    ap.add_argument("--against-precision", required=True, choices=["bf16", "fp32"])
    ap.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="default: the other one")
    ap.add_argument("--work", default=str(ROOT / "runs" / "precision_agreement"))
    ap.add_argument("--out", default=str(OUT))
    a = ap.parse_args(argv)

    from lorank.atomic import atomic_write_json
    from lorank.train.config import EvalSpec
    from lorank.data import resolve_eval_set
    from lorank.data.trec import load_run
    from lorank.reranker import Reranker
    from lorank.evaluation.trec_io import normalise_run
    from lorank.data.sources import eval_label
    from lorank.layout.run import read_metrics
    from lorank.train.checkpoint_eval import CheckpointEvaluator

    prec = a.precision or ("fp32" if a.against_precision == "bf16" else "bf16")
    sets = a.sets.split(",")
    work = Path(a.work) / prec
    rr = Reranker.from_adapter(a.adapter, dtype="fp32")
    ev = CheckpointEvaluator(rr.encoder, int(rr.tokenizer.pad_token_id),
                             EvalSpec(sets=sets, depth=a.depth, bf16=prec == "bf16"), work, merge_lora=True)
    t0 = time.perf_counter()
    for r in ev(rr.model, a.step):
        print(f"{r['eval_set']} {prec}: nDCG@10 {r['ndcg_cut_10']:.4f} ({r['pairs_per_s']:.1f} pairs/s)", flush=True)
    rows = {r["eval_set"]: r for r in read_metrics(work) if r["step"] == a.step}
    res = {"adapter": a.adapter, "step": a.step, "depth": a.depth, "merged_lora": True,
           "precisions": {prec: "scored here", a.against_precision: f"the runs in {a.against}"},
           "pairs_per_s": {s: rows[s].get("pairs_per_s") for s in rows}, "sets": {}}
    import platform

    from lorank.precision import cpu_bf16_capability

    res["device"] = {"cores": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine(),
                     "bf16_capability": cpu_bf16_capability()}
    for s in sets:
        label = eval_label(s)
        rs = resolve_eval_set(s)
        mine = normalise_run(load_run(work / "runs_trec" / f"checkpoint-{a.step}.{label}.run"))
        other = normalise_run(load_run(Path(a.against) / f"checkpoint-{a.step}.{label}.run"))
        res["sets"][label] = agreement(rs.qrels, mine, other, prec, a.against_precision)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["command"] = "python benchmarks/precision_agreement.py " + " ".join(sys.argv[1:] if argv is None else argv)
    atomic_write_json(Path(a.out), res)
    print(json.dumps(res["sets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
