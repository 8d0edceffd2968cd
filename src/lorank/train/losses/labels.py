"""Graded labels of a group: teacher scores when given, else 1 for the positive (column 0), 0 else."""
from __future__ import annotations

import torch


def group_labels(scores: torch.Tensor, teacher: torch.Tensor | None) -> torch.Tensor:
    if teacher is not None:
        return teacher.float()
    y = torch.zeros_like(scores, dtype=torch.float32)
    y[:, 0] = 1.0
    return y
