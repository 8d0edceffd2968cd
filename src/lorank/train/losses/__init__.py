"""Ranking losses over groups of scores (n_groups, G), positive in column 0. One loss per file."""
from __future__ import annotations

from typing import Callable

from lorank.errors import ConfigError
from lorank.train.losses.contrastive import contrastive_loss
from lorank.train.losses.contrastive_distill import contrastive_distill_loss
from lorank.train.losses.distill import distill_kl_loss
from lorank.train.losses.lambdaloss import lambda_loss
from lorank.train.losses.listnet import listnet_loss
from lorank.train.losses.ranknet import ranknet_loss

LOSSES: dict[str, Callable] = {
    "contrastive": contrastive_loss,
    "distill_kl": distill_kl_loss,
    "contrastive_distill": contrastive_distill_loss,
    "ranknet": ranknet_loss,
    "listnet": listnet_loss,
    "lambdaloss": lambda_loss,
}

NEEDS_TEACHER = {"distill_kl", "contrastive_distill"}


def get_loss(name: str) -> Callable:
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r} (known: {', '.join(LOSSES)})")
    return LOSSES[name]


__all__ = ["LOSSES", "NEEDS_TEACHER", "get_loss"]
