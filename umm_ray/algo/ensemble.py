"""Reward-model ensemble aggregates (Coste et al. 2023): mean, worst-case (WCO), uncertainty-weighted (UWO), and the
common scale the members are put on before they are combined.

Why a common scale: a Bradley-Terry loss sees only score differences, so each member's offset is arbitrary (and its
spread depends on how far training went). Combined raw, WCO's minimum picks whichever member happens to sit lowest on
every sample: with a seed ensemble whose member 0 shares the dense RM's seed, `ensemble-wco` then *is* the dense RM.
Each member is therefore standardised with its own mean and std over a fixed set of calibration responses (the
training pairs' chosen and rejected answers, i.e. the SFT policy's distribution), measured once when the ensemble is
built and kept in its manifest.
"""

from __future__ import annotations

import torch

from umm_ray.reward_source import AGGREGATES

__all__ = ["AGGREGATES", "aggregate", "member_scale", "standardise"]


def aggregate(scores: torch.Tensor, how: str = "mean", lam: float = 0.0) -> torch.Tensor:
    """Combine member scores R_1..R_k per sample.

    mean: (1/k) sum_i R_i;  wco: min_i R_i;  uwo: mean - lam * var, var the *population* variance
    (1/k) sum_i (R_i - mean)^2.

    Args:
        scores: [k, B] member scores (k >= 1), on a common scale (`member_scale`;
            `models.reward_model.StandardisedScorer`). how: "mean" | "wco" | "uwo". lam: UWO variance penalty (>= 0).

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


def member_scale(scores: torch.Tensor, min_std: float = 1e-6) -> list[tuple[float, float]]:
    """Each member's (mean, population std) over the same N calibration responses.

    Args:
        scores: [k, N] member scores, N >= 2.
        min_std: a member whose std is below this scores (nearly) every response the same and has no scale: error.

    Returns:
        k (mean, std) pairs, as floats (they go into the manifest's JSON).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"member_scale: scores must be [k, N] with N >= 2 calibration responses, "
                         f"got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("member_scale: non-finite member scores on the calibration responses")
    mean, std = scores.double().mean(1), scores.double().std(1, unbiased=False)
    flat = [i for i, s in enumerate(std.tolist()) if s < min_std]
    if flat:
        raise ValueError(f"member_scale: member(s) {flat} give every one of the {scores.shape[1]} calibration "
                         f"responses the same score (std < {min_std}); they cannot be put on a common scale")
    return [(float(m), float(s)) for m, s in zip(mean.tolist(), std.tolist())]


def standardise(scores: torch.Tensor, scale: list[tuple[float, float]]) -> torch.Tensor:
    """Member scores on the ensemble's common scale: (R_i - mean_i) / std_i, with each member's (mean, std) from
    `member_scale` (what `models.reward_model.StandardisedScorer` does to one member's scores).

    Args:
        scores: [k, B] raw member scores. scale: k (mean, std) pairs, std > 0.

    Returns:
        [k, B] float64 standardised scores.
    """
    if scores.dim() != 2 or scores.shape[0] != len(scale):
        raise ValueError(f"standardise: scores must be [k, B] with k = {len(scale)} members (one per scale entry), "
                         f"got shape {tuple(scores.shape)}")
    ms = torch.tensor(scale, dtype=torch.float64)
    if not (ms[:, 1] > 0).all():
        raise ValueError(f"standardise: every member's std must be > 0, got {ms[:, 1].tolist()}")
    return (scores.double() - ms[:, :1]) / ms[:, 1:]
