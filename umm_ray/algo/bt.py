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


def pair_outcomes(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Per pair: 1 when the labelled-chosen response scores higher, 0 when lower, 0.5 on a tie (a coin flip in
    expectation, so a constant RM scores 0.5). Kept per pair so two RMs scored on the same pairs can be compared
    pair by pair (a paired interval), not only through two separate accuracies.

    Args:
        r_chosen, r_rejected: [B] rewards.

    Returns:
        [B] float64 outcomes.
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"pair_outcomes: shapes {tuple(r_chosen.shape)} and {tuple(r_rejected.shape)} differ")
    diff = r_chosen.double() - r_rejected.double()  # exact for bf16/fp32/fp64 inputs: no tie made by rounding
    return (diff > 0).double() + 0.5 * (diff == 0).double()


def pref_accuracy(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> float:
    """Fraction of pairs with r_chosen > r_rejected; ties count as half (the mean of `pair_outcomes`).

    Args:
        r_chosen, r_rejected: [B] rewards.

    Returns:
        Accuracy in [0, 1] (nan for an empty batch).
    """
    won = pair_outcomes(r_chosen, r_rejected)
    # a float64 mean: k / n exactly enough that accuracy x n gives back the count (float32 is off by 1e-5 at n ~1000)
    return won.mean().item() if won.numel() else float("nan")
