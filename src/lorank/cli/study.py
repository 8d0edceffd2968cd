"""``lorank study``, ``report``, ``study-time``, ``findings``, ``families`` and ``demo``: a whole study and its
report (:func:`lorank.study.run_study` then :func:`lorank.report.build_report`, :func:`lorank.study.study_time`,
:func:`lorank.report.findings_section.write_findings`, :func:`lorank.report.families.write_families`,
:func:`lorank.demo.run_demo`)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lorank.cli.common import console, err_console, guard


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
    from lorank.report import build_report
    from lorank.study import find_spec, load_spec, run_study

    with guard():
        if out is None:
            out = Path("studies_out") / load_spec(find_spec(spec)).name
        res = run_study(spec, out, data, dry_run=dry_run, only=only, console=console, device=device)
        if not (dry_run or no_report):
            res.report = build_report(res.study_dir)
            console.print(f"report: {res.report}")
    if dry_run and res.plan.data_problems:
        n = len(res.plan.data_problems)
        err_console.print(f"[bold red]error:[/] the plan is priced above, but a real run here would stop: {n} data "
                          f"problem{'s' if n > 1 else ''} (the warnings above). Fetch the data, or point --data or "
                          "$LORANK_DATA at the folder that holds it.", highlight=False, soft_wrap=True)
        raise typer.Exit(2)
    if res.failed:
        console.print(f"[red]{len(res.failed)} step(s) failed or were skipped[/]: see {res.study_dir / 'failures.txt'}")
        raise typer.Exit(1)


def report_cmd(study_dir: Path = typer.Argument(..., help="A study directory written by `lorank study`.")) -> None:
    """Write STUDY_DIR/report/index.html and tables.md from the study's results."""
    from lorank.report import build_report

    with guard():
        page = build_report(study_dir)
    console.print(f"report: {page}")


def study_time_cmd(
    study_dir: Path = typer.Argument(..., help="A study directory written by `lorank study` (or a snapshot of one)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the table (default: "
                                       "STUDY_DIR/time.json)."),
) -> None:
    """The time the study took: each step's calls (ok, failed, interrupted) summed from its call ledger, CPU and
    wall hours per step, per kind and in total; calls made before the ledger existed apart (wall only, from the run
    files). Writes time.json and prints the tables."""
    from rich.table import Table

    from lorank.layout.study import time_file
    from lorank.study import study_time
    from lorank.study.timing import time_rows

    with guard():
        table = study_time(study_dir, out)
    for by in ("step", "kind"):
        header, rows = time_rows(table, by)
        t = Table(title=f"time by {by}")
        for i, c in enumerate(header):
            t.add_column(c, overflow="fold" if i == 0 else "ellipsis")  # a step id folds, never cut at 80 columns
        for r in rows:
            t.add_row(*r)
        console.print(t)
    console.print(f"wrote {out or time_file(study_dir)}")


def findings_cmd(
    study_dir: Path = typer.Argument(..., help="A study directory written by `lorank study`."),
    md: Optional[Path] = typer.Option(None, "--md", help="Also write the Markdown table here (for a README)."),
) -> None:
    """The paper's five findings tested on a study: holds / does not hold / inconclusive, with p-values (Holm);
    writes STUDY_DIR/findings.json and prints the Markdown table."""
    from lorank.report.findings_section import write_findings

    with guard():
        _, text = write_findings(study_dir, md)
    print(text)


def families_cmd(
    study_dirs: list[Path] = typer.Argument(..., help="Finished study directories, one per model family (each with "
                                            "its findings.json, as `lorank findings` writes it)."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write families.json, families.md and "
                             "layer_window_profiles.png."),
    md: Optional[Path] = typer.Option(None, "--md", help="Also write the Markdown tables here."),
) -> None:
    """Across families: each study's findings side by side, one column per family (its verdicts as its findings.json
    gives them, the figures behind them with their role and queries), and the layer-window profiles of all
    families on one normalised depth axis."""
    from lorank.report.families import FIGURE, MD_FILE, write_families

    with guard():
        write_families(study_dirs, out, md)
    print((out / MD_FILE).read_text(encoding="utf-8"))
    console.print(f"tables: {out / MD_FILE}; figure: {out / FIGURE}")


def demo_cmd(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Where the demo writes its results."),
    data: Optional[Path] = typer.Option(None, "--data", help="Data folder (else $LORANK_DATA, ../shared/data, ir_datasets)."),
    spec: str = typer.Option("demo", "--spec", help="The study to run (default: the demo preset, studies/demo.yaml)."),
) -> None:
    """The main job: the shipped reference reranker against BM25 and dissected on a DL19 slice, the committed CPU
    study's findings and a smoke check of training, in one report that opens with what to take away
    (studies/demo.yaml)."""
    from lorank.demo import run_demo

    with guard():
        res = run_demo(out, data, console=console, spec=spec)
    if res.failed:
        raise typer.Exit(1)
