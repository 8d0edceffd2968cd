"""RankNet: pairwise logistic loss on every (i, j) with label_i > label_j inside a group."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lorank.train.losses.labels import group_labels


def ranknet_loss(scores: torch.Tensor, teacher: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    labels = group_labels(scores, teacher)
    diff = (scores.float().unsqueeze(-1) - scores.float().unsqueeze(-2)) / temperature  # s_i - s_j
    better = (labels.unsqueeze(-1) > labels.unsqueeze(-2)).float()
    n = better.sum().clamp_min(1.0)
    return (F.softplus(-diff) * better).sum() / n
