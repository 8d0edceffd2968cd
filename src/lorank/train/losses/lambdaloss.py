"""LambdaLoss (Wang et al., 2018), the NDCG-Loss2++ weighting, as in allRank."""
from __future__ import annotations

import torch

from lorank.train.losses.labels import group_labels


def lambda_loss(scores: torch.Tensor, teacher: torch.Tensor | None = None, temperature: float = 1.0,
                mu: float = 10.0, eps: float = 1e-10) -> torch.Tensor:
    s = scores.float() / temperature
    y = group_labels(scores, teacher)
    n = s.shape[-1]
    order = s.argsort(dim=-1, descending=True)
    s_sorted = s.gather(-1, order)
    y_sorted = y.gather(-1, order)
    ideal, _ = y.sort(dim=-1, descending=True)
    ranks = torch.arange(1, n + 1, device=s.device, dtype=torch.float32)
    gains = 2.0 ** y_sorted - 1.0
    max_dcg = ((2.0 ** ideal - 1.0) / torch.log2(1.0 + ranks)).sum(-1, keepdim=True).clamp_min(eps)
    g = gains / max_dcg
    disc = 1.0 / torch.log2(1.0 + ranks)
    i, j = ranks.unsqueeze(-1), ranks.unsqueeze(-2)
    rho = (1.0 / torch.log2(1.0 + (i - j).abs())).nan_to_num(0.0, posinf=0.0)
    rho_next = (1.0 / torch.log2(2.0 + (i - j).abs()))
    delta = (rho - rho_next).abs()
    delta.diagonal().zero_()
    weights = delta * (g.unsqueeze(-1) - g.unsqueeze(-2)).abs() + mu * (disc.unsqueeze(-1) - disc.unsqueeze(-2)).abs()
    pair = (y_sorted.unsqueeze(-1) > y_sorted.unsqueeze(-2)).float()
    sdiff = (s_sorted.unsqueeze(-1) - s_sorted.unsqueeze(-2)).clamp(-50, 50)
    probs = torch.sigmoid(sdiff).clamp_min(eps) ** weights
    return -(torch.log2(probs) * pair).sum() / scores.shape[0]
