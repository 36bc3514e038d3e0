"""Reward-model ensemble aggregates (Coste et al. 2023): mean, worst-case (WCO), uncertainty-weighted (UWO)."""

from __future__ import annotations

import torch

from umm_ray.reward_source import AGGREGATES

__all__ = ["AGGREGATES", "aggregate"]


def aggregate(scores: torch.Tensor, how: str = "mean", lam: float = 0.0) -> torch.Tensor:
    """Combine member scores R_1..R_k per sample.

    mean: (1/k) sum_i R_i;  wco: min_i R_i;  uwo: mean - lam * var, var the *population* variance
    (1/k) sum_i (R_i - mean)^2.

    Args:
        scores: [k, B] member scores (k >= 1). how: "mean" | "wco" | "uwo". lam: UWO variance penalty (>= 0).

    Returns:
        [B] aggregated scores, dtype of `scores`.
    """
    if scores.dim() != 2 or scores.shape[0] < 1:
        raise ValueError(f"aggregate: scores must be [k, B] with k >= 1, got shape {tuple(scores.shape)}")
    if how == "mean":
        return scores.mean(0)
    if how == "wco":
        return scores.min(0).values
    if how == "uwo":
        if lam < 0:
            raise ValueError(f"aggregate: UWO lambda must be >= 0, got {lam}")
        return scores.mean(0) - lam * scores.var(0, unbiased=False)
    raise ValueError(f"aggregate: how must be one of {AGGREGATES}, got {how!r}")
