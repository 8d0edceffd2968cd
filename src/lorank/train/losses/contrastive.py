"""Localized contrastive estimation (LCE): softmax cross-entropy over each group, positive at index 0."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def contrastive_loss(scores: torch.Tensor, teacher: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
    """``scores``: (n_groups, G) with the positive in column 0."""
    target = torch.zeros(scores.shape[0], dtype=torch.long, device=scores.device)
    return F.cross_entropy(scores.float() / temperature, target)
