"""``lorank models``: the models lorank ships a name for (SmolLM2-135M, the default, and Gemma 3 270M), where each
was found and whether it is converted yet (:func:`lorank.models.source.describe_models`); each installed model's
converted copy placed in the Hugging Face cache under its hub id (:func:`lorank.models.source.place_all_in_hf_cache`),
so that plain transformers + PEFT load an exported adapter's base offline."""
from __future__ import annotations

import typer

from lorank.cli.common import console, guard


def models_cmd(
    hf_cache: bool = typer.Option(True, "--hf-cache/--no-hf-cache", help="Place each installed model's converted copy "
                                  "in the Hugging Face cache under its hub id (HuggingFaceTB/SmolLM2-135M-Instruct, "
                                  "google/gemma-3-270m), so that from_pretrained(hub_id) loads it offline "
                                  "(HF_HUB_OFFLINE=1). Converts a model first if needed (once: SmolLM2 ~20 s, "
                                  "Gemma ~1 min)."),
) -> None:
    """List the named models (a name works as ``model:`` in a config): installed or not, and where; place each
    installed model's converted copy in the Hugging Face cache under its hub id."""
    from rich.table import Table

    from lorank.models.source import describe_models, place_all_in_hf_cache

    with guard():
        placed = place_all_in_hf_cache() if hf_cache else {}
        rows = describe_models()
    for row in rows:
        got = placed.get(row["name"])
        if isinstance(got, tuple):
            hub_id, snap = got
            main = (snap.parent.parent / "refs" / "main").read_text().strip() == snap.name
            row["hf_cache"] = f"{snap} (from_pretrained({hub_id!r}" + ("" if main else ", revision='lorank-gguf'") \
                + ") loads it offline" + ("" if main else "; a download of the Hub model is the cache's main") + ")"
    for i, row in enumerate(rows):
        t = Table(title=f"lorank model {row['name']}" + (" (the default)" if i == 0 else ""), show_header=False)
        t.add_column("field")
        t.add_column("value", overflow="fold")
        for k, v in row.items():
            t.add_row(k, v)
        console.print(t)
