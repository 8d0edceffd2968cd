"""Pick the demo's DL19 slice (queries x depth) from the committed study's own ablations of the reference adapter.

The committed CPU study (results/study_smollm2_cpu) scored the reference adapter's components and
layer-windows sweeps on every DL19 query x BM25 top-50. Reranking the BM25 top-k of the first N judged queries
(sorted ids, as ``max_queries`` takes them) needs only those scores: each candidate slice is re-scored from them,
with the tests the demo reports (each configuration against the full adapter, paired t-test, Holm within the sweep,
as lorank.ablate does; the full adapter against BM25, paired t-test). Its cost is the forwards it needs (pairs x the
sweep's configurations, the full adapter and LoRA off included), priced at ``--rate`` configuration-pairs/s.

    .venv/bin/python benchmarks/demo_slice.py            # -> results/demo_slice.json

No model runs: about a minute. The slice studies/demo.yaml uses is marked ``chosen``. ``picked``: among the slices on
which the reranker beats BM25 and every main contrast is significant (LoRA off and MLP-only below the full adapter;
LoRA off and every layer window below it) and whose forwards fit ``--max-forwards`` (the demo's time budget), the one
with the most room (the smallest largest p-value); ``cheapest_significant``: the one with the fewest forwards.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "study_smollm2_cpu"
SWEEPS = ("components", "layer-windows")


def committed_runs(sweep: str) -> dict[str, dict[str, dict[str, float]]]:
    """configuration -> the committed DL19 top-50 run of the reference adapter under it."""
    from lorank.data import load_run

    for f in sorted((STUDY / "ablations" / "adapter-reference").glob("*/ablations.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        if data.get("eval_set") == "dl19" and sweep in data["sweeps"]:
            folder = f.parent / "runs" / sweep
            runs = {p.stem: load_run(p) for p in sorted(folder.glob("*.run"))}
            return {name: {q: {e.docid: float(e.score) for e in v} for q, v in run.items()} for name, run in
                    runs.items()}, data["depth"]
    raise SystemExit(f"no committed DL19 {sweep} sweep of the reference adapter in {STUDY}")


def slice_tests(rs, runs: dict, qids: list[str], depth: int) -> dict[str, dict[str, float]]:
    """Each configuration on the slice: nDCG@10 and its Holm p against the full adapter (the sweep's own family)."""
    from lorank.evaluation import compare
    from lorank.inference.runs import rerank_to_run

    first = {q: rs.run[q] for q in qids}
    top = {n: rerank_to_run({q: {d: r[q][d] for d in (e.docid for e in rs.run[q][:depth])} for q in qids}, first, depth)
           for n, r in runs.items()}
    qrels = {q: rs.qrels[q] for q in qids}
    cmp = compare(qrels, {"full": top["full"], **{n: v for n, v in top.items() if n != "full"}}, baseline="full",
                  measures=["ndcg_cut_10"])
    out = {n: {"ndcg_cut_10": round(cmp.results[n].aggregate["ndcg_cut_10"], 4)} for n in top}
    for n in top:
        if n != "full":
            c = cmp.get(n, "ndcg_cut_10")
            out[n].update(p_holm=float(f"{c.p_adjusted:.3g}"), significant=bool(c.significant))
    vs = compare(qrels, {"bm25": first, "full": top["full"]}, baseline="bm25", measures=["ndcg_cut_10"])
    c = vs.get("full", "ndcg_cut_10")
    out["full"].update(bm25=round(c.baseline_value, 4), p_vs_bm25=float(f"{c.p_value:.3g}"))
    return out


MAIN = {"components": ("none", "mlp-only"), "layer-windows": ("none", "only_L")}  # the contrasts a slice must show


def main_significant(sweep: str, configs: dict) -> bool:
    """Whether the reranker beats BM25 and every main contrast of the sweep is significant on a slice: LoRA off and
    MLP-only (components), LoRA off and every window (layer windows) below the full adapter."""
    full = configs["full"]
    main = [k for k in configs if k != "full" and any(k.startswith(m) for m in MAIN[sweep])]
    return (full["p_vs_bm25"] < 0.05 and full["ndcg_cut_10"] > full["bm25"] and bool(main)
            and all(configs[k]["significant"] and configs[k]["ndcg_cut_10"] < full["ndcg_cut_10"] for k in main))


def largest_main_p(sweep: str, configs: dict) -> float:
    """The largest p-value among the full adapter against BM25 and the sweep's main contrasts (LoRA off, MLP-only;
    LoRA off, every window) on a slice."""
    main = [k for k in configs if k != "full" and any(k.startswith(m) for m in MAIN[sweep])]
    return max([configs["full"]["p_vs_bm25"]] + [configs[k]["p_holm"] for k in main])


def pick(sweeps: dict, rate: float, max_forwards: int) -> dict | None:
    """The slice for both sweeps (one ablation step) on which every main contrast is significant with the most room
    (the smallest largest p-value), among those the ablation engine scores within `max_forwards`."""
    by = {s: {(r["queries"], r["depth"]): r for r in v["slices"]} for s, v in sweeps.items()}
    fw = {k: sum(by[s][k]["forwards"] for s in SWEEPS) for k in by["components"] if k in by["layer-windows"]}
    ok = [k for k in fw if fw[k] <= max_forwards and all(main_significant(s, by[s][k]["configs"]) for s in SWEEPS)]
    if not ok:
        return None
    worst = {k: max(largest_main_p(s, by[s][k]["configs"]) for s in SWEEPS) for k in ok}
    n, d = min(ok, key=lambda k: (worst[k], fw[k]))
    return {"queries": n, "depth": d, "forwards": fw[(n, d)], "est_s": round(fw[(n, d)] / rate),
            "largest_main_p": worst[(n, d)], "max_forwards": max_forwards,
            "candidates": len(ok), "cheapest_significant": min(ok, key=lambda k: (fw[k], k))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", default="12,14,16,18,20,22,24,28,32,43")
    ap.add_argument("--depths", default="10,15,20,25,30,35,40,50")
    ap.add_argument("--rate", type=float, default=23.6,
                    help="forwards (configuration-pairs) a second of the ablation engine in the demo: bf16, 2-core AMX "
                         "Xeon, results/demo_timing.json (5,940 in 251 s)")
    ap.add_argument("--max-forwards", type=int, default=7000,
                    help="the most the demo's ablation may score: ~5 min at --rate, the 6th minute for the rest of "
                         "the job (training smoke check, weights, report: 34 s measured) and a margin")
    ap.add_argument("--chosen", default="components=18x30,layer-windows=18x30",
                    help="the slices studies/demo.yaml uses, marked in the output")
    ap.add_argument("--out", default=str(ROOT / "results" / "demo_slice.json"))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from lorank.data import resolve_eval_set

    rs = resolve_eval_set("dl19", None)
    qids = sorted(q for q in rs.run if rs.qrels.get(q))
    chosen = dict(kv.split("=") for kv in a.chosen.split(","))
    result = {"command": "python benchmarks/demo_slice.py " + " ".join(sys.argv[1:]),
              "source": str(STUDY.relative_to(ROOT)), "rate_config_pairs_per_s": a.rate, "sweeps": {}}
    for sweep in SWEEPS:
        runs, committed_depth = committed_runs(sweep)
        rows = []
        for n in map(int, a.queries.split(",")):
            for d in (x for x in map(int, a.depths.split(",")) if x <= committed_depth):
                tests = slice_tests(rs, runs, qids[:n], d)
                pairs = n * d
                rows.append({"queries": n, "depth": d, "pairs": pairs, "forwards": pairs * len(runs),
                             "est_s": round(pairs * len(runs) / a.rate), "chosen": chosen.get(sweep) == f"{n}x{d}",
                             "configs": tests})
                worst = max((v.get("p_holm", 0) for k, v in tests.items() if k not in ("full",)), default=0)
                print(f"{sweep:14s} {n:3d} x {d:3d}: {pairs:5d} pairs, ~{rows[-1]['est_s']:4d} s; full vs BM25 p "
                      f"{tests['full']['p_vs_bm25']:.2g}; " + ", ".join(
                          f"{k} {v['ndcg_cut_10']:.3f} p {v['p_holm']:.2g}" for k, v in tests.items() if k != "full")
                      + f" (largest p {worst:.2g})")
        result["sweeps"][sweep] = {"configurations": len(runs), "committed_depth": committed_depth, "slices": rows}
    result["picked"] = pick(result["sweeps"], a.rate, a.max_forwards)
    print(f"the slice picked: {result['picked']}")
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
