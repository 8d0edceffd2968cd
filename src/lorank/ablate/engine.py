"""Score many ablation configurations of one adapter over the same pairs, reusing cached layers."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lorank.ablate.cache import LayerOutputCache
from lorank.ablate.masks import Ablation, Mask
from lorank.ablate.resume import fingerprint, SweepState
from lorank.batching import length_chunks, pad_chunk
from lorank.lora.merge import LoraMerger, merge_blocker, merge_by_default
from lorank.lora.sites import lora_sites
from lorank.inference.forward_context import autocast_ctx


@dataclass
class Config:
    name: str
    masks: list[Mask] = field(default_factory=list)
    group: str = ""


def first_changed_layer(model: Any, masks: Sequence[Mask]) -> int:
    """The lowest layer whose LoRA state a set of masks changes (outputs below it are untouched)."""
    if not masks:
        return 10**9
    all_sites = lora_sites(model)
    lowest = 10**9
    for m in masks:
        chosen = {id(s.module) for s in m.selects(model)}
        if m.op == "keep":
            changed = [s.layer for s in all_sites if id(s.module) not in chosen]
        elif m.op == "scale" and m.factor == 1.0:
            changed = []
        else:
            changed = [s.layer for s in all_sites if id(s.module) in chosen]
        if changed:
            lowest = min(lowest, min(changed))
    return lowest


@dataclass
class SweepScores:
    scores: dict[str, np.ndarray]
    wall_s: float
    layer_calls: int
    naive_layer_calls: int
    merged: bool = False  # scored with LoRA merged into the weights

    @property
    def cost_fraction(self) -> float:
        return self.layer_calls / max(self.naive_layer_calls, 1)


def score_configs(model: Any, seqs: Sequence[list[int]], pad_id: int, configs: Sequence[Config],
                  batch_tokens: int = 8192, bf16: bool = False, use_cache: bool = True,
                  progress: Callable[[int], None] | None = None, state: str | Path | None = None,
                  save_every_s: float = 60.0, merge_lora: bool | None = None) -> SweepScores:
    """Scores of every configuration (the unablated model is always included as ``full``).

    ``merge_lora``: score with each configuration's LoRA deltas merged into the base weights
    (:class:`lorank.lora.merge.LoraMerger`: one matmul per projection, ~1.5x on a CPU in bf16), the full
    model too, so every configuration is compared with a full model computed the same way; the pristine weights
    are back on return. None: on CPUs (:func:`~lorank.lora.merge.merge_by_default`), except DoRA adapters
    and a resumed sweep, which goes on as it began.

    ``state``: a file where the scores of the finished chunks are kept while the sweep runs
    (:class:`lorank.ablate.resume.SweepState`); a call that finds a state made with the same settings and weights
    goes on from it (an interrupted sweep loses at most ``save_every_s`` seconds of work)."""
    model.eval()
    dev = next(model.parameters()).device
    cache = LayerOutputCache(model)
    n_layers = len(cache.layers)
    starts = {c.name: min(first_changed_layer(model, c.masks), n_layers) for c in configs}
    out = {c.name: np.empty(len(seqs)) for c in configs}
    out.setdefault("full", np.empty(len(seqs)))
    chunks = length_chunks([len(s) for s in seqs], batch_tokens)
    sites = lora_sites(model)
    mods = [st.module for st in sites]
    merge = _merge_choice(dev, mods, merge_lora)
    t0 = time.perf_counter()
    naive = 0
    done, before = 0, {"layer_calls": 0.0, "naive": 0.0, "wall_s": 0.0}
    saver = None
    if state is not None:
        saver, merge = _sweep_state(model, seqs, sorted(out), batch_tokens, bf16, use_cache, mods, merge, merge_lora,
                                    state, save_every_s)
        loaded = saver.load()
        if loaded is not None:
            done, out, before = loaded
            if progress and done:  # what the saved chunks did: ProgressLines keeps it out of its rate
                (getattr(progress, "resumed", None) or progress)(sum(len(c) for c in chunks[:done]))
    merger = LoraMerger(mods) if merge else None
    from_layer = {i: [st.module for st in sites if st.layer >= i] for i in range(n_layers + 1)}

    def counters() -> dict[str, float]:
        return {"layer_calls": before["layer_calls"] + cache.layer_calls, "naive": before["naive"] + naive,
                "wall_s": before["wall_s"] + time.perf_counter() - t0}

    try:
        with torch.inference_mode(), autocast_ctx(model, bf16):
            for i, idx in enumerate(chunks):
                if i < done:
                    continue
                ids, mask = pad_chunk([seqs[i] for i in idx], pad_id)
                ids, mask = ids.to(dev), mask.to(dev)
                naive += _score_chunk(model, ids, mask, idx, configs, starts, cache, merger, from_layer, use_cache,
                                      out)
                cache.clear()
                if progress:
                    progress(len(idx))
                if saver is not None:
                    saver.save(i + 1, out, counters())
    finally:
        if merger is not None:
            merger.restore()
    c = counters()
    if saver is not None:
        saver.save(len(chunks), out, c, force=True)
    return SweepScores(out, c["wall_s"], int(c["layer_calls"]), int(c["naive"]), merged=merge)


def _merge_choice(dev: Any, mods: list[Any], merge_lora: bool | None) -> bool:
    """Whether to score with LoRA merged into the weights: ``merge_lora`` when given, else the device's default;
    never for adapters that cannot be merged (DoRA), which is an error only when merging was asked for."""
    merge = merge_by_default(dev) if merge_lora is None else merge_lora
    if merge and merge_blocker(mods):
        if merge_lora:
            raise ValueError(merge_blocker(mods))
        merge = False
    return merge


def _sweep_state(model: Any, seqs: Sequence[list[int]], names: list[str], batch_tokens: int, bf16: bool,
                 use_cache: bool, mods: list[Any], merge: bool, merge_lora: bool | None, state: str | Path,
                 save_every_s: float) -> tuple[SweepState, bool]:
    """The sweep's state file under the fingerprint of its settings and weights, and whether to merge: with
    ``merge_lora`` unset, a stored state begun the other way (merged or not) decides, so the sweep goes on as it
    began."""

    def key(merged: bool) -> str:
        return fingerprint(model, seqs, names, batch_tokens, bf16, use_cache, merged=merged)

    if merge_lora is None and not merge_blocker(mods):
        stored = SweepState(state, "", names, len(seqs)).stored_key()
        if stored is not None and stored == key(not merge):
            merge = not merge  # a sweep begun the other way goes on that way: one sweep, one numerics
    return SweepState(state, key(merge), names, len(seqs), every_s=save_every_s), merge


def _score_chunk(model: Any, ids: torch.Tensor, mask: torch.Tensor, idx: Any, configs: Sequence[Config],
                 starts: dict[str, int], cache: LayerOutputCache, merger: LoraMerger | None,
                 from_layer: dict[int, list[Any]], use_cache: bool, out: dict[str, np.ndarray]) -> int:
    """Score one chunk under every configuration into ``out[name][idx]``: the full model first (recording every
    layer's output for the cache), then each ablation; returns the layer calls a naive sweep would make."""
    n_layers = len(cache.layers)
    if merger is not None:
        merger.merge()  # the full model, every delta in
    with cache.record():
        full = model(input_ids=ids, attention_mask=mask).logits.float().reshape(-1).cpu().numpy()
    out["full"][idx] = full
    naive = n_layers
    for c in configs:
        if c.name == "full":
            continue
        naive += n_layers
        start = starts[c.name]
        if start >= n_layers and all(m.op not in ("truncate", "prefix") for m in c.masks):
            out[c.name][idx] = full  # the masks change nothing
            continue
        out[c.name][idx] = _score_ablated(model, ids, mask, c.masks, start, cache, merger, from_layer, use_cache)
    return naive


def _score_ablated(model: Any, ids: torch.Tensor, mask: torch.Tensor, masks: list[Mask], start: int,
                   cache: LayerOutputCache, merger: LoraMerger | None, from_layer: dict[int, list[Any]],
                   use_cache: bool) -> np.ndarray:
    """One configuration's scores of a chunk: its masks applied (and, merged, its deltas merged into the layers
    the forward computes), the layers below ``start`` replayed from the cache when they may be."""
    n_layers = len(cache.layers)
    ab = Ablation(model, masks).apply()
    try:
        cached = use_cache and 0 < start < n_layers
        if merger is not None:  # the layers this forward computes, as this configuration has them
            merger.merge(from_layer[start if cached else 0])
        ctx = cache.replay_below(start) if cached else _counting(cache)
        with ctx:
            return model(input_ids=ids, attention_mask=mask).logits.float().reshape(-1).cpu().numpy()
    finally:
        ab.remove()


class _counting:
    """Count layer calls of a plain (uncached) forward."""

    def __init__(self, cache: LayerOutputCache):
        self.cache = cache
        self.hooks: list[Any] = []

    def __enter__(self) -> None:
        self.hooks = [layer.register_forward_hook(lambda *a: self.cache._count()) for layer in self.cache.layers]

    def __exit__(self, *exc: Any) -> None:
        for h in self.hooks:
            h.remove()
