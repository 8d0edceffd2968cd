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


def main() -> None:  # pragma: no cover - entry point
    try:
        app()
    except LorankError as e:
        fail(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
