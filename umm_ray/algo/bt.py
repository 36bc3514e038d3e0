"""Bradley–Terry preference loss and accuracy for reward-model training (pure tensor math)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Bradley–Terry loss L = mean over pairs of -log sigmoid(r_chosen - r_rejected).

    `logsigmoid` is evaluated stably (no overflow for large margins of either sign).

    Args:
        r_chosen: rewards of the preferred responses, [B]. r_rejected: rewards of the rejected ones, [B].

    Returns:
        Scalar loss.
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"bt_loss: r_chosen {tuple(r_chosen.shape)} and r_rejected {tuple(r_rejected.shape)} differ")
    return -F.logsigmoid(r_chosen.float() - r_rejected.float()).mean()


def pref_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs with r_chosen > r_rejected; ties count as half (so a constant RM scores 0.5).

    Args:
        r_chosen, r_rejected: [B] rewards.

    Returns:
        Accuracy in [0, 1] (nan for an empty batch).
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"pref_accuracy: shapes {tuple(r_chosen.shape)} and {tuple(r_rejected.shape)} differ")
    if r_chosen.numel() == 0:
        return float("nan")
    diff = r_chosen.float() - r_rejected.float()
    # a float64 mean: k / n exactly enough that accuracy x n gives back the count (float32 is off by 1e-5 at n ~1000)
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()
