"""ICR's per-layer profile of the base model, the "before LoRA" view (issue 44, docs/views.md): in-context
reranking (Chen et al., ICLR 2025) of each set's BM25 top-k by the base model's attention, and nDCG@10 of the
ranking each layer (and, with --heads, each head) gives alone (:func:`lorank.analyze.icr_profile`), beside the
first stage and the same base model's yes/no zero-shot pointwise reranker on the same queries and candidates
(nDCG@10, MRR@10, paired t-tests with Holm; ``--no-zero-shot`` leaves that baseline out).

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/icr_profile.py            # DL19, DL20, DL22
    .venv/bin/python benchmarks/icr_profile.py --sets dl19 --max-queries 5 --depth 20 --heads   # a quick look
    .venv/bin/python benchmarks/icr_profile.py --sets dl19 --replot     # redraw results/icr_dl19.png from its JSON

Writes results/icr_<set>.json and results/icr_<set>.png (and icr_<set>_heads.png with --heads), each JSON with
the command, the set's role (dl19, dl20: dev; dl22: test, report only) and the time per query of ICR and of the
zero-shot baseline; prints one line per set with the three rankings' figures and the tests' p-values. Heavy on a CPU
(one forward over all of a query's candidates, ~8k tokens for 100 MS MARCO passages): DL19's ICR took 10 min on 2
cores (results/icr_dl19.json, "seconds"), and the zero-shot scores its top-100 pairs once more; prints a progress
line every 30 s. Each model is loaded once per call, not per set.
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
    ap.add_argument("--no-zero-shot", dest="zero_shot", action="store_false",
                    help="leave out the yes/no zero-shot pointwise baseline (and its tests)")
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
    zero_shot = None
    if a.zero_shot:  # the same base model with its yes/no head: loaded once for every set
        from lorank.reranker import Reranker

        zero_shot = Reranker.from_pretrained(a.model, head_init="yes_no", device=a.device)
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
                          name=f"icr_{key}", record=record, progress=bar, zero_shot=zero_shot,
                          zero_shot_progress=ProgressLines(f"zero-shot {key} (pairs)", total))
        print(summary_line(key, res), flush=True)
        out[key] = res
    return out


def summary_line(key: str, res: dict) -> str:
    """One set's line: nDCG@10 and MRR@10 of ICR, the zero-shot baseline (when scored) and the first stage, the
    tests' p-values (raw and Holm), the best layer and the seconds a query."""
    from lorank.analyze.icr_view import MRR
    from lorank.evaluation.stats import fmt_p
    from lorank.plotting import METRIC_LABELS

    zs = res.get("zero_shot")
    figures = [f"ICR {res['icr']:.4f}/{res[f'icr_{MRR}']:.4f}"]
    figures += [f"zero-shot {zs[res['measure']]:.4f}/{zs[MRR]:.4f}"] if zs else []
    figures += [f"first stage {res['first_stage']:.4f}/{res[f'first_stage_{MRR}']:.4f}"]
    side = {"icr": "ICR", "zero_shot": "zero-shot", "first_stage": "first stage"}
    tests = [f"{side[t['a']]} vs {side[t['b']]} {t['delta']:+.4f} p={fmt_p(t['p'])} (Holm {fmt_p(t['p_holm'])}, "
             f"n={t['n']})" for t in res["tests"].values()]
    cost = f"ICR {res['seconds_per_query']} s a query" + (f", zero-shot {zs['seconds_per_query']}" if zs else "")
    labels = f"{METRIC_LABELS.get(res['measure'], res['measure'])} / {METRIC_LABELS[MRR]}"
    return (f"{key} ({res.get('role')}): {labels}: {', '.join(figures)}; {'; '.join(tests)}; "
            f"best layer {res['best_layer']}; {cost}")


if __name__ == "__main__":
    main()
