"""Contrastive loss on the labels plus KL distillation from teacher scores, summed with weight ``lam``."""
from __future__ import annotations

import torch

from lorank.train.losses.contrastive import contrastive_loss
from lorank.train.losses.distill import distill_kl_loss


def contrastive_distill_loss(scores: torch.Tensor, teacher: torch.Tensor | None, temperature: float = 1.0,
                             lam: float = 1.0) -> torch.Tensor:
    return contrastive_loss(scores, None, temperature) + lam * distill_kl_loss(scores, teacher, temperature)
