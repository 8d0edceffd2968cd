"""``lorank models``: where the embedded default model was found (:func:`lorank.models.source.describe_default`)."""
from __future__ import annotations

from lorank.cli.common import console, guard


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
