"""``lorank ablate``: inference-time ablations of a trained adapter (:func:`lorank.ablate.run.ablate`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lorank.cli.common import cli_subject, console, guard, progress_factory


def ablate_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="A lorank run dir (last checkpoint) or checkpoint dir."),
    sweep: list[str] = typer.Option(["components"], "--sweep", help="components, projections, layers-leave-one-out, "
                                    "layers-keep-one, layer-windows, rank-truncation, rank-prefix (DyLoRA's "
                                    "ranks), scale (repeatable)."),
    eval_set: str = typer.Option("dl19", "--eval", help="A named set (dl19, dl20) or a TREC-DL-style folder."),
    depth: int = typer.Option(100, "--depth", min=1, help="Rerank this many candidates per query."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/ablations)."),
    window: int = typer.Option(11, "--window", help="Window width for layer-windows."),
    target_window: str = typer.Option(
        "5-15", "--target-window", help="The window layer-windows scores beside its regular ones (finding 4's, e.g. "
                                        "3-9; default the paper's 5-15), when the adapter reaches its last layer."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every layer (the naive sweep)."),
    merge_lora: Optional[bool] = typer.Option(None, "--merge-lora/--no-merge-lora",
                                              help="Score each configuration with its LoRA merged into the weights "
                                                   "(default: on CPUs, ~1.5x there; an interrupted sweep goes on as "
                                                   "it began)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N judged queries."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data root (default: $LORANK_DATA, ../shared/data)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading a pickle-based adapter (unsafe)."),
) -> None:
    """Inference-time ablations of a trained adapter: switch off / keep / scale / truncate LoRA deltas."""
    from rich.table import Table

    from lorank.ablate.run import ablate
    from lorank.ablate.windows import parse_window

    with guard(), progress_factory() as pf:
        target = parse_window(target_window, "--target-window")
        subject = cli_subject(adapter, eval_set, data=data, allow_pickle=allow_pickle)
        res = ablate(subject, sweep, depth, out, use_cache=not no_cache, window=window, progress=pf,
                     max_queries=max_queries, merge_lora=merge_lora, target_window=target)
    for name, entry in res["sweeps"].items():
        t = Table(title=f"{name} ({entry['wall_s']:.0f} s, cost {entry['cost_fraction']:.2f} of naive"
                        + ("; LoRA merged" if entry.get("merged") else "") + ")")
        for c in ("config", "nDCG@10", "Δ vs full", "% recovered", "MRR@10", "p (Holm)"):
            t.add_column(c, justify="right")
        for r in entry["rows"]:
            rec = r["recovered_ndcg_cut_10"]
            p = r["p_ndcg_cut_10"]
            t.add_row(r["config"], f"{r['ndcg_cut_10']:.4f}", f"{r['delta_ndcg_cut_10']:+.4f}",
                      "-" if rec is None else f"{rec:.0f}%", f"{r['recip_rank_10']:.4f}",
                      "-" if p is None else (f"{p:.3f}" + (" *" if r["significant_ndcg_cut_10"] else "")))
        console.print(t)
        console.print(f"plot: {entry['plot']}")
