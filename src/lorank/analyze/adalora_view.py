"""The AdaLoRA view: where the budget went. AdaLoRA (PEFT's ``AdaLoraModel``) starts every wrapped projection at
``init_r`` and prunes singular values by importance down to an average of ``target_r``; the rank each (layer,
projection) kept is read back from the saved adapter (:func:`lorank.lora.adalora.allocation_from_adapter`) into a
JSON table and a layers x projections heatmap."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lorank.adapters import read_adapter_state
from lorank.analyze.common import resolve_adapter_dir
from lorank.atomic import atomic_write_json
from lorank.errors import ConfigError
from lorank.layout.adapter import peft_config_file
from lorank.lora.adalora import allocation_from_adapter
from lorank.plotting import pyplot, save_figure

JSON_NAME, PNG_NAME = "adalora_allocation.json", "adalora_allocation.png"


def adalora_allocation(adapter: str | Path, out_dir: str | Path | None = None,
                       allow_pickle: bool = False) -> dict[str, Any]:
    """The rank each (layer, projection) of an AdaLoRA adapter kept: ``{"layers", "projections", "ranks"`` (layers
    x projections, None where not wrapped), ``"init_r"``, ``"target_r"``, ``"kept"`` / ``"budget"`` (totals)``}``,
    written as ``adalora_allocation.json`` + ``.png`` into ``out_dir`` (default: ``CHECKPOINT/analysis``).
    ``adapter``: a checkpoint folder, or a run folder (its last complete checkpoint)."""
    adapter = resolve_adapter_dir(adapter)  # a run folder: its last complete checkpoint
    cfg_file = peft_config_file(adapter)
    if not cfg_file.is_file():
        raise ConfigError(f"{adapter}: no {cfg_file.name}: not an adapter folder")
    config = json.loads(cfg_file.read_text(encoding="utf-8"))
    alloc, family = allocation_from_adapter(config, read_adapter_state(adapter, allow_pickle), adapter)
    layers = sorted({layer for layer, _ in alloc})
    projs = list(dict.fromkeys(p for _, p in sorted(alloc, key=lambda k: k[1])))
    ranks = [[alloc[(layer, p)]["rank"] if (layer, p) in alloc else None for p in projs] for layer in layers]
    kept = sum(v["rank"] for v in alloc.values())
    result = {"kind": "adalora_allocation", "adapter": str(adapter), "family": family, "layers": layers,
              "projections": projs, "ranks": ranks, "init_r": config.get("init_r"),
              "target_r": config.get("target_r"), "modules": len(alloc), "kept": kept,
              "budget": (config.get("target_r") or 0) * len(alloc),
              "allocated": bool(config.get("rank_pattern")),
              "by_projection": {p: sum(alloc[k]["rank"] for k in alloc if k[1] == p) for p in projs},
              "by_layer": {str(layer): sum(alloc[k]["rank"] for k in alloc if k[0] == layer) for layer in layers}}
    out = Path(out_dir) if out_dir is not None else adapter / "analysis"
    result["plot"] = str(_heatmap(result, out / PNG_NAME))
    atomic_write_json(out / JSON_NAME, result)
    return result


def _heatmap(res: dict[str, Any], path: Path) -> Path:
    plt = pyplot()
    grid = np.array([[np.nan if v is None else v for v in row] for row in res["ranks"]], dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * grid.shape[1] + 2), max(3.0, 0.22 * grid.shape[0] + 1.5)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", origin="lower", vmin=0, vmax=res["init_r"] or None)
    fig.colorbar(im, ax=ax, label="rank kept")
    ax.set_xticks(range(len(res["projections"])), res["projections"], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(res["layers"])), [str(x) for x in res["layers"]], fontsize=6)
    ax.set_xlabel("projection")
    ax.set_ylabel("layer")
    ax.set_title(f"AdaLoRA rank allocation: {res['kept']} of {res['modules']} x init_r {res['init_r']} kept "
                 f"(target_r {res['target_r']})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)
