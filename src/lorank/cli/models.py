"""``lorank models``: the models lorank ships a name for (SmolLM2-135M, the default, and Gemma 3 270M), where each
was found and whether it is converted yet (:func:`lorank.models.source.describe_models`)."""
from __future__ import annotations

from lorank.cli.common import console, guard


def models_cmd() -> None:
    """List the named models (a name works as ``model:`` in a config): installed or not, and where."""
    from rich.table import Table

    from lorank.models.source import describe_models

    with guard():
        rows = describe_models()
    for i, row in enumerate(rows):
        t = Table(title=f"lorank model {row['name']}" + (" (the default)" if i == 0 else ""), show_header=False)
        t.add_column("field")
        t.add_column("value", overflow="fold")
        for k, v in row.items():
            t.add_row(k, v)
        console.print(t)
