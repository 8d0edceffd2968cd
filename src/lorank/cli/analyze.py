"""``lorank analyze weights / compare / probe / patch / adalora``: adapter weight statistics, subspace similarity,
layer-wise probes, activation patching and AdaLoRA's rank allocation (a typer sub-app over :mod:`lorank.analyze`);
``lorank analyze compare-views adalora / dylora / icr``: the seed papers' views against a study's trained adapters
(over :mod:`lorank.report.view_compare`)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from lorank.cli.common import cli_subject, console, err_console, fmt, guard, progress_factory
from lorank.errors import ConfigError

analyze_app = typer.Typer(help="Dissect trained adapters: weight statistics, subspace similarity, "
                               "layer-wise probes, activation patching, AdaLoRA's rank allocation.",
                          no_args_is_help=True, pretty_exceptions_enable=False)


def _floats(text: str, opt: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"{opt} expects numbers separated by commas, got {text!r}") from None
    if not vals:
        raise ConfigError(f"{opt} is empty")
    return vals


_DATA_HELP = "A named set (dl19, dl20) or a TREC-DL-style folder (else --queries/--run/--collection/--qrels)."
# the options probe and patch share (declared once: the same flag, type and help in both)
AdapterOption = Annotated[Path, typer.Option("--adapter", help="A lorank run dir (last checkpoint) or a checkpoint dir.")]
EvalOption = Annotated[Optional[str], typer.Option("--eval", help=_DATA_HELP)]
QueriesOption = Annotated[Optional[Path], typer.Option("--queries", help="queries.tsv")]
RunOption = Annotated[Optional[Path], typer.Option("--run", help="First-stage TREC run")]
CollectionOption = Annotated[Optional[Path], typer.Option("--collection", help="collection.tsv")]
DataOption = Annotated[Optional[Path], typer.Option("--data", help="Data folder for named sets.")]


def weights_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="A lorank run dir (last checkpoint) or a checkpoint dir."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/analysis)."),
    base: Optional[str] = typer.Option(None, "--base", help="Base model (dir, .gguf, hub id) for relative norms "
                                                            "(default: the checkpoint's metadata)."),
    no_base: bool = typer.Option(False, "--no-base", help="Skip the relative norms (no base weights read)."),
    require_base: bool = typer.Option(False, "--require-base", help="Fail if the base weights cannot be read."),
    top: int = typer.Option(10, "--top", help="How many modules to list by norm."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle-based adapter (unsafe)."),
) -> None:
    """Per-module norms, relative norms, singular values, effective and stable rank (from the files alone)."""
    from rich.table import Table

    from lorank.analyze import weight_stats

    with guard():
        res = weight_stats(adapter, out, base=base, base_weights=False if no_base else (True if require_base else "auto"),
                           allow_pickle=allow_pickle, top_k=top)
    s = res["summary"]
    t = Table(title=f"{res['adapter']}: {s['modules']} LoRA modules ({res['variant']}, scaling {res['scaling_rule']}), "
                    f"total ||dW||_F {s['total_fro']:.3f}, mean effective rank {s['mean_effective_rank']:.2f}")
    for c in ("module", "||dW||_F", "||dW||/||W||", "eff. rank"):
        t.add_column(c, justify="left" if c == "module" else "right")
    for r in s["top_by_fro"]:
        t.add_row(r["module"], fmt(r["fro"]), fmt(r["rel_fro"], ".4f"), fmt(r["effective_rank"], ".2f"))
    console.print(t)
    if res.get("base_note"):
        err_console.print(f"[yellow]note:[/] {res['base_note']}", highlight=False)
    for k, v in res["files"].items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)


def compare_cmd(
    adapter: list[Path] = typer.Option(..., "--adapter", help="Give exactly two: --adapter A --adapter B "
                                                              "(run dirs or checkpoint dirs)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: A/analysis)."),
    side: str = typer.Option("right", "--side", help="right: input (row) spaces, as in the LoRA paper; left: output spaces."),
    module: Optional[str] = typer.Option(None, "--module", help="Module for the full phi(i,j) grid, e.g. L12.q_proj "
                                                                "(default: the largest delta in A)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle-based adapters (unsafe)."),
) -> None:
    """Normalised subspace similarity phi(i, j) of two adapters or checkpoints, per layer and projection."""
    from lorank.analyze import compare_adapters

    with guard():
        if len(adapter) != 2:
            raise ConfigError(f"compare needs exactly two --adapter options, got {len(adapter)}")
        res = compare_adapters(adapter[0], adapter[1], out, side=side, module=module, allow_pickle=allow_pickle)
    s = res["summary"]
    console.print(f"{res['adapter_a']} vs {res['adapter_b']} ({side} singular vectors, {s['modules']} modules)",
                  highlight=False)
    console.print(f"  mean phi(r, r) = {s['mean_phi_full']:.4f}   (random subspaces: {s['mean_random_full']:.4f})\n"
                  f"  mean phi(1, 1) = {s['mean_phi_top1']:.4f}   (random: {s['mean_random_top1']:.4f})\n"
                  f"  mean cosine of the deltas = {s['mean_delta_cosine']:.4f}", highlight=False)
    for c, v in s["by_component"].items():
        console.print(f"  {c}: phi(r, r) {v['mean_phi_full']:.4f}, phi(1, 1) {v['mean_phi_top1']:.4f}", highlight=False)
    for k, v in res["files"].items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)


def probe_cmd(
    adapter: AdapterOption,
    eval_set: EvalOption = None,
    queries: QueriesOption = None,
    run: RunOption = None,
    collection: CollectionOption = None,
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="TREC qrels (probe labels)"),
    data: DataOption = None,
    max_queries: int = typer.Option(20, "--max-queries", help="Queries to sample (0: all eligible)."),
    depth: int = typer.Option(30, "--depth", min=1, help="Judged pairs among each query's top K candidates."),
    rel_threshold: int = typer.Option(2, "--rel-threshold", help="Grade at or above which a pair is relevant."),
    folds: int = typer.Option(5, "--folds", help="GroupKFold folds (split by query)."),
    c: str = typer.Option("0.001,0.01,0.1,1", "--C", help="Inverse L2 strength; several (comma-separated) are "
                                                          "chosen from per fold by an inner GroupKFold."),
    features_out: Optional[Path] = typer.Option(None, "--save-features", help="Also save the features (.npz)."),
    features_in: Optional[Path] = typer.Option(None, "--features", help="Fit on saved features (no model run)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/analysis)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle-based adapter (unsafe)."),
) -> None:
    """Per-layer linear probes of relevance, base (LoRA off) vs fine-tuned, cross-validated by query."""
    from rich.table import Table

    from lorank.analyze import probe

    with guard(), progress_factory() as pf:
        Cs = _floats(c, "--C")
        subject = None if features_in else cli_subject(adapter, eval_set, queries, run, collection, qrels, data,
                                                       allow_pickle, verb="analysis")
        res = probe(subject, out_dir=out, max_queries=max_queries or None, depth=depth, rel_threshold=rel_threshold,
                    n_splits=folds, C=Cs, seed=seed, progress=pf, features_out=features_out, features_in=features_in)
    pq = res["score_auc_per_query"]
    t = Table(title=f"probes on {res['eval_set']}: {res['queries']} queries, {res['pairs']} pairs "
                    f"({res['positives']} relevant); the models' own within-query AUC: base {pq['base']:.3f}, "
                    f"fine-tuned {pq['finetuned']:.3f}")
    for col in ("layer", "AUC/query base", "AUC/query fine-tuned", "pooled AUC base", "pooled AUC fine-tuned",
                "acc base", "acc fine-tuned"):
        t.add_column(col, justify="right")
    for r in res["layers"]:
        t.add_row(str(r["layer"]), fmt(r["base_auc_per_query"]), fmt(r["finetuned_auc_per_query"]),
                  fmt(r["base_auc"]), fmt(r["finetuned_auc"]), fmt(r["base_accuracy"]),
                  fmt(r["finetuned_accuracy"]))
    console.print(t)
    for k, v in res["files"].items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)


def patch_cmd(
    adapter: AdapterOption,
    eval_set: EvalOption = None,
    queries: QueriesOption = None,
    run: RunOption = None,
    collection: CollectionOption = None,
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="TREC qrels (for nDCG@10)"),
    data: DataOption = None,
    max_queries: int = typer.Option(15, "--max-queries", help="Queries to sample (0: all eligible)."),
    depth: int = typer.Option(20, "--depth", min=1, help="Rerank each query's top K candidates."),
    site: list[str] = typer.Option(["layer"], "--site", help="layer, attn or mlp (repeatable)."),
    layers: str = typer.Option("all", "--layers", help="Layers to patch: all, 0-29, 0,4,8 ..."),
    block_layers: Optional[str] = typer.Option(None, "--block-layers", help="Other layers for attn / mlp sites "
                                                                            "(default: --layers)."),
    no_exact_check: bool = typer.Option(False, "--no-exact-check", help="Skip the all-blocks exactness run."),
    features_out: Optional[Path] = typer.Option(None, "--save-features", help="Also save the judged pairs' "
                                                "last-token states (.npz, for probe --features)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the query sample."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/analysis)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle-based adapter (unsafe)."),
) -> None:
    """Activation patching: fine-tuned layer / attention / MLP outputs written into the LoRA-off model."""
    from rich.table import Table

    from lorank.analyze import patch

    sites = [s.strip() for item in site for s in item.split(",") if s.strip()]
    with guard(), progress_factory() as pf:
        subject = cli_subject(adapter, eval_set, queries, run, collection, qrels, data, allow_pickle, verb="analysis")
        res = patch(subject, out_dir=out, max_queries=max_queries or None, depth=depth, sites=sites, layers=layers,
                    block_layers=block_layers, exact_check=not no_exact_check, seed=seed, features_out=features_out,
                    progress=pf)
    n = res["ndcg_cut_10"]
    t = Table(title=f"patching on {res['eval_set']}: {res['queries']} queries x top {res['depth']}; nDCG@10 base "
                    f"{n['base']:.4f} -> fine-tuned {n['finetuned']:.4f} (cost {res['cost']['cost_fraction']:.2f} of naive)")
    for col in ("patch", "nDCG@10", "% gain restored", "% score dist. closed", "max |s - s_ft|"):
        t.add_column(col, justify="right")
    for r in res["rows"]:
        t.add_row(r["config"], fmt(r["ndcg_cut_10"], ".4f"), fmt(r["restored_ndcg_pct"], ".0f"),
                  fmt(r["restored_score_pct"], ".0f"), fmt(r["max_abs_diff_vs_finetuned"], ".2e"))
    console.print(t)
    for k, v in res["files"].items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)


def adalora_cmd(
    adapter: AdapterOption,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/analysis)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickle-based adapter (unsafe)."),
) -> None:
    """AdaLoRA's rank allocation: the rank each layer and projection kept (from the files alone)."""
    from rich.table import Table

    from lorank.analyze import adalora_allocation

    with guard():
        res = adalora_allocation(adapter, out, allow_pickle=allow_pickle)
    state = "allocated" if res["allocated"] else "not allocated yet (no rank_pattern: every module at init_r)"
    t = Table(title=f"{res['adapter']}: {res['kept']} ranks kept over {res['modules']} modules (init_r "
                    f"{res['init_r']}, target_r {res['target_r']}: budget {res['budget']}); {state}")
    t.add_column("layer", justify="right")
    for p in res["projections"]:
        t.add_column(p, justify="right")
    t.add_column("total", justify="right")
    for layer, row in zip(res["layers"], res["ranks"]):
        t.add_row(str(layer), *("-" if v is None else str(v) for v in row), str(res["by_layer"][str(layer)]))
    t.add_row("total", *(str(res["by_projection"][p]) for p in res["projections"]), str(res["kept"]))
    console.print(t)
    console.print(f"json: {Path(res['plot']).with_suffix('.json')}\nplot: {res['plot']}", highlight=False,
                  soft_wrap=True)


compare_views_app = typer.Typer(help="The seed papers' views against a finished study's trained adapters: AdaLoRA's "
                                     "allocation, DyLoRA's rank curve, ICR's per-layer profile (JSON + PNG).",
                                no_args_is_help=True, pretty_exceptions_enable=False)
StudyOption = Annotated[Path, typer.Option("--study", help="A finished study folder (e.g. results/study_smollm2_cpu).")]
CompareOutOption = Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON and the PNG.")]
BootOption = Annotated[int, typer.Option("--boot", min=100, help="Bootstrap resamples of the queries.")]


def _command() -> str:
    import shlex
    import sys

    return "lorank " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _print_correlations(corrs: list[dict], where: str) -> None:
    for c in corrs:
        rho, ci = c["rho"], c["ci95"]
        text = "undefined" if rho is None else f"{rho:+.3f}  95% CI [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        console.print(f"  {c['name']}: rho {text}  (n={c['n_units']} units, {c['n_queries']} queries; {where})",
                      highlight=False)


def compare_adalora_cmd(
    allocation: Path = typer.Option(..., "--allocation", help="adalora_allocation.json (lorank.analyze."
                                                               "adalora_allocation)."),
    study: StudyOption = ...,
    out: CompareOutOption = ...,
    role: Optional[str] = typer.Option(None, "--role", help="dev or test: whose ablations (default: test if "
                                                            "ablated there, else dev)."),
    boot: BootOption = 2000,
) -> None:
    """AdaLoRA's rank allocation against the study's ablation importance (per layer, layer window, projection)."""
    from lorank.report.view_compare import compare_adalora

    with guard():
        res = compare_adalora(allocation, study, out, role=role, n_boot=boot, command=_command())
    _print_correlations(res["correlations"], res["study"]["where"])
    console.print(f"figure: {res['figure']}", highlight=False, soft_wrap=True)


def compare_dylora_cmd(
    sweep: list[Path] = typer.Option(..., "--sweep", help="ablations.json of `lorank ablate --sweep rank-prefix` or "
                                                          "its folder; repeat once per set."),
    study: StudyOption = ...,
    out: CompareOutOption = ...,
    full_rank: Optional[int] = typer.Option(None, "--full-rank", help="The DyLoRA adapter's rank (default: its "
                                                                      "adapter_config.json)."),
    boot: BootOption = 2000,
) -> None:
    """DyLoRA's rank prefixes vs the study's trained ranks vs its dissected adapter's rank truncation."""
    from lorank.report.view_compare import compare_dylora

    with guard():
        res = compare_dylora(sweep, study, out, full_rank=full_rank, n_boot=boot, command=_command())
    for p in res["points"]:
        console.print(f"  {p['series']}: rank {p['rank']} nDCG@10 {p['ndcg']:.4f} [{p['ci95'][0]:.4f}, "
                      f"{p['ci95'][1]:.4f}] ({p['role']}: {'+'.join(p['sets'])}, n={p['n_queries']})", highlight=False)
    for n in res["notes"]:
        err_console.print(f"[yellow]note:[/] {n}", highlight=False)
    console.print(f"figure: {res['figure']}", highlight=False, soft_wrap=True)


def compare_icr_cmd(
    profile: list[Path] = typer.Option(..., "--profile", help="icr_profile.json (lorank.analyze.icr_profile); "
                                                              "repeat, paired in order with --study."),
    study: list[Path] = typer.Option(..., "--study", help="The finished study of the same model; one per --profile."),
    out: CompareOutOption = ...,
    eval_set: Optional[list[str]] = typer.Option(None, "--set", help="The adapter's ablations on these sets "
                                                                     "(default: the profile's set)."),
    boot: BootOption = 2000,
) -> None:
    """ICR's per-layer profile against the trained adapter's layer importance, on a normalised depth axis."""
    from lorank.report.view_compare import compare_icr

    with guard():
        if len(profile) != len(study):
            raise ConfigError(f"give one --study per --profile (got {len(profile)} profiles, {len(study)} studies)")
        res = compare_icr(list(zip(profile, study)), out, sets=eval_set or None, n_boot=boot, command=_command())
    for p in res["pairs"]:
        _print_correlations(p["correlations"], f"ICR on {p['set']}; adapter {p['study']['where']}")
    console.print(f"figure: {res['figure']}", highlight=False, soft_wrap=True)


for _name, _fn in (("weights", weights_cmd), ("compare", compare_cmd), ("probe", probe_cmd), ("patch", patch_cmd),
                   ("adalora", adalora_cmd)):
    analyze_app.command(_name)(_fn)
for _name, _fn in (("adalora", compare_adalora_cmd), ("dylora", compare_dylora_cmd), ("icr", compare_icr_cmd)):
    compare_views_app.command(_name)(_fn)
analyze_app.add_typer(compare_views_app, name="compare-views")
