"""Reuse hidden states across ablations: a mask that only touches layers >= l leaves the outputs of
layers < l exactly as in the full model, so those layers are replayed from a cache, not recomputed.

A leave-one-layer-out sweep over L layers then costs 1 + sum_l (L - l) / L ~ L/2 full forwards
instead of L (the same trick serves activation patching).
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from lorank.models.arch import decoder_layers


class LayerOutputCache:
    def __init__(self, model: Any):
        self.layers = decoder_layers(model)
        self.outputs: list[torch.Tensor | None] = [None] * len(self.layers)
        self.layer_calls = 0  # decoder-layer forwards actually computed (for cost accounting)

    @contextlib.contextmanager
    def record(self) -> Iterator["LayerOutputCache"]:
        """Run the model once inside this block: every layer's output is kept."""
        hooks = []
        for i, layer in enumerate(self.layers):
            def hook(mod: Any, inp: Any, out: Any, i: int = i) -> None:
                self.outputs[i] = out
                self.layer_calls += 1
            hooks.append(layer.register_forward_hook(hook))
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()

    @contextlib.contextmanager
    def replay_below(self, start: int) -> Iterator[None]:
        """Layers ``< start`` return their recorded outputs instead of computing."""
        if start > 0 and any(o is None for o in self.outputs[:start]):
            raise RuntimeError("replay_below() needs a record() pass on the same inputs first")
        patched = []
        for i in range(start):
            layer = self.layers[i]
            out = self.outputs[i]
            layer.forward = (lambda *a, _o=out, **k: _o)  # instance attribute shadows the class method
            patched.append(layer)
        counters = []
        for i in range(start, len(self.layers)):
            counters.append(self.layers[i].register_forward_hook(lambda *a: self._count()))
        try:
            yield
        finally:
            for layer in patched:
                del layer.forward
            for h in counters:
                h.remove()

    def _count(self) -> None:
        self.layer_calls += 1

    def clear(self) -> None:
        self.outputs = [None] * len(self.layers)
