"""Training: groups, losses, the HF Trainer subclass, checkpoints.

``lorank.train`` is both this package and the training function: calling the module
(``lorank.train("config.yaml")``) runs :func:`lorank.train.run.train`.
"""
from __future__ import annotations

import sys
import types
from typing import Any

from lorank.train.run import train as _train


def train(*args: Any, **kwargs: Any) -> Any:
    return _train(*args, **kwargs)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
