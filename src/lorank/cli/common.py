"""What every verb of the command line shares: the consoles, lorank's errors as one red line and exit code 2,
progress bars, and the formatting of a missing number."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import typer
from rich.console import Console

from lorank.errors import LorankError
from lorank.progress import ProgressLines

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
