"""ListNet (top-1 approximation): cross-entropy between softmax(labels) and softmax(scores)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lorank.train.losses.labels import group_labels


def listnet_loss(scores: torch.Tensor, teacher: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    labels = group_labels(scores, teacher)
    target = F.softmax(labels / temperature, dim=-1)
    return -(target * F.log_softmax(scores.float() / temperature, dim=-1)).sum(-1).mean()
