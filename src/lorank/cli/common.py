"""What every verb of the command line shares: the consoles, lorank's errors as one red line and exit code 2,
progress bars, the formatting of a missing number, and the subject (adapter + candidates) built from the options."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Optional

import typer
from rich.console import Console

from lorank.data.rerankset import load_beir_rerank_set
from lorank.errors import ConfigError, LorankError
from lorank.progress import ProgressLines
from lorank.subject import Subject, resolve_subject

console = Console()
err_console = Console(stderr=True)


def fail(e: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn lorank's own errors into a one-line message and exit code 2 (no traceback); an interruption exits
    128 + the signal's number (130 for Ctrl-C), as shells expect. An error may carry its own `exit_code`."""
    try:
        yield
        _say_truncation()
    except KeyboardInterrupt:
        err_console.print("[bold yellow]interrupted[/] (Ctrl-C)", highlight=False)
        raise typer.Exit(code=130) from None
    except LorankError as e:
        code = getattr(e, "exit_code", 2)
        err_console.print(f"[bold red]{'error' if code == 2 else 'stopped'}:[/] {e}", highlight=False,
                          soft_wrap=True, markup=True)
        raise typer.Exit(code=code) from None


def _say_truncation() -> None:
    """The count of inputs cut to the max length in this command, once (nothing when none were)."""
    import sys

    inputs = sys.modules.get("lorank.models.inputs")   # only when this command encoded anything
    note = inputs.truncation_note() if inputs is not None else None
    if note:
        err_console.print(f"[dim]note: {note}[/]", highlight=False, soft_wrap=True)
        inputs.TRUNCATION.reset()


def _with_lines(label: str, total: int | None, tick: Any) -> Any:
    return tick if err_console.is_terminal else ProgressLines(label, total, tick)


@contextlib.contextmanager
def progress(label: str, total: int | None) -> Iterator[Any]:
    """One rich progress bar on stderr; yields ``tick(n)``."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console) as prog:
        task = prog.add_task(label, total=total)
        yield _with_lines(label, total, lambda n: prog.advance(task, n))


@contextlib.contextmanager
def progress_factory() -> Iterator[Any]:
    """``factory(label, total) -> tick(n)``: one rich progress bar per stage, all closed at the end."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console) as prog:
        def factory(label: str, total: int) -> Any:
            task = prog.add_task(label, total=total)
            return _with_lines(label, total, lambda n: prog.advance(task, n))

        yield factory


def fmt(v: Any, spec: str = ".3f") -> str:
    """``-`` for a missing value or NaN, else ``format(v, spec)``."""
    return "-" if v is None or v != v else format(v, spec)


# what a verb needs in place of --eval, and how its error says so: the analyses score against qrels; rerank also reads
# a BEIR split (--beir). A verb not named here leaves a missing set to resolve_subject's own error.
WITHOUT_EVAL = {
    "analysis": (("queries", "run", "collection", "qrels"),
                 "give --eval NAME, or all of --queries, --run, --collection and --qrels"),
    "rerank": (("queries", "run", "collection"),
               "give --eval NAME, --beir DIR with --run, or all of --queries, --run and --collection"),
}


def cli_subject(adapter: Optional[Path], eval_set: Optional[str] = None, queries: Optional[Path] = None,
                run: Optional[Path] = None, collection: Optional[Path] = None, qrels: Optional[Path] = None,
                data: Optional[Path] = None, allow_pickle: bool = False, beir: Optional[Path] = None,
                split: str = "test", verb: Optional[str] = None) -> Subject:
    """The subject of a verb (:func:`lorank.subject.resolve_subject`) from its options: ``--adapter`` (loaded when
    the verb first needs the model) and the candidates from ``--eval`` (a name, under ``--data``, or a folder),
    from ``--queries/--run/--collection`` (``--qrels`` replaces the set's judgements), or from ``--beir DIR`` with
    ``--run`` (its ``--split``). ``verb``: a key of :data:`WITHOUT_EVAL`, whose files are required when ``--eval``
    is not given."""
    if beir is not None:
        if eval_set or queries or collection:
            raise ConfigError("--beir reads the queries and passages from the BEIR folder: give it with --run only "
                              "(not with --eval, --queries or --collection)")
        if not run:
            raise ConfigError("--beir needs --run, the first-stage TREC run to rerank (lorank retrieve --beir DIR --out RUN)")
        return resolve_subject(adapter, load_beir_rerank_set(beir, run, split=split), qrels=qrels,
                               allow_pickle=allow_pickle)
    if verb is not None:
        files, message = WITHOUT_EVAL[verb]
        given = {"queries": queries, "run": run, "collection": collection, "qrels": qrels}
        if not eval_set and not all(given[f] for f in files):
            raise ConfigError(message)
    return resolve_subject(adapter, eval_set, queries, run, collection, qrels, data, allow_pickle)
