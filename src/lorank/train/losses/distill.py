"""Distillation from teacher scores: KL(teacher softmax || student softmax) over each group."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def distill_kl_loss(scores: torch.Tensor, teacher: torch.Tensor | None, temperature: float = 1.0) -> torch.Tensor:
    if teacher is None:
        raise ValueError("the distillation loss needs teacher scores (hard-negative JSONL with pos_scores/neg_scores)")
    s = F.log_softmax(scores.float() / temperature, dim=-1)
    t = F.softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="batchmean") * temperature**2
