"""From a scored rollout to an Experience: reward shaping, per-token rewards, GAE, whitening, KL statistics.

Only glue: every formula is a call into `umm_ray.algo` (ppo, gae, kl).
"""

from __future__ import annotations

import torch

from umm_ray.algo.gae import gae_advantages, whiten
from umm_ray.algo.kl import KL_KINDS, sequence_kl
from umm_ray.algo.ppo import RunningMoments, clip_rewards, token_rewards
from umm_ray.config import PPOConfig
from umm_ray.ppo.experience import Experience, PolicyBatch


def shape_scores(raw: torch.Tensor, moments: RunningMoments, ppo: PPOConfig) -> torch.Tensor:
    """Sequence scores [B] -> the reward PPO optimises: running-normalised (when configured), then clipped."""
    scores = raw.float()
    if ppo.normalize_reward:
        moments.update(scores)
        scores = moments.normalize(scores)
    return clip_rewards(scores, ppo.reward_clip)


def kl_stats(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """Batch means of the sequence-level KL estimates k1, k2, k3 (inputs Tensor[B, R])."""
    return {f"kl_{k}": sequence_kl(logp, ref_logp, mask, k).mean().item() for k in KL_KINDS}


def build_experience(batch: PolicyBatch, logp: torch.Tensor, values: torch.Tensor, ref_logp: torch.Tensor,
                     scores: torch.Tensor, kl_coef: float, ppo: PPOConfig) -> tuple[Experience, dict[str, float]]:
    """Per-token rewards -> GAE -> (whitened) advantages, packed with the batch for `PolicyGroup.train_step`.

    Args:
        batch: the PolicyBatch the log-probs were computed on.
        logp, values: Tensor[B, R] from the policy at rollout time.
        ref_logp: Tensor[B, R] reference log-probs.
        scores: Tensor[B] shaped proxy scores (see `shape_scores`).
        kl_coef: current beta.

    Returns:
        (experience, stats) with stats: mean return, value, raw advantage and per-token reward.
    """
    mask = batch.response_mask
    rewards = token_rewards(scores, logp, ref_logp, mask, kl_coef)
    adv, returns = gae_advantages(rewards, values, mask, ppo.gamma, ppo.lam)
    stats = {"return_mean": (returns.sum() / mask.sum()).item(), "value_mean": (values.sum() / mask.sum()).item(),
             "advantage_mean": (adv.sum() / mask.sum()).item(), "token_reward_sum": rewards.sum(-1).mean().item()}
    if ppo.whiten_advantages and mask.sum() >= 2:
        adv = whiten(adv, mask)
    exp = Experience(batch.input_ids, batch.attention_mask, mask, batch.prompt_width,
                     old_logprobs=logp, old_values=values, advantages=adv, returns=returns)
    return exp, stats
