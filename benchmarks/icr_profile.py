"""ICR's per-layer profile of the base model, the "before LoRA" view (issue 44, docs/views.md): in-context
reranking (Chen et al., ICLR 2025) of each set's BM25 top-k by the base model's attention, and nDCG@10 of the
ranking each layer (and, with --heads, each head) gives alone (:func:`lorank.analyze.icr_profile`).

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/icr_profile.py            # DL19, DL20, DL22
    .venv/bin/python benchmarks/icr_profile.py --sets dl19 --max-queries 5 --depth 20 --heads   # a quick look
    .venv/bin/python benchmarks/icr_profile.py --sets dl19 --replot     # redraw results/icr_dl19.png from its JSON

Writes results/icr_<set>.json and results/icr_<set>.png (and icr_<set>_heads.png with --heads), each JSON with
the command, the set's role (dl19, dl20: dev; dl22: test, report only) and the time per query. Heavy on a CPU (one
forward over all of a query's candidates, ~8k tokens for 100 MS MARCO passages): DL19 took 10 min on 2 cores
(results/icr_dl19.json, "seconds"); prints a progress line every 30 s.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="dl19,dl20,dl22", help="named sets or TREC-DL-style folders, comma-separated")
    ap.add_argument("--data", default=None, help="the data folder of the named sets (default: lorank's search)")
    ap.add_argument("--model", default=None, help="the base model (default: the embedded SmolLM2-135M)")
    ap.add_argument("--depth", type=int, default=100, help="BM25 candidates per query")
    ap.add_argument("--max-queries", type=int, default=None, help="the first N judged queries of each set")
    ap.add_argument("--window", type=int, default=None, help="candidates per prompt (default: all that fit)")
    ap.add_argument("--stride", type=int, default=None)
    ap.add_argument("--max-tokens", type=int, default=None, help="the longest prompt (default: the model's context)")
    ap.add_argument("--heads", action="store_true", help="also each head's nDCG@10 (a layer x head map)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--replot", action="store_true", help="only redraw the figures of the sets' written JSONs")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict]:
    a = parse(argv)
    if a.replot:
        from lorank.analyze.icr_view import replot_profile

        names = [Path(s.strip()).name for s in a.sets.split(",") if s.strip()]
        for n in names:
            print(*replot_profile(Path(a.out_dir) / f"icr_{n}.json"))
        return {}
    from lorank.analyze import icr_profile
    from lorank.data import load_eval_data
    from lorank.data.roles import role_of
    from lorank.inference.icr import ICRReranker
    from lorank.progress import ProgressLines

    rr = ICRReranker.from_pretrained(a.model, device=a.device, window=a.window, stride=a.stride,
                                     max_tokens=a.max_tokens)
    command = shlex.join(["python", "benchmarks/icr_profile.py", *(sys.argv[1:] if argv is None else argv)])
    out = {}
    for name in [s.strip() for s in a.sets.split(",") if s.strip()]:
        rs = load_eval_data(name, data_root=a.data)
        key = Path(name).name if Path(name).exists() else name
        record = {"command": command, "role": role_of(key), "machine": platform.processor() or platform.machine()}
        sub = rs.subset(a.max_queries)
        total = sum(min(len(sub.run[q]), a.depth) for q in sub.qids if sub.qrels.get(q))
        n_q = sum(1 for q in sub.qids if sub.qrels.get(q))
        print(f"icr {key}: {n_q} judged queries, {total} candidates", file=sys.stderr, flush=True)
        bar = ProgressLines(f"icr {key} (candidates)", total)  # a line every 30 s, with the time left
        res = icr_profile(rs, a.out_dir, reranker=rr, depth=a.depth, max_queries=a.max_queries, heads=a.heads,
                          name=f"icr_{key}", record=record, progress=bar)
        print(f"{key}: ICR nDCG@10 {res['icr']:.4f} (first stage {res['first_stage']:.4f}), best layer "
              f"{res['best_layer']}; {res['seconds_per_query']} s a query", flush=True)
        out[key] = res
    return out


if __name__ == "__main__":
    main()
