"""Named sweeps: lists of ablation configurations in the study's terms."""
from __future__ import annotations

from typing import Any

from lorank.ablate.engine import Config
from lorank.ablate.masks import Mask
from lorank.ablate.windows import PAPER_WINDOW, Window, layer_windows, window_config
from lorank.errors import ConfigError
from lorank.lora.sites import adapter_ranks, lora_sites, refuse_adalora

SWEEPS = ("components", "projections", "layers-leave-one-out", "layers-keep-one", "layer-windows",
          "rank-truncation", "rank-prefix", "scale")

BASE = Config("none", [Mask("off")], "reference")  # every LoRA delta off, trained head kept


def build_sweep(name: str, model: Any, window: int = 11, stride: int | None = None,
                scales: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5),
                target: Window = PAPER_WINDOW) -> list[Config]:
    """The configurations of sweep `name` on `model`'s LoRA sites. ``layer-windows``: windows of `window` layers
    every `stride` (:func:`lorank.ablate.windows.layer_windows`), plus the `target` window finding 4 tests (the
    study's ``verdicts.target_window``) when it is not one of them."""
    sites = lora_sites(model)
    layers = sorted({s.layer for s in sites})
    projs = [p for p in dict.fromkeys(s.projection for s in sites)]
    rank = max(r for s in sites for r in adapter_ranks(s.module))
    if name == "components":
        return [Config("mha-only", [Mask("keep", components=["mha"])], name),
                Config("mlp-only", [Mask("keep", components=["mlp"])], name)]
    if name == "projections":
        return ([Config(f"without {p}", [Mask("off", projections=[p])], "removed") for p in projs]
                + [Config(f"only {p}", [Mask("keep", projections=[p])], "kept alone") for p in projs])
    if name == "layers-leave-one-out":
        return [Config(f"without L{layer}", [Mask("off", layers=[layer])], name) for layer in layers]
    if name == "layers-keep-one":
        return [Config(f"only L{layer}", [Mask("keep", layers=[layer])], name) for layer in layers]
    if name == "layer-windows":
        return [Config(window_config(w), [Mask("keep", layers=f"{w[0]}-{w[1]}")], name)
                for w in layer_windows(layers, window, stride, target)]
    if name in ("rank-truncation", "rank-prefix"):  # factor surgery: refused up front on AdaLoRA's three factors
        for site in sites:
            refuse_adalora(site.module, f"the {name} sweep")
    if name == "rank-truncation":
        return [Config(f"rank {k}", [Mask("truncate", rank=k)], name) for k in _powers_below(rank)]
    if name == "rank-prefix":  # DyLoRA's ranks: the first k components at alpha/k (the full rank is "full")
        return [Config(f"prefix {k}", [Mask("prefix", rank=k)], name) for k in _powers_below(rank)]
    if name == "scale":
        return [Config(f"x{f:g}", [Mask("scale", factor=f)], name) for f in scales if f != 1.0]
    raise ConfigError(f"unknown sweep {name!r} (known: {', '.join(SWEEPS)})")


def _powers_below(rank: int) -> list[int]:
    """1, 2, 4, ... below ``rank``: the ranks a truncation sweep scores (``rank`` itself is the full model)."""
    ks, k = [], 1
    while k < rank:
        ks.append(k)
        k *= 2
    return ks
