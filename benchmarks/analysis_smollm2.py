"""Dissect the SmolLM2-135M r=8 adapter trained on DL20 (runs/e1): weights, checkpoint similarity,
layer-wise probes and activation patching on DL19. Writes results/analysis_smollm2.json
(the summary) and every step's JSON / CSV / PNG under results/analysis_smollm2/.

Steps can run in separate invocations (the summary is rebuilt from the step files each time):

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/analysis_smollm2.py --steps weights,compare
    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/analysis_smollm2.py --steps patch,probe

The probe step fits on the judged pairs' hidden states saved by the patch step (``--probe-source patch``:
no forward of its own); ``--probe-source model`` runs its own pass over --probe-queries x --probe-depth.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
FEATURES = ROOT / "runs" / "e1" / "analysis_cache" / "patch_features.npz"  # ~20 MB: kept out of git


def pick_threads() -> int:
    """On a shared 2-core machine a second torch thread only pays when the other core is idle."""
    import time as _t

    x, w = torch.randn(2048, 576), torch.randn(1536, 576)
    best, best_dt = 1, float("inf")
    for n in (1, 2, 1, 2):
        torch.set_num_threads(n)
        t0 = _t.perf_counter()
        for _ in range(8):
            x @ w.T
        dt = _t.perf_counter() - t0
        if dt < best_dt:
            best, best_dt = n, dt
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "e1"))
    ap.add_argument("--steps", default="weights,compare,probe,patch")
    ap.add_argument("--eval", default="dl19")
    ap.add_argument("--probe-source", choices=("patch", "model"), default="patch")
    ap.add_argument("--probe-queries", type=int, default=20)
    ap.add_argument("--probe-depth", type=int, default=30)
    ap.add_argument("--patch-queries", type=int, default=15)
    ap.add_argument("--patch-depth", type=int, default=20)
    ap.add_argument("--patch-sites", default="layer,attn,mlp")
    ap.add_argument("--patch-layers", default="3,7,11,15,19,23,27,29")
    ap.add_argument("--patch-block-layers", default="27,29")
    ap.add_argument("--exact-check", action="store_true", help="also patch all blocks (one more forward)")
    ap.add_argument("--threads", default="auto", help="torch threads, or auto: the faster of 1 and 2 right now")
    ap.add_argument("--out", default=str(RESULTS / "analysis_smollm2"))
    args = ap.parse_args()
    torch.set_num_threads(pick_threads() if args.threads == "auto" else int(args.threads))

    from lorank.analyze import compare_adapters, patch, probe, weight_stats
    from lorank.subject import resolve_subject

    run = Path(args.run)
    ck100, ck200 = run / "checkpoint-100", run / "checkpoint-200"
    out = Path(args.out)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    timings = _load(out / "timings.json") or {}
    rr = None

    def reranker():
        nonlocal rr
        if rr is None:
            from lorank.reranker import Reranker

            rr = Reranker.from_adapter(ck200)
        return rr

    for step in steps:
        t0 = time.perf_counter()
        c0 = time.process_time()
        if step == "weights":
            weight_stats(ck200, out, base_weights=True)
        elif step == "compare":
            compare_adapters(ck100, ck200, out, side="right")
            compare_adapters(ck100, ck200, out, side="left", name="compare_left")
        elif step == "probe" and args.probe_source == "patch":
            probe(None, out, features_in=FEATURES)
        elif step == "probe":
            probe(resolve_subject(ck200, args.eval, reranker=reranker()), out, max_queries=args.probe_queries,
                  depth=args.probe_depth, features_out=FEATURES.with_name("probe_features.npz"))
        elif step == "patch":
            patch(resolve_subject(ck200, args.eval, reranker=reranker()), out, max_queries=args.patch_queries,
                  depth=args.patch_depth, sites=args.patch_sites.split(","), layers=args.patch_layers,
                  block_layers=args.patch_block_layers, exact_check=args.exact_check, features_out=FEATURES)
        else:
            raise SystemExit(f"unknown step {step!r}")
        timings[step] = {"wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                         "threads": torch.get_num_threads()}
        from lorank.atomic import atomic_write_json

        atomic_write_json(out / "timings.json", timings)
        print(f"{step}: {timings[step]}", flush=True)
    summary = summarize(out, timings, args)
    from lorank.atomic import atomic_write_json

    atomic_write_json(RESULTS / "analysis_smollm2.json", summary)
    print(json.dumps(summary["headline"], indent=2))


def _load(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


def _rel(p: str | None) -> str | None:
    if p is None:
        return None
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return p


def summarize(out: Path, timings: dict, args) -> dict:
    w, c, cl, pr, pa = (_load(out / f) for f in ("weights.json", "compare.json", "compare_left.json", "probe.json",
                                                  "patch.json"))
    s: dict = {"model": "SmolLM2-135M-Instruct (fp32, CPU)", "adapter": "runs/e1 (LoRA r=8, alpha=64, all 7 projections "
               "x 30 layers, 200 steps on DL20)", "machine": f"{platform.machine()}, 2 shared cores (torch threads per step: see timings)",
               "command": "flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/analysis_smollm2.py",
               "timings": timings, "headline": {}}
    h = s["headline"]
    if w:
        sm = w["summary"]
        s["weights"] = {"adapter": _rel(w["adapter"]), "summary": sm, "files": {k: _rel(v) for k, v in w["files"].items()}}
        h["top_modules_by_fro"] = [f"L{r['layer']}.{r['projection']}: {r['fro']:.3f} "
                                   f"({100 * r['rel_fro']:.2f}% of ||W||)" if r["rel_fro"] is not None else
                                   f"L{r['layer']}.{r['projection']}: {r['fro']:.3f}" for r in sm["top_by_fro"][:5]]
        h["fro_by_component"] = {k: round(v["fro"], 3) for k, v in sm["by_component"].items()}
        h["mean_effective_rank_of_8"] = round(sm["mean_effective_rank"], 2)
        h["mean_stable_rank_of_8"] = round(sm["mean_stable_rank"], 2)
    if c:
        s["compare"] = {"a": _rel(c["adapter_a"]), "b": _rel(c["adapter_b"]), "side": c["side"],
                        "summary": c["summary"], "grid_module": c["grid_module"],
                        "files": {k: _rel(v) for k, v in c["files"].items()}}
        cs = c["summary"]
        h["ckpt100_vs_200_right"] = {"mean_phi_8_8": round(cs["mean_phi_full"], 3),
                                     "random": round(cs["mean_random_full"], 4),
                                     "mean_phi_1_1": round(cs["mean_phi_top1"], 3),
                                     "mean_delta_cosine": round(cs["mean_delta_cosine"], 3)}
    if cl:
        s["compare_left"] = {"side": cl["side"], "summary": cl["summary"], "grid_module": cl["grid_module"],
                             "files": {k: _rel(v) for k, v in cl["files"].items()}}
        cs = cl["summary"]
        h["ckpt100_vs_200_left"] = {"mean_phi_8_8": round(cs["mean_phi_full"], 3),
                                    "random": round(cs["mean_random_full"], 4),
                                    "mean_phi_1_1": round(cs["mean_phi_top1"], 3)}
    if pr:
        s["probe"] = {k: pr[k] for k in ("eval_set", "queries", "depth", "pairs", "positives", "rel_threshold",
                                         "majority_accuracy", "score_auc", "score_auc_per_query", "summary", "probe",
                                         "forward_s", "fit_s")}
        s["probe"]["source"] = f"--probe-source {args.probe_source}"
        s["probe"]["per_layer"] = [{"layer": r["layer"],
                                    "auc_per_query": {"base": round(r["base_auc_per_query"], 3),
                                                      "finetuned": round(r["finetuned_auc_per_query"], 3)},
                                    "auc_pooled": {"base": round(r["base_auc"], 3), "finetuned": round(r["finetuned_auc"], 3)},
                                    "accuracy": {"base": round(r["base_accuracy"], 3),
                                                 "finetuned": round(r["finetuned_accuracy"], 3)}}
                                   for r in pr["layers"]]
        s["probe"]["files"] = {k: _rel(v) for k, v in pr["files"].items()}
        h["probe_auc_per_query_base_vs_finetuned"] = {
            str(r["layer"]): [round(r["base_auc_per_query"], 3), round(r["finetuned_auc_per_query"], 3)]
            for r in pr["layers"]}
        h["probe_best"] = {"base": pr["summary"]["best_base"], "finetuned": pr["summary"]["best_finetuned"],
                           "model_score_auc_per_query": pr["score_auc_per_query"]}
    if pa:
        s["patch"] = {k: pa[k] for k in ("eval_set", "queries", "depth", "pairs", "num_layers", "sites", "layers",
                                         "block_layers", "ndcg_cut_10", "exactness_max_abs_diff", "cost")}
        s["patch"]["curve"] = [{"config": r["config"], "ndcg_cut_10": round(r["ndcg_cut_10"], 4),
                                "restored_ndcg_pct": None if r["restored_ndcg_pct"] is None else round(r["restored_ndcg_pct"], 1),
                                "restored_score_pct": None if r["restored_score_pct"] is None else round(r["restored_score_pct"], 1)}
                               for r in pa["rows"]]
        s["patch"]["files"] = {k: _rel(v) for k, v in pa["files"].items()}
        h["patch_ndcg"] = {k: round(v, 4) for k, v in pa["ndcg_cut_10"].items()}
        h["patch_restored_pct_ndcg_and_score"] = {
            r["config"]: [None if r["restored_ndcg_pct"] is None else round(r["restored_ndcg_pct"]),
                          None if r["restored_score_pct"] is None else round(r["restored_score_pct"])]
            for r in pa["rows"]}
        h["patch_exactness_max_abs_diff"] = pa["exactness_max_abs_diff"]
    s["cpu_s_total"] = round(sum(t.get("cpu_s", 0.0) for t in timings.values()), 1)
    return s


if __name__ == "__main__":
    main()
