"""What every verb of the command line shares: the consoles, lorank's errors as one red line and exit code 2,
progress bars, and the formatting of a missing number."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import typer
from rich.console import Console

from lorank.errors import LorankError

console = Console()
err_console = Console(stderr=True)


def fail(e: Exception) -> None:
    err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code=2)


@contextlib.contextmanager
def guard() -> Iterator[None]:
    """Turn lorank's own errors into a one-line message and exit code 2 (no traceback)."""
    try:
        yield
    except LorankError as e:
        fail(e)


class ProgressLines:
    """``tick(n)`` that also prints a plain progress line at most every ``every_s`` seconds when stderr is not a
    terminal (a log file, nohup, CI), where a rich bar shows nothing until it ends."""

    def __init__(self, label: str, total: int | None, tick: Any = None, every_s: float = 30.0,
                 out: Any = None, clock: Any = None) -> None:
        import sys
        import time

        self.label, self.total, self.tick, self.every_s = label, total, tick, every_s
        self.out = out if out is not None else sys.stderr
        self.clock = clock or time.monotonic
        self.t0 = self.last = self.clock()
        self.done = 0

    def __call__(self, n: int) -> None:
        if self.tick is not None:
            self.tick(n)
        self.done += n
        now = self.clock()
        if now - self.last < self.every_s:
            return
        self.last = now
        rate = self.done / max(now - self.t0, 1e-9)
        of = f"/{self.total}" if self.total else ""
        left = (f", ~{(self.total - self.done) / rate / 60:.0f} min left" if self.total and rate > 0 else "")
        print(f"{self.label}: {self.done}{of} ({rate:.2f}/s, {(now - self.t0) / 60:.1f} min{left})",
              file=self.out, flush=True)


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
