"""PPO losses and reward shaping (Schulman et al. 2017; Ziegler et al. 2019; Ouyang et al. 2022). Pure torch.

Shapes: B = sequences, T = response positions, V = vocabulary. `mask[b, t] = 1` marks a real response token.
Losses average over all real tokens of the batch (token-mean), the convention of OpenRLHF / verl.
"""

from __future__ import annotations

import math

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` over entries where mask == 1 (over `dim`, or everything when dim is None).

    Args:
        x: Tensor[...]; mask: Tensor broadcastable to x.
        dim: reduce over this dimension only; None reduces over all.

    Returns:
        Scalar tensor, or x's shape without `dim`. Rows with no real entries give 0 (not NaN).
    """
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1.0)
    return (x * m).sum(dim=dim) / m.sum(dim=dim).clamp(min=1.0)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate: L = mean_t max(-A r_t, -A clip(r_t, 1-eps, 1+eps)), r_t = exp(logp - old_logp).

    Args:
        logp: Tensor[B, T] current policy log-probs (with grad).
        old_logp: Tensor[B, T] behaviour log-probs at rollout time.
        adv: Tensor[B, T] advantages.
        mask: Tensor[B, T].
        clip_eps: ratio clip epsilon.

    Returns:
        (loss, clip_frac): scalar loss; fraction of real tokens where the clipped term was the active (larger) one.
    """
    ratio = torch.exp(logp - old_logp.detach())
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_frac = masked_mean((clipped > unclipped).to(logp.dtype), mask).detach()
    return loss, clip_frac


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float | None = 0.2) -> torch.Tensor:
    """Clipped value loss: 0.5 * mean_t max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2).

    Args:
        values: Tensor[B, T] current critic values (with grad).
        old_values: Tensor[B, T] values at rollout time.
        returns: Tensor[B, T] GAE returns (targets).
        mask: Tensor[B, T].
        clip: value clip c; None or <= 0 disables clipping (plain 0.5 * MSE).

    Returns:
        Scalar loss.
    """
    err = (values - returns) ** 2
    if clip is not None and clip > 0:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (v_clipped - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


def joint_loss(logits: torch.Tensor, logp: torch.Tensor, values: torch.Tensor, old_logp: torch.Tensor,
               adv: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               clip_eps: float, value_clip: float, vf_coef: float, entropy_coef: float
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """The policy + critic loss of one update: policy_loss + vf_coef * value_loss - entropy_coef * entropy.

    Args:
        logits: Tensor[B, T, V] policy logits at the response positions; logp: Tensor[B, T] their log-probs of the
            sampled tokens; values: Tensor[B, T] critic values (both with grad).
        old_logp, adv, old_values, returns, mask: Tensor[B, T] from the experience.

    Returns:
        (loss, stats): the scalar loss; policy_loss, value_loss, clip_frac, entropy, approx_kl as floats. Every
        term is a token mean over `mask`, so rows split into pieces recombine as sum(piece tokens / tokens x term).
    """
    pg_loss, clip_frac = policy_loss(logp, old_logp, adv, mask, clip_eps)
    vf_loss = value_loss(values, old_values, returns, mask, value_clip)
    entropy = entropy_from_logits(logits.detach() if entropy_coef == 0 else logits, mask)
    loss = pg_loss + vf_coef * vf_loss - entropy_coef * entropy
    approx_kl = masked_mean(0.5 * (logp.detach() - old_logp) ** 2, mask)
    return loss, {"policy_loss": pg_loss.item(), "value_loss": vf_loss.item(), "clip_frac": float(clip_frac),
                  "entropy": entropy.item(), "approx_kl": approx_kl.item()}


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: Tensor[B, T, V] -> Tensor[B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy (nats) over real response tokens.

    Args:
        logits: Tensor[B, T, V] policy logits at the response positions.
        mask: Tensor[B, T].

    Returns:
        Scalar tensor.
    """
    return masked_mean(token_entropy(logits), mask)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row: Tensor[B, T] -> Tensor[B] (long). Raises on an all-padding row."""
    m = mask.to(torch.long)
    empty = m.sum(dim=-1) == 0
    if bool(empty.any()):
        raise ValueError(f"last_token_index: rows {empty.nonzero().flatten().tolist()} have no real response token")
    positions = torch.arange(m.shape[-1], device=m.device).expand_as(m)
    return (positions * m).max(dim=-1).values


def token_rewards(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                  kl_coef: float) -> torch.Tensor:
    """Per-token PPO rewards: -beta * (logp - ref_logp) at every real token, plus the RM score at the last one.

    Args:
        scores: Tensor[B] sequence-level (proxy) reward, already clipped / normalised as configured.
        logp: Tensor[B, T] behaviour-policy log-probs of the sampled tokens.
        ref_logp: Tensor[B, T] reference log-probs of the same tokens.
        mask: Tensor[B, T].
        kl_coef: beta.

    Returns:
        Tensor[B, T], zero at padding.
    """
    if scores.dim() != 1 or scores.shape[0] != logp.shape[0]:
        raise ValueError(f"token_rewards: scores {tuple(scores.shape)} must be [B] with B = {logp.shape[0]}")
    m = mask.to(logp.dtype)
    rewards = -kl_coef * (logp - ref_logp).detach() * m
    last = last_token_index(mask)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += scores.to(rewards.dtype)
    return rewards


def clip_rewards(scores: torch.Tensor, clip: float | None) -> torch.Tensor:
    """Clamp scores to [-clip, clip]; None or <= 0 leaves them unchanged."""
    if clip is None or clip <= 0:
        return scores
    return scores.clamp(-clip, clip)


class RunningMoments:
    """Running mean / std over every score seen so far (Chan et al. parallel update), for reward normalisation.

    The state is three floats (`state_dict` / `load_state_dict`) so a resumed run normalises exactly as before.
    """

    def __init__(self, eps: float = 1e-8):
        self.mean, self.m2, self.count, self.eps = 0.0, 0.0, 0, eps

    @property
    def std(self) -> float:
        """Unbiased standard deviation of everything seen (1.0 before two values have been seen)."""
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def update(self, x: torch.Tensor) -> tuple[float, float]:
        """Fold a batch into the running moments; returns the batch's (mean, unbiased std)."""
        xs = x.detach().double().flatten()
        n = xs.numel()
        if n == 0:
            raise ValueError("RunningMoments.update: empty batch")
        b_mean = xs.mean().item()
        b_m2 = ((xs - b_mean) ** 2).sum().item()
        total = self.count + n
        delta = b_mean - self.mean
        self.mean += delta * n / total
        self.m2 += b_m2 + delta ** 2 * self.count * n / total
        self.count = total
        return b_mean, (math.sqrt(b_m2 / (n - 1)) if n > 1 else 0.0)

    def normalize(self, x: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
        """(x - mean) / std with the running statistics (mean kept when shift_mean is False)."""
        out = x / (self.std + self.eps)
        return out - self.mean / (self.std + self.eps) if shift_mean else out

    def state_dict(self) -> dict:
        return {"mean": self.mean, "m2": self.m2, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.m2, self.count = float(state["mean"]), float(state["m2"]), int(state["count"])
