"""``lorank models``: where the embedded default model was found (:func:`lorank.models.source.describe_default`),
and its converted copy placed in the Hugging Face cache under its hub id
(:func:`lorank.models.source.place_in_hf_cache`), so that plain transformers + PEFT load an exported adapter's base
offline."""
from __future__ import annotations

import typer

from lorank.cli.common import console, guard


def models_cmd(
    hf_cache: bool = typer.Option(True, "--hf-cache/--no-hf-cache", help="Place the converted model in the Hugging "
                                  "Face cache under its hub id (HuggingFaceTB/SmolLM2-135M-Instruct), so that "
                                  "from_pretrained(hub_id) loads it offline (HF_HUB_OFFLINE=1). Converts it first "
                                  "if needed (once, ~20 s)."),
) -> None:
    """Show where the embedded default model (SmolLM2-135M-Instruct GGUF) was found; place its converted copy in the
    Hugging Face cache under its hub id."""
    from rich.table import Table

    from lorank.models.source import describe_default, place_in_hf_cache

    with guard():
        placed = place_in_hf_cache() if hf_cache else None
        info = describe_default()
    if placed:
        hub_id, snap = placed
        main = (snap.parent.parent / "refs" / "main").read_text().strip() == snap.name
        info["hf_cache"] = f"{snap} (from_pretrained({hub_id!r}" + ("" if main else ", revision='lorank-gguf'") \
            + ") loads it offline" + ("" if main else "; a download of the Hub model is the cache's main") + ")"
    t = Table(title="lorank default model", show_header=False)
    t.add_column("field")
    t.add_column("value", overflow="fold")
    for k, v in info.items():
        t.add_row(k, v)
    console.print(t)
