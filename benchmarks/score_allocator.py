"""The memory allocator of CPU scoring: glibc's malloc against tcmalloc, each in its own fresh process, alternating.

    flock /tmp/lorank-heavy.lock .venv/bin/python benchmarks/score_allocator.py \\
        --checkpoint studies_out/paper-smollm2-cpu-seeds/runs/smollm2-135m-r8-all-s43-3b4bee/checkpoint-1000

``lorank train`` re-executes itself with tcmalloc preloaded (lorank.allocator, measured on training in session 11);
the verbs that only score did not, and ``lorank rerank`` scored at 27-29 pairs/s where the same checkpoint's own
evaluation inside a training process ran at 30-35 (session 27). This measures whether the allocator is the gap: a
worker process per (allocator, repeat), ``LD_PRELOAD`` set or not (the allocator each worker really ran on is read
from its /proc/self/maps), loads the checkpoint as ``Reranker.from_adapter`` does (the machine's dtype, LoRA merged as
``lorank rerank`` scores) and reranks the first ``--queries`` judged queries of ``--eval`` (DL19, dev) at ``--depth``
``--passes`` times in one process (a process's first pass pays its warm-up). Nothing else should run: take the heavy
lock. Reported: pairs/s per pass and worker, and the ratio of the means of each pass index.

Writes results/score_allocator.json. It decided which verbs lorank.allocator re-executes (session 28).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
OUT = ROOT / "results" / "score_allocator.json"


def worker(a: argparse.Namespace) -> None:
    """One process: load, then score `passes` times; print one JSON line."""
    import torch

    from lorank.allocator import active_allocator
    from lorank.data import resolve_eval_set
    from lorank.reranker import Reranker

    rs = resolve_eval_set(a.eval).subset(a.queries)
    rr = Reranker.from_adapter(a.checkpoint)
    rr.scorer.merge_lora = True
    rates = []
    for _ in range(a.passes):
        t0 = time.perf_counter()
        scores = rr.scorer.rerank(rs.queries, rs.passages, rs.run, depth=a.depth)
        rates.append(round(sum(len(v) for v in scores.values()) / (time.perf_counter() - t0), 2))
    print(json.dumps({"allocator": active_allocator(), "pairs": sum(len(v) for v in scores.values()),
                      "pairs_per_s": rates, "precision": rr.scorer.precision, "threads": torch.get_num_threads()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="checkpoint-N of a finished lorank training run")
    ap.add_argument("--eval", default="dl19")
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return 0
    from lorank.allocator import find_library
    from lorank.atomic import atomic_write_json
    from lorank.data.roles import role_of

    lib = find_library("tcmalloc")
    if lib is None:
        raise SystemExit("tcmalloc is not installed (libtcmalloc-minimal4): nothing to compare")
    base_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LORANK_ALLOCATOR_PRELOADED")}
    args = [sys.executable, __file__, "--worker", "--checkpoint", str(a.checkpoint), "--eval", a.eval,
            "--queries", str(a.queries), "--depth", str(a.depth), "--passes", str(a.passes)]
    runs: dict[str, list[dict]] = {"glibc": [], "tcmalloc": []}
    t0 = time.perf_counter()
    for rep in range(a.repeats):
        order = ("glibc", "tcmalloc") if rep % 2 == 0 else ("tcmalloc", "glibc")
        for name in order:
            env = dict(base_env, **({"LD_PRELOAD": lib} if name == "tcmalloc" else {}))
            proc = subprocess.run(args, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"the {name} worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
            out = proc.stdout
            row = json.loads(out.strip().splitlines()[-1])
            if row["allocator"] != name:
                raise SystemExit(f"a worker meant for {name} ran on {row['allocator']}")
            runs[name].append(row)
            print(name, row["pairs_per_s"], flush=True)
    mean = {n: [round(sum(r["pairs_per_s"][i] for r in rows) / len(rows), 2) for i in range(a.passes)]
            for n, rows in runs.items()}
    res = {"what": "CPU scoring (lorank rerank's path: Reranker.from_adapter, LoRA merged) under glibc's malloc and "
                   "under tcmalloc, a fresh process per (allocator, repeat), alternating order",
           "checkpoint": str(a.checkpoint), "eval_set": a.eval, "role": role_of(a.eval), "depth": a.depth,
           "queries": a.queries, "passes": a.passes, "repeats": a.repeats, "tcmalloc": lib,
           "machine": {"cores": os.cpu_count(), "load_after": round(os.getloadavg()[0], 2)},
           "command": "python benchmarks/score_allocator.py " + " ".join(sys.argv[1:]),
           "wall_s": round(time.perf_counter() - t0, 1), "workers": runs, "mean_pairs_per_s_by_pass": mean,
           "speedup_tcmalloc_by_pass": [round(t / g, 3) for t, g in zip(mean["tcmalloc"], mean["glibc"])]}
    atomic_write_json(a.out, res)
    print(json.dumps({k: res[k] for k in ("mean_pairs_per_s_by_pass", "speedup_tcmalloc_by_pass")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
