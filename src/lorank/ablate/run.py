"""``lorank.ablate(subject, ...)``: run named sweeps on one trained adapter over its candidates; tables, runs, plots."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from lorank.ablate.engine import score_configs
from lorank.ablate.sweeps import BASE, build_sweep
from lorank.ablate.windows import PAPER_WINDOW, Window
from lorank.atomic import atomic_write_json
from lorank.data.roles import role_of
from lorank.data.sources import eval_label
from lorank.evaluation import compare, write_run
from lorank.inference.runs import rerank_to_run
from lorank.plotting import METRIC_LABELS, label_bars, pyplot, save_figure
from lorank.subject import Subject

MEASURES = ("ndcg_cut_10", "recip_rank_10")
PARTIAL = ".partial"  # the sweeps' states while they run (lorank.ablate.resume)


def ablate(subject: Subject, sweeps: Sequence[str] = ("components",), depth: int = 100,
           out_dir: str | Path | None = None, use_cache: bool = True, window: int = 11, batch_tokens: int = 8192,
           write_runs: bool = True, max_queries: int | None = None,
           progress: Callable[[str, int], Callable[[int], None]] | None = None, resume: bool = True,
           merge_lora: bool | None = None, target_window: Window = PAPER_WINDOW) -> dict[str, Any]:
    """Score each sweep's configurations of ``subject``'s adapter (:func:`lorank.subject.resolve_subject`) over its
    candidates' top ``depth`` (the first ``max_queries`` judged queries when given); a table, TREC runs and a PNG
    per sweep in ``out_dir`` (default: the checkpoint's ``ablations/``) and ``ablations.json``. ``resume``: each
    sweep keeps its finished chunks in ``out_dir/.partial/`` while it runs, so the same call after an interruption
    goes on where it stopped (:mod:`lorank.ablate.resume`); the folder is removed when every sweep is written.
    ``merge_lora``: score with LoRA merged into the weights (None: on CPUs; :func:`lorank.ablate.engine.score_configs`);
    each sweep records ``merged``. ``target_window``: the window the layer-windows sweep scores beside its regular
    ones (finding 4's, a study's ``verdicts.target_window``)."""
    rr = subject.reranker
    rs = subject.candidates.subset(max_queries)
    eval_set = subject.name
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
        configs = [BASE] + build_sweep(sweep, rr.model, window=window, target=target_window)
        tick = progress(sweep, len(seqs)) if progress else None
        state = out_dir / PARTIAL / f"{run_file_stem(sweep)}.npz" if resume else None
        sc = score_configs(rr.model, seqs, int(rr.tokenizer.pad_token_id), configs, batch_tokens=batch_tokens,
                           bf16=rr.scorer.bf16, use_cache=use_cache, progress=tick, state=state,
                           merge_lora=merge_lora)
        runs = {}
        for name, arr in sc.scores.items():
            by_q: dict[str, dict[str, float]] = {}
            for (qid, docid), s in zip(keys, arr):
                by_q.setdefault(qid, {})[docid] = float(s)
            runs[name] = rerank_to_run(by_q, rs.run, depth)
        order = ["full", "none"] + [c.name for c in configs if c.name != "none"]
        cmp = compare(rs.qrels, {n: runs[n] for n in order}, baseline="full", measures=list(MEASURES))
        table = comparison_table(cmp, order, {c.name: c.group for c in configs})
        slug = sweep.replace("/", "_")
        if write_runs:
            for name, run in runs.items():
                write_run(out_dir / "runs" / slug / f"{run_file_stem(name)}.run", run, tag=run_file_stem(name))
        entry = {"rows": table, "wall_s": round(sc.wall_s, 2), "layer_calls": sc.layer_calls,
                 "naive_layer_calls": sc.naive_layer_calls, "cost_fraction": round(sc.cost_fraction, 4),
                 "cached": use_cache, "merged": sc.merged}
        png = plot_sweep(sweep, table, out_dir / f"{slug}.png", where=where_text(eval_set, len(rs.run), depth))
        entry["plot"] = str(png)
        result["sweeps"][sweep] = entry
        atomic_write_json(out_dir / f"{slug}.json", {**{k: v for k, v in result.items() if k != "sweeps"}, sweep: entry})
    atomic_write_json(out_dir / "ablations.json", result)
    if resume:
        shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    return result


def run_file_stem(name: str) -> str:
    """The file name (without ``.run``) of an ablation configuration's TREC run: ``runs/<sweep>/<stem>.run``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def comparison_table(cmp: Any, order: list[str], groups: dict[str, str]) -> list[dict[str, Any]]:
    """A sweep's rows from a comparison against "full": each measure, its delta, the % of the full adapter's gain
    over "none" recovered, Holm-adjusted p and significance (the rows of ablations.json)."""
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
            row[f"p_{m}"] = None if c is None else float(f"{c.p_adjusted:.4g}")   # 4 significant digits, not places
            row[f"significant_{m}"] = None if c is None else bool(c.significant)
        rows.append(row)
    return rows


def where_text(eval_set: str, queries: int, depth: int | None) -> str:
    """What a sweep was scored on, with the set's role, for its figure's title: "DL19 (dev), 43 queries x top-50"."""
    label = eval_label(eval_set)
    return f"{label.upper() if label.startswith('dl') else label} ({role_of(label)}), {queries} queries x top-{depth}"


def plot_sweep(sweep: str, rows: list[dict[str, Any]], out: Path, where: str = "") -> Path:
    """The sweep's figure (:func:`sweep_figure`) as a PNG, written atomically."""
    return save_figure(sweep_figure(sweep, rows, where), out)


def sweep_figure(sweep: str, rows: list[dict[str, Any]], where: str = "") -> Any:
    """Layer sweeps: nDCG@10 by layer (a line); the others: a bar per configuration, labelled above the bar with
    its nDCG@10 and % of the gain recovered (vertical when there are many bars). Lines: full adapter, all off.
    ``where`` (what it was scored on, :func:`where_text`) goes into the title."""
    plt = pyplot()
    ref = {r["config"]: r for r in rows if r["config"] in ("full", "none")}
    body = [r for r in rows if r["config"] not in ("full", "none")]
    m = "ndcg_cut_10"
    layer_sweep = sweep.startswith("layers-")
    width = max(6, 0.32 * len(body) + 3) if layer_sweep else max(7.5, 0.5 * len(body) + 4.5)  # + the legend
    fig, ax = plt.subplots(figsize=(width, 4.4), constrained_layout=True)
    if layer_sweep:
        xs = [int("".join(ch for ch in r["config"].split("L")[-1] if ch.isdigit())) for r in body]
        ax.plot(xs, [r[m] for r in body], marker="o", label=body[0]["group"] if body else sweep)
        for x, r in zip(xs, body):
            if r.get(f"significant_{m}"):
                ax.plot([x], [r[m]], marker="*", color="crimson", markersize=11, linestyle="none")
        ax.set_xlabel("layer")
        if xs:
            ax.set_xticks(range(min(xs), max(xs) + 1, 1 if len(xs) <= 16 else 2))
    else:
        names = [r["config"] for r in body]
        colors = ["tab:blue" if r["group"] != "kept alone" else "tab:orange" for r in body]
        ax.bar(range(len(body)), [r[m] for r in body], color=colors)
        ax.set_xticks(range(len(body)), names, rotation=45 if len(body) > 4 else 0, ha="right" if len(body) > 4 else "center")
        labels = [f"{r[m]:.3f}" + (f" ({r[f'recovered_{m}']:.0f}%)" if r.get(f"recovered_{m}") is not None else "")
                  for r in body]
        label_bars(ax, [r[m] for r in body], labels, [bool(r.get(f"significant_{m}")) for r in body],
                   avoid=[ref["full"][m]])
    ax.axhline(ref["full"][m], color="green", ls="--", label=f"full adapter ({ref['full'][m]:.3f})")
    ax.axhline(ref["none"][m], color="grey", ls=":", label=f"all LoRA deltas off ({ref['none'][m]:.3f})")
    ax.set_ylabel(METRIC_LABELS[m])
    ax.set_title(f"Inference-time ablation: {sweep}" + (f" ({where})" if where else "")
                 + "\n(* = p < 0.05 vs full adapter, paired t-test, Holm"
                 + ("" if layer_sweep else ";\nbar labels: nDCG@10 (% of the full adapter's gain recovered)")
                 + ")", fontsize=9.5)
    ax.grid(alpha=0.3, axis="y")
    if layer_sweep:
        ax.legend(fontsize=8, loc="best")
    else:  # beside the axes, where no bar label can run into it
        from matplotlib.patches import Patch

        handles = ([Patch(color="tab:blue", label="removed"), Patch(color="tab:orange", label="kept alone")]
                   if "kept alone" in {r["group"] for r in body} else [])
        ax.legend(handles=handles + ax.get_legend_handles_labels()[0], fontsize=8, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig
