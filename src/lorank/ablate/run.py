"""``lorank.ablate(...)``: run named sweeps on one trained adapter over an eval set; tables, runs, plots."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from lorank.ablate.engine import Config, score_configs
from lorank.ablate.sweeps import BASE, build_sweep
from lorank.atomic import atomic_write_json

MEASURES = ("ndcg_cut_10", "recip_rank_10")


def ablate(adapter: str | Path, sweeps: Sequence[str] = ("components",), eval_set: str = "dl19",
           depth: int = 100, out_dir: str | Path | None = None, use_cache: bool = True, data_root: str | None = None,
           window: int = 11, batch_tokens: int = 8192, write_runs: bool = True, max_queries: int | None = None,
           progress: Callable[[str, int], Callable[[int], None]] | None = None,
           allow_pickle: bool = False) -> dict[str, Any]:
    from lorank.data import resolve_eval_set
    from lorank.reranker import Reranker
    from lorank.score import compare, write_run
    from lorank.train.checkpoint_eval import rerank_to_run

    rr = Reranker.from_adapter(adapter, allow_pickle=allow_pickle)
    rs = resolve_eval_set(eval_set, data_root).subset(max_queries)
    keys, seqs = [], []
    for qid in sorted(rs.run):
        for e in rs.run[qid][:depth]:
            p = rs.passages[e.docid]
            keys.append((qid, e.docid))
            seqs.append(rr.encoder.encode(rs.queries[qid], p.text, p.title))
    out_dir = Path(out_dir or Path(rr.meta["checkpoint"]) / "ablations")
    result: dict[str, Any] = {"adapter": rr.meta.get("checkpoint"), "eval_set": eval_set, "depth": depth,
                              "queries": len(rs.run), "pairs": len(seqs), "sweeps": {}}
    for sweep in sweeps:
        configs = [BASE] + build_sweep(sweep, rr.model, window=window)
        tick = progress(sweep, len(seqs)) if progress else None
        sc = score_configs(rr.model, seqs, int(rr.tokenizer.pad_token_id), configs, batch_tokens=batch_tokens,
                           bf16=rr.scorer.bf16, use_cache=use_cache, progress=tick)
        runs = {}
        for name, arr in sc.scores.items():
            by_q: dict[str, dict[str, float]] = {}
            for (qid, docid), s in zip(keys, arr):
                by_q.setdefault(qid, {})[docid] = float(s)
            runs[name] = rerank_to_run(by_q, rs.run, depth)
        order = ["full", "none"] + [c.name for c in configs if c.name != "none"]
        cmp = compare(rs.qrels, {n: runs[n] for n in order}, baseline="full", measures=list(MEASURES))
        table = _table(cmp, order, {c.name: c.group for c in configs})
        slug = sweep.replace("/", "_")
        if write_runs:
            for name, run in runs.items():
                write_run(out_dir / "runs" / slug / f"{_safe(name)}.run", run, tag=_safe(name))
        entry = {"rows": table, "wall_s": round(sc.wall_s, 2), "layer_calls": sc.layer_calls,
                 "naive_layer_calls": sc.naive_layer_calls, "cost_fraction": round(sc.cost_fraction, 4),
                 "cached": use_cache}
        png = plot_sweep(sweep, table, out_dir / f"{slug}.png")
        entry["plot"] = str(png)
        result["sweeps"][sweep] = entry
        atomic_write_json(out_dir / f"{slug}.json", {**{k: v for k, v in result.items() if k != "sweeps"}, sweep: entry})
    atomic_write_json(out_dir / "ablations.json", result)
    return result


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _table(cmp: Any, order: list[str], groups: dict[str, str]) -> list[dict[str, Any]]:
    agg = {n: cmp.results[n].aggregate for n in order} if hasattr(cmp, "results") else None
    if agg is None:
        raise RuntimeError("unexpected comparison result")
    rows = []
    for n in order:
        row: dict[str, Any] = {"config": n, "group": groups.get(n, "reference")}
        for m in MEASURES:
            v, full, base = agg[n][m], agg["full"][m], agg["none"][m]
            row[m] = round(v, 4)
            row[f"delta_{m}"] = round(v - full, 4)
            row[f"recovered_{m}"] = round(100.0 * (v - base) / (full - base), 1) if abs(full - base) > 1e-12 else None
            c = cmp.get(n, m) if n != "full" else None
            row[f"p_{m}"] = None if c is None else round(c.p_adjusted, 4)
            row[f"significant_{m}"] = None if c is None else bool(c.significant)
        rows.append(row)
    return rows


def plot_sweep(sweep: str, rows: list[dict[str, Any]], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ref = {r["config"]: r for r in rows if r["config"] in ("full", "none")}
    body = [r for r in rows if r["config"] not in ("full", "none")]
    m = "ndcg_cut_10"
    layer_sweep = sweep.startswith("layers-")
    fig, ax = plt.subplots(figsize=(max(6, 0.32 * len(body) + 3), 4), constrained_layout=True)
    if layer_sweep:
        xs = [int("".join(ch for ch in r["config"].split("L")[-1] if ch.isdigit())) for r in body]
        ax.plot(xs, [r[m] for r in body], marker="o", label=body[0]["group"] if body else sweep)
        for x, r in zip(xs, body):
            if r.get(f"significant_{m}"):
                ax.plot([x], [r[m]], marker="*", color="crimson", markersize=11, linestyle="none")
        ax.set_xlabel("layer")
    else:
        names = [r["config"] for r in body]
        colors = ["tab:blue" if r["group"] != "kept alone" else "tab:orange" for r in body]
        ax.bar(range(len(body)), [r[m] for r in body], color=colors)
        ax.set_xticks(range(len(body)), names, rotation=45 if len(body) > 4 else 0, ha="right" if len(body) > 4 else "center")
        for i, r in enumerate(body):
            rec = r.get(f"recovered_{m}")
            label = f"{r[m]:.3f}" + (f"\n{rec:.0f}% rec." if rec is not None else "")
            ax.text(i, r[m] / 2, label, ha="center", va="center", color="white", fontsize=8, fontweight="bold")
            if r.get(f"significant_{m}"):
                ax.text(i, r[m] + 0.005, "*", ha="center", color="crimson", fontsize=14)
    ax.axhline(ref["full"][m], color="green", ls="--", label=f"full adapter ({ref['full'][m]:.3f})")
    ax.axhline(ref["none"][m], color="grey", ls=":", label=f"all LoRA deltas off ({ref['none'][m]:.3f})")
    top = max([r[m] for r in rows] + [0.0])
    ax.set_ylim(0 if not layer_sweep else None, top * 1.18 if not layer_sweep else None)  # room for the legend
    ax.set_ylabel("nDCG@10")
    ax.set_title(f"Inference-time ablation: {sweep}\n(* = p < 0.05 vs full adapter, paired t-test, Holm)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8, loc="upper right" if not layer_sweep else "best", ncol=2 if not layer_sweep else 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)
    return out
