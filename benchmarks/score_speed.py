"""Scoring speed: plain batched forward and CrossEncoder-style scoring against lorank's Scorer, in one run.

    flock /tmp/lorank-heavy.lock nice -n 5 .venv/bin/python benchmarks/score_speed.py              # ~10 min on 2 cores
    .venv/bin/python benchmarks/score_speed.py --queries 1 --configs crossencoder,lorank-prefix     # a quick look
    .venv/bin/python benchmarks/score_speed.py --adapter runs/e1                                    # a trained adapter

DL19 BM25 top-``--depth`` (100) of the first ``--queries`` (3) judged queries (sorted qids). The model is
SmolLM2-135M-Instruct with the yes/no-initialised head and a LoRA r=8 on all 7 projections (fresh, B=0:
the compute of a trained adapter, the scores of the zero-shot model), or ``--adapter DIR``. Every
configuration runs in a fresh subprocess (its own peak RSS); the first ``--warmup-pairs`` pairs are scored
once untimed, then all pairs are timed (tokenization included).

Configurations (``--configs``; default: plain, crossencoder, lorank, lorank-prefix, lorank-prefix-merged):

- ``plain``: the naive loop of BASELINES.md: batches of 32 in run order, padded to the longest, forward
  under ``torch.autocast("cpu", bfloat16)`` (``torch.no_grad``). bf16 matmuls run at ~15 GFLOP/s on this
  AVX2 CPU (fp32: ~110-135), so it is timed on the first ``--bf16-pairs`` (32) pairs only, without warm-up.
- ``plain-fp32``: the same loop in fp32 (not in the default set: it is ``crossencoder`` minus tokenization).
- ``crossencoder``: sentence-transformers ``CrossEncoder.predict`` style, written inline: the tokenizer
  encodes each batch of 32 (query, passage) pairs in run order (``query: {q}`` / `` document: {p}`` + EOS,
  truncation ``only_second``), pads to the longest, fp32 (the model's dtype), ``torch.no_grad``.
- ``lorank``: ``lorank.inference.engine.Scorer`` (dtype auto, length-sorted token-budget batches).
- ``lorank-merged``: the same with ``merge_lora=True`` (what ``lorank rerank`` and checkpoint evaluation do).
- ``lorank-prefix``: ``lorank`` with ``prefix_cache=True`` (each query's prefix encoded once, its KV cache reused).
- ``lorank-prefix-merged``: and ``merge_lora=True`` (LoRA merged into the base weights before scoring).

All feed the model the same token ids (checked: ``same_ids_as_lorank``), so scores must agree: reported are
the largest score difference to ``lorank`` (fp32), whether every query's ranking is identical, and
nDCG@10 / MRR@10 of each (reranked top-``depth``). Figures: pairs/s, real tokens/s, computed tokens per
real token (padding, and the prefix computed once), peak RSS, CPU use, ratio to ``crossencoder``.

Writes results/score_speed.json and score_speed.png.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "score_speed.json"
CONFIGS = ("plain", "plain-fp32", "crossencoder", "lorank", "lorank-merged", "lorank-prefix", "lorank-prefix-merged")
DEFAULT = "plain,crossencoder,lorank,lorank-prefix,lorank-prefix-merged"
PROJ = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _usage() -> tuple[float, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_maxrss / 1e6


def load(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model, tokenizer, encoder): the adapter, or SmolLM2 + yes/no head + a fresh LoRA (B = 0)."""
    from lorank.models.inputs import PairEncoder
    from lorank.reranker import Reranker

    if a.adapter:
        rr = Reranker.from_adapter(a.adapter)
    else:
        from lorank.lora import LoraSpec, apply_lora

        rr = Reranker.from_pretrained("smollm2-135m", head_init="yes_no", dtype="auto")
        rr.model = apply_lora(rr.model, LoraSpec(rank=8, alpha=64, dropout=0.1)).eval()
    return rr.model.eval(), rr.tokenizer, PairEncoder(rr.tokenizer, rr.encoder.fmt)


def pairs_of(a: argparse.Namespace) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]], Any]:
    from lorank.data import resolve_eval_set

    rs = resolve_eval_set("dl19").subset(a.queries)
    keys, pairs = [], []
    for qid in sorted(rs.run):
        for e in rs.run[qid][: a.depth]:
            p = rs.passages[e.docid]
            keys.append((qid, e.docid))
            pairs.append((rs.queries[qid], p.text, p.title))
    return pairs, keys, rs


def worker(name: str, a: argparse.Namespace) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    import logging

    logging.disable(logging.WARNING)
    import numpy as np
    import torch

    t_start = time.perf_counter()
    model, tok, enc = load(a)
    pairs, keys, rs = pairs_of(a)
    ids_ref = [enc.encode(*p) for p in pairs]
    pad = int(tok.pad_token_id)
    checks: dict[str, Any] = {}

    def batches_in_run_order(seqs: list[list[int]]) -> Any:
        for i in range(0, len(seqs), a.batch):
            chunk = seqs[i:i + a.batch]
            w = max(len(s) for s in chunk)
            ids = torch.full((len(chunk), w), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), w), dtype=torch.long)
            for j, s in enumerate(chunk):
                ids[j, :len(s)] = torch.tensor(s)
                mask[j, :len(s)] = 1
            yield i, ids, mask

    if name == "plain":  # bf16 forwards take minutes here: timed on the first --bf16-pairs pairs only
        pairs, keys, ids_ref = pairs[: a.bf16_pairs], keys[: a.bf16_pairs], ids_ref[: a.bf16_pairs]
    if name in ("plain", "plain-fp32"):
        import contextlib

        def run(ps: list[tuple[str, str, str]]) -> tuple[np.ndarray, int]:
            seqs = [enc.encode(*p) for p in ps]
            out, padded = np.empty(len(seqs)), 0
            amp = torch.autocast("cpu", dtype=torch.bfloat16) if name == "plain" else contextlib.nullcontext()
            with torch.no_grad(), amp:
                for i, ids, mask in batches_in_run_order(seqs):
                    out[i:i + len(ids)] = model(input_ids=ids, attention_mask=mask).logits.float().reshape(-1).numpy()
                    padded += ids.numel()
            return out, padded
    elif name == "crossencoder":
        def tokenize(ps: list[tuple[str, str, str]]) -> list[list[int]]:
            fmt = enc.fmt
            qs = [fmt.query_template.format(query=q) for q, _, _ in ps]
            ds = [enc.doc_text(t, ti) for _, t, ti in ps]
            out = tok(qs, ds, padding=False, truncation="only_second", max_length=fmt.max_len - len(enc.eos),
                      add_special_tokens=False)["input_ids"]
            return [x + enc.eos for x in out]

        seqs_ce = tokenize(pairs)
        checks["same_ids_as_lorank"] = sum(x == y for x, y in zip(seqs_ce, ids_ref)) / len(ids_ref)

        def run(ps: list[tuple[str, str, str]]) -> tuple[np.ndarray, int]:
            out, padded = np.empty(len(ps)), 0
            with torch.no_grad():
                for i in range(0, len(ps), a.batch):
                    seqs = tokenize(ps[i:i + a.batch])
                    batch = tok.pad({"input_ids": seqs}, padding="longest", return_tensors="pt")
                    out[i:i + len(seqs)] = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                                                 ).logits.float().reshape(-1).numpy()
                    padded += batch["input_ids"].numel()
            return out, padded
    elif name in ("lorank", "lorank-merged", "lorank-prefix", "lorank-prefix-merged"):
        from lorank.inference.engine import Scorer

        scorer = Scorer(model, enc, pad, batch_tokens=a.batch_tokens, prefix_cache="-prefix" in name,
                        merge_lora=name.endswith("-merged"))

        def run(ps: list[tuple[str, str, str]]) -> tuple[np.ndarray, int]:
            from lorank.train.collator import length_chunks

            out = scorer.score_pairs(ps)
            if not scorer.prefix_cache:
                lens = [len(enc.encode(*p)) for p in ps]
                padded = sum(len(c) * max(lens[i] for i in c) for c in length_chunks(lens, scorer.batch_tokens))
            else:
                padded = -1  # suffix batches against a cached prefix: padding is counted below, per query
            return out, padded
        checks["bf16"] = scorer.bf16
    else:
        raise SystemExit(f"unknown config {name!r}")

    if name != "plain":
        run(pairs[: a.warmup_pairs])  # warm-up (oneDNN/MKL kernels, allocator); bf16: one-time costs are noise
    cpu0, t0 = _usage()[0], time.perf_counter()
    scores, padded = run(pairs)
    wall = time.perf_counter() - t0
    cpu = _usage()[0] - cpu0
    tokens = sum(len(s) for s in ids_ref)
    if name.startswith("lorank-prefix"):
        from lorank.train.collator import length_chunks

        padded = 0
        for q in dict.fromkeys(p[0] for p in pairs):
            idx = [i for i, p in enumerate(pairs) if p[0] == q]
            lq = len(enc.query_ids(q))
            suf = [len(ids_ref[i]) - lq for i in idx]
            padded += lq + sum(len(c) * max(suf[i] for i in c) for c in length_chunks([s + lq for s in suf], a.batch_tokens))
        tokens_computed = padded
    else:
        tokens_computed = padded
    return {"config": name, "pairs": len(pairs), "tokens": tokens, "tokens_computed": tokens_computed, "wall_s": wall,
            "cpu_s": cpu, "scores": [float(x) for x in scores], "keys": keys, "peak_rss_gb": round(_usage()[1], 3),
            "threads": torch.get_num_threads(), "process_wall_s": round(time.perf_counter() - t_start, 1), **checks}


def evaluate(keys: list[Any], scores: list[float], depth: int) -> dict[str, float]:
    from lorank.data import resolve_eval_set
    from lorank.evaluation import evaluate as ev
    from lorank.inference.runs import rerank_to_run

    rs = resolve_eval_set("dl19")
    by_q: dict[str, dict[str, float]] = {}
    for (q, d), s in zip(keys, scores):
        by_q.setdefault(q, {})[d] = s
    run = rerank_to_run(by_q, {q: rs.run[q] for q in by_q}, depth)
    res = ev({q: rs.qrels[q] for q in by_q}, run, measures=["ndcg_cut_10", "recip_rank_10"])
    return {k: round(v, 4) for k, v in res.aggregate.items()}


def rankings(keys: list[Any], scores: list[float]) -> dict[str, list[str]]:
    from lorank.evaluation.trec_io import trec_order

    by_q: dict[str, dict[str, float]] = {}
    for (q, d), s in zip(keys, scores):
        by_q.setdefault(q, {})[d] = s
    return {q: trec_order(v) for q, v in by_q.items()}


def plot(table: list[dict[str, Any]], path: Path, title: str) -> None:
    from lorank.plotting import pyplot, save_figure

    plt = pyplot()
    names = [r["config"] for r in table]
    colors = ["#2b7bba" if n.startswith("lorank") else "#999999" for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.55 * len(names) + 2.0), sharey=True)
    for ax, key, label in ((axes[0], "pairs_per_s", "pairs/s"), (axes[1], "peak_rss_gb", "peak RSS (GB)")):
        vals = [r[key] for r in table]
        ax.barh(range(len(names)), vals, color=colors)
        for i, v in enumerate(vals):
            ratio = table[i].get("ratio_vs_crossencoder")  # None when crossencoder was not among the configs
            extra = f"  ({ratio:.2f}x)" if key == "pairs_per_s" and ratio is not None else ""
            ax.text(v, i, f" {v:g}{extra}", va="center", fontsize=9)
        ax.set_xlim(0, max(vals) * 1.4)
        ax.set_xlabel(label)
    axes[0].set_yticks(range(len(names)))
    axes[0].set_yticklabels([f"{r['config']}\n{r['dtype']}" + (f", nDCG@10 {r['ndcg_cut_10']:.3f}" if r["ndcg_cut_10"]
                             is not None else f", {r['pairs']} pairs") for r in table], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def headline(table: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures the issue asks for: the CrossEncoder-style baseline, lorank's fastest configuration
    (its rankings must equal the baseline's), their ratio; also the bf16 run-order loop."""
    keys = ("config", "dtype", "pairs", "pairs_per_s", "tokens_per_s", "peak_rss_gb", "ndcg_cut_10",
            "recip_rank_10", "queries_with_identical_ranking")
    rows = {r["config"]: r for r in table}
    out: dict[str, Any] = {}
    if "crossencoder" in rows:
        out["baseline"] = {k: rows["crossencoder"].get(k) for k in keys}
    mine = [r for r in table if r["config"].startswith("lorank")]
    if mine:
        best = max(mine, key=lambda r: r["pairs_per_s"])
        out["lorank"] = {k: best.get(k) for k in keys}
        if "baseline" in out:
            out["speedup"] = round(best["pairs_per_s"] / out["baseline"]["pairs_per_s"], 2)
    if "plain" in rows:
        out["baseline_plain_bf16_run_order"] = {k: rows["plain"].get(k) for k in keys}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default=DEFAULT, help=f"comma-separated, known: {', '.join(CONFIGS)}")
    ap.add_argument("--queries", type=int, default=3, help="first N judged DL19 queries (sorted qids); 43 = all")
    ap.add_argument("--bf16-pairs", type=int, default=32, help="pairs timed for the bf16 'plain' configuration")
    ap.add_argument("--depth", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32, help="batch size of the run-order baselines")
    ap.add_argument("--batch-tokens", type=int, default=8192, help="lorank's token budget per batch")
    ap.add_argument("--warmup-pairs", type=int, default=32)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        Path(a.worker_out).write_text(json.dumps(worker(a.worker, a)))
        return 0
    sys.path.insert(0, str(ROOT / "src"))
    t_all = time.perf_counter()
    results = {}
    for name in [n.strip() for n in a.configs.split(",") if n.strip()]:
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            out = fh.name
        cmd = [sys.executable, __file__, "--worker", name, "--worker-out", out, "--queries", str(a.queries),
               "--depth", str(a.depth), "--batch", str(a.batch), "--batch-tokens", str(a.batch_tokens),
               "--warmup-pairs", str(a.warmup_pairs), "--bf16-pairs", str(a.bf16_pairs)] + (
                   ["--adapter", a.adapter] if a.adapter else [])
        load0, t0 = os.getloadavg()[0], time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            raise SystemExit(f"config {name} failed")
        results[name] = json.loads(Path(out).read_text())
        os.unlink(out)
        results[name]["load_before"], results[name]["load_after"] = round(load0, 2), round(os.getloadavg()[0], 2)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    import numpy as np

    ref_name = "lorank" if "lorank" in results else next(iter(results))
    ref = results[ref_name]
    ref_rank = rankings(ref["keys"], ref["scores"])
    base = results.get("crossencoder")
    table = []
    ref_scores = dict(zip(map(tuple, ref["keys"]), ref["scores"]))
    for name, r in results.items():
        keys = [tuple(k) for k in r["keys"]]
        diff = float(np.max(np.abs(np.array(r["scores"]) - np.array([ref_scores[k] for k in keys]))))
        full = len(keys) == len(ref["keys"])
        rk = rankings(r["keys"], r["scores"]) if full else {}
        same = sum(rk[q] == ref_rank[q] for q in rk)
        row = {"config": name, "dtype": "bf16 autocast" if name == "plain" else ("bf16" if r.get("bf16") else "fp32"),
               "pairs": r["pairs"], "wall_s": round(r["wall_s"], 2), "pairs_per_s": round(r["pairs"] / r["wall_s"], 2),
               "tokens_per_s": round(r["tokens"] / r["wall_s"], 1),
               "computed_tokens_per_real_token": round(r["tokens_computed"] / r["tokens"], 3),
               "peak_rss_gb": r["peak_rss_gb"], "cpu_use": round(r["cpu_s"] / r["wall_s"] / r["threads"], 2),
               f"max_abs_score_diff_vs_{ref_name}": diff,
               "queries_with_identical_ranking": f"{same}/{len(rk)}" if full else f"n/a (first {len(keys)} pairs)",
               **(evaluate(r["keys"], r["scores"], a.depth) if full else {"ndcg_cut_10": None, "recip_rank_10": None}),
               "load_before": r["load_before"], "load_after": r["load_after"]}
        if "same_ids_as_lorank" in r:
            row["same_ids_as_lorank"] = r["same_ids_as_lorank"]
        table.append(row)
    for row in table:
        row["ratio_vs_crossencoder"] = round(row["pairs_per_s"] / (base["pairs"] / base["wall_s"]), 2) if base else None
    from lorank.atomic import atomic_write_json
    from lorank.train.run import software_versions

    out = {"command": "python benchmarks/score_speed.py " + " ".join(sys.argv[1:]), "queries": a.queries,
           "depth": a.depth, "model": a.adapter or "smollm2-135m + yes/no head + fresh LoRA r8 (B=0)",
           "cores": len(os.sched_getaffinity(0)), "wall_s": round(time.perf_counter() - t_all, 1), "results": table,
           "versions": software_versions()}
    out = {**headline(table), **out}
    atomic_write_json(a.out, out)
    plot(table, a.out.with_suffix(".png"), f"Scoring DL19 BM25 top-{a.depth}, {a.queries} queries "
         f"({table[0]['pairs']} pairs), SmolLM2-135M + LoRA r8, {out['cores']} CPU cores; each config a fresh process")
    for r in table:
        print(f"{r['config']:14s} {r['pairs_per_s']:7.2f} pairs/s {r['tokens_per_s']:8.1f} tok/s  RSS {r['peak_rss_gb']:.2f} GB "
              f"x{r['ratio_vs_crossencoder']}  nDCG@10 {r['ndcg_cut_10']}  diff {r[f'max_abs_score_diff_vs_{ref_name}']:.2e} "
              f"rankings {r['queries_with_identical_ranking']}  cpu {r['cpu_use']}")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
