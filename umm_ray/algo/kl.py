"""KL estimators between the policy and the reference, and KL-coefficient controllers. Pure torch.

With samples y ~ pi (the policy), logp = log pi(y_t | ...) and logq = log pi_ref(y_t | ...), the per-token
estimators of KL(pi || pi_ref) are (Schulman, "Approximating KL divergence"):
    k1 = logp - logq                                 unbiased, high variance, can be negative
    k2 = 0.5 (logp - logq)^2                         biased, low variance, >= 0 (Gao et al. report this one)
    k3 = exp(logq - logp) - 1 - (logq - logp)        unbiased, low variance, >= 0
"""

from __future__ import annotations

import torch

KL_KINDS = ("k1", "k2", "k3")


def kl_per_token(logp: torch.Tensor, logq: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Per-token KL estimate.

    Args:
        logp: Tensor[B, T] policy log-probs of the sampled tokens.
        logq: Tensor[B, T] reference log-probs of the same tokens.
        kind: "k1", "k2" or "k3".

    Returns:
        Tensor[B, T].
    """
    if logp.shape != logq.shape:
        raise ValueError(f"kl_per_token: logp {tuple(logp.shape)} and logq {tuple(logq.shape)} differ in shape")
    log_ratio = logp - logq
    if kind == "k1":
        return log_ratio
    if kind == "k2":
        return 0.5 * log_ratio ** 2
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # exp(logq-logp) - 1 - (logq-logp), expm1 for precision
    raise ValueError(f"kl_per_token: unknown kind {kind!r}; choose from {KL_KINDS}")


def sequence_kl(logp: torch.Tensor, logq: torch.Tensor, mask: torch.Tensor, kind: str = "k1") -> torch.Tensor:
    """Sum of the per-token estimate over each sequence's real tokens: the sequence-level KL estimate.

    Args:
        logp: Tensor[B, T]; logq: Tensor[B, T]; mask: Tensor[B, T] 1 for real response tokens.
        kind: "k1", "k2" or "k3".

    Returns:
        Tensor[B]; its mean over the batch is the KL reported against gold reward.
    """
    return (kl_per_token(logp, logq, kind) * mask.to(logp.dtype)).sum(dim=-1)


class FixedKLController:
    """A constant KL coefficient beta."""

    def __init__(self, value: float):
        self.value = float(value)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns the (unchanged) coefficient."""
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. (2019) proportional controller driving the observed KL towards `target`.

    e = clip(KL / target - 1, -0.2, 0.2); beta <- beta * (1 + e * n_steps / horizon), where n_steps is the number of
    samples (or steps) since the last update.
    """

    def __init__(self, init: float, target: float, horizon: int):
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController: target ({target}) and horizon ({horizon}) must be > 0")
        self.value, self.target, self.horizon = float(init), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Adjust beta from the latest KL measurement; returns the new beta."""
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.target, self.horizon = float(state["value"]), float(state["target"]), int(state["horizon"])


def make_kl_controller(kl_coef: float, kl_target: float = 0.0, kl_horizon: int = 10000):
    """Fixed controller when kl_target == 0, else the adaptive one (matches PPOConfig's fields)."""
    if kl_target > 0:
        return AdaptiveKLController(kl_coef, kl_target, kl_horizon)
    return FixedKLController(kl_coef)
