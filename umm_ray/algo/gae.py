"""Generalised advantage estimation (Schulman et al. 2016) and masked whitening. Pure torch.

Shapes: B = sequences in the batch, T = response positions. `mask[b, t] = 1` marks a real response token; each row's
real tokens are contiguous (right or left padding). The episode ends after the last real token, so the value beyond
it is 0 (terminal), and padded steps get zero advantage and zero return.
"""

from __future__ import annotations

import torch


def gae_advantages(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
                   lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked GAE over response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t, A_t = delta_t + gamma * lam * A_{t+1}, with V and A of padded positions
    (and beyond the end) equal to 0, so the last real token bootstraps from a terminal value of 0.

    Args:
        rewards: Tensor[B, T] per-token rewards.
        values: Tensor[B, T] critic values V(s_t).
        mask: Tensor[B, T] 1 for real response tokens, 0 for padding.
        gamma: discount.
        lam: GAE lambda.

    Returns:
        (advantages, returns): both Tensor[B, T], zero at padded steps; returns = advantages + values.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(f"gae_advantages: rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must all be [B, T]")
    m = mask.to(values.dtype)
    # Computed without grad: advantages are targets, never differentiated through.
    with torch.no_grad():
        r, v = rewards.detach() * m, values.detach() * m
        adv = torch.zeros_like(v)
        last = torch.zeros_like(v[:, 0])
        for t in reversed(range(v.shape[1])):
            next_v = v[:, t + 1] if t + 1 < v.shape[1] else torch.zeros_like(last)
            delta = r[:, t] + gamma * next_v - v[:, t]
            last = (delta + gamma * lam * last) * m[:, t]
            adv[:, t] = last
        returns = (adv + v) * m
    return adv, returns


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise `x` to zero mean, unit variance over the real (masked) entries; padded entries become 0.

    The variance is the unbiased (Bessel-corrected) masked variance, as in TRL / verl.

    Args:
        x: Tensor[...] values (e.g. advantages [B, T]).
        mask: Tensor of the same shape, 1 for real entries.
        shift_mean: subtract the mean (False keeps the mean and only rescales).
        eps: added to the variance for stability.

    Returns:
        Tensor of x's shape.
    """
    m = mask.to(x.dtype)
    n = m.sum()
    if n < 2:
        raise ValueError(f"whiten: needs at least 2 real entries, got {int(n.item())}")
    mean = (x * m).sum() / n
    var = (((x - mean) ** 2) * m).sum() / (n - 1)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m
