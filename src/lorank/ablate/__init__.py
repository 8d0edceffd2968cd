"""Inference-time ablations of trained LoRA adapters (masks, cached sweeps).

``lorank.ablate`` is both this package and the sweep function (of a :class:`lorank.subject.Subject`):
``lorank.ablate(lorank.resolve_subject(adapter, "dl19"), sweeps=[...])``.
"""
import sys
import types
from typing import Any

from lorank.ablate.masks import Ablation, Mask, ablated
from lorank.ablate.run import ablate as _ablate

__all__ = ["Ablation", "Mask", "ablated", "ablate"]


def ablate(*args: Any, **kwargs: Any) -> Any:
    return _ablate(*args, **kwargs)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return ablate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
