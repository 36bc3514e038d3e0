"""Shared-expert mixture-of-experts FFN: router, noisy top-k, routing-weight normalisation, load balance.

One `SharedExpertMoE` replaces one decoder layer's FFN. It holds n + 1 copies of that FFN: `experts[0]` is the
shared expert E_0 (always active), `experts[1..n]` are the normal experts E_1..E_n scored by the router.
The routing math (docs/design.md §1.2; UMM-RM eq. 5-7) lives in the pure functions below so it can be checked by hand:

    p = softmax(l),  p_max = max_i p_i,  S = top_k indices of p
    g_0 = 1 - p_max,  g_i = p_max * exp(p_i) / sum_{j in S} exp(p_j)  (i in S),
    y = g_0 E_0(x) + sum_{i in S} g_i E_i(x)

The weights sum to 1, so with identical experts (right after upcycling) the MoE output equals the dense FFN output.
"""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from torch import nn

NOISE_EPSILON = 0.01  # the +0.01 floor of the noise std: eps * (softplus(W_noise x) + 0.01)
BALANCE_COEF = 0.01  # per-layer weight of cv^2(importance) + cv^2(load)
ROUTER_INIT_STD = 0.02


# ----------------------------------------------------------------------------------------------------------------
# Pure routing math
# ----------------------------------------------------------------------------------------------------------------

def routing_weights(probs: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Routing-weight normalisation with a shared expert.

    Args:
        probs: router probabilities p = softmax(logits) over the n normal experts, [N, n].
        top_k: normal experts active per token, 1 <= top_k <= n.

    Returns:
        gates: [N, n + 1]; column 0 is the shared weight g_0 = 1 - p_max, column i (1..n) is g_i for the selected
            normal experts and exactly 0 for the others. Each row sums to 1.
        topk_idx: [N, top_k] indices (0-based over the normal experts) of the selected experts, largest p first.
    """
    top_p, topk_idx = probs.topk(top_k, dim=-1)
    p_max = top_p[:, :1]  # topk is sorted, so the first column is max_i p_i
    # softmax over the *probabilities* of the selected experts (not the logits), scaled to p_max
    normal = p_max * torch.softmax(top_p, dim=-1)
    gates = torch.cat([1.0 - p_max, torch.zeros_like(probs).scatter(1, topk_idx, normal)], dim=1)
    return gates, topk_idx


def cv_squared(v: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Squared coefficient of variation var(v) / (mean(v)^2 + eps) of a 1-D tensor; 0 for a single element.

    Uses the unbiased sample variance, as XFT (the reference implementation) does.
    """
    v = v.float()
    if v.numel() <= 1:
        return v.new_zeros(())
    return v.var() / (v.mean() ** 2 + eps)


def balance_loss(importance: torch.Tensor, load: torch.Tensor, coef: float = BALANCE_COEF) -> torch.Tensor:
    """Load-balancing loss of one layer: coef * (cv^2(importance) + cv^2(load)); importance, load are [n]."""
    return coef * (cv_squared(importance) + cv_squared(load))


def smooth_load(clean: torch.Tensor, noisy: torch.Tensor, noise_std: torch.Tensor, top_k: int) -> torch.Tensor:
    """Differentiable expected load per expert under noisy top-k (Shazeer et al. 2017, appendix A).

    For each token and expert, the probability that the expert stays in the top-k when only its own noise is
    resampled: Phi((clean_i - threshold) / std_i), where the threshold is the k-th largest noisy logit of the others.

    Args:
        clean: router logits without noise, [N, n].
        noisy: the same logits with noise added, [N, n].
        noise_std: the noise standard deviation per logit, [N, n].
        top_k: requires top_k < n (with top_k == n every expert is always in; use the count instead).

    Returns:
        load: [n], the sum over tokens of those probabilities.
    """
    top_vals = noisy.topk(top_k + 1, dim=-1).values
    thr_if_in = top_vals[:, top_k:top_k + 1]  # an expert now in the top-k must beat the (k+1)-th largest
    thr_if_out = top_vals[:, top_k - 1:top_k]  # an expert now out must beat the k-th largest
    is_in = noisy > thr_if_in
    normal = torch.distributions.Normal(0.0, 1.0)
    prob = torch.where(is_in, normal.cdf((clean - thr_if_in) / noise_std),
                       normal.cdf((clean - thr_if_out) / noise_std))
    return prob.sum(0)


def importance_and_load(probs: torch.Tensor, topk_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Importance = sum over tokens of p_i on the selected experts; load = tokens routed to each expert.

    Args:
        probs: [N, n] router probabilities; topk_idx: [N, k] selected experts.

    Returns:
        importance [n] (differentiable), load [n] (counts as floats, no gradient).
    """
    selected = torch.zeros_like(probs).scatter(1, topk_idx, 1.0)
    return (probs * selected).sum(0), selected.sum(0)


# ----------------------------------------------------------------------------------------------------------------
# The module
# ----------------------------------------------------------------------------------------------------------------

class SharedExpertMoE(nn.Module):
    """n + 1 copies of a layer's FFN (index 0 shared) behind a top-k router over the n normal experts.

    Input and output have the FFN's own shape, [..., H]. After each forward, `aux_loss` holds this layer's
    load-balancing loss, and `load_counts` / `tokens_seen` accumulate how many tokens each normal expert received
    (for reports; reset with `reset_load_stats`). Inside `real_tokens(model, mask)` (the reward forward sets it) both
    cover real tokens only; otherwise every position that reaches the layer counts, padding included.
    """

    def __init__(self, ffn: nn.Module, hidden_size: int, num_experts: int, top_k: int, noisy: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        validate_moe_args(num_experts, top_k)
        ref = next(ffn.parameters())
        self.num_experts, self.top_k, self.noisy = num_experts, top_k, noisy
        self.experts = nn.ModuleList([copy.deepcopy(ffn) for _ in range(num_experts + 1)])
        self.gate = nn.Linear(hidden_size, num_experts, bias=False, device=ref.device, dtype=ref.dtype)
        self.noise = nn.Linear(hidden_size, num_experts, bias=False, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            w = torch.empty(num_experts, hidden_size).normal_(0.0, ROUTER_INIT_STD, generator=generator)
            self.gate.weight.copy_(w)
            self.noise.weight.zero_()
        # integer counters: a bf16/fp16 cast of the module (DeepSpeed) leaves them exact
        self.register_buffer("load_counts", torch.zeros(num_experts, dtype=torch.long), persistent=False)
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long), persistent=False)
        self.aux_loss: torch.Tensor | None = None
        self.token_mask: torch.Tensor | None = None  # [N] bool over flattened positions, set by `real_tokens`
        self.recomputing = False  # True while gradient checkpointing re-runs this layer (umm_ray.train.levers)

    def route(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router for flat tokens h [N, H] -> (gates [N, n+1], topk_idx [N, k], aux loss scalar)."""
        clean = F.linear(h, self.gate.weight).float()  # routing math in fp32 even when the model is bf16
        use_noise = self.training and self.noisy
        if use_noise:
            std = F.softplus(F.linear(h, self.noise.weight).float()) + NOISE_EPSILON
            logits = clean + torch.randn_like(clean) * std
        else:
            logits = clean
        probs = torch.softmax(logits, dim=-1)
        gates, topk_idx = routing_weights(probs, self.top_k)
        mask = self.token_mask
        if mask is None or mask.numel() != h.shape[0]:  # no (matching) mask: every position counts
            mask = torch.ones(h.shape[0], dtype=torch.bool, device=h.device)
        importance, counts = importance_and_load(probs[mask], topk_idx[mask])
        load = smooth_load(clean[mask], logits[mask], std[mask], self.top_k) \
            if use_noise and self.top_k < self.num_experts else counts
        if not self.recomputing:  # the recompute in backward sees the same tokens again: count them once
            with torch.no_grad():
                self.load_counts += counts.round().long()
                self.tokens_seen += int(mask.sum())
        return gates, topk_idx, balance_loss(importance, load)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., H] -> y: [..., H] = g_0 E_0(x) + sum_{i in S} g_i E_i(x), per token."""
        shape = x.shape
        h = x.reshape(-1, shape[-1])
        gates, topk_idx, self.aux_loss = self.route(h)
        gates = gates.to(h.dtype)
        y = gates[:, :1] * self.experts[0](h)
        for i in range(self.num_experts):
            rows = (topk_idx == i).any(dim=-1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            out = self.experts[i + 1](h[rows])
            # .to: under autocast an expert's output may be bf16 while y is fp32 (index_add needs one dtype)
            y = y.index_add(0, rows, (gates[rows, i + 1:i + 2] * out).to(y.dtype))
        return y.reshape(shape)

    def reset_load_stats(self) -> None:
        self.load_counts.zero_()
        self.tokens_seen.zero_()

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts} (+1 shared), top_k={self.top_k}, noisy={self.noisy}"


def validate_moe_args(num_experts, top_k) -> None:
    """Reject expert settings that cannot work, naming the bad value (before any compute starts)."""
    if not isinstance(num_experts, int) or isinstance(num_experts, bool) or num_experts < 2:
        raise ValueError(f"moe.num_experts must be an integer >= 2 (normal experts; the shared expert is extra), "
                         f"got {num_experts!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= num_experts:
        raise ValueError(f"moe.top_k must be an integer with 1 <= top_k <= num_experts={num_experts}, got {top_k!r}")


# ----------------------------------------------------------------------------------------------------------------
# Whole-model helpers
# ----------------------------------------------------------------------------------------------------------------

def moe_layers(model: nn.Module) -> list[SharedExpertMoE]:
    """All SharedExpertMoE modules of a model, in layer order."""
    return [m for m in model.modules() if isinstance(m, SharedExpertMoE)]


def moe_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum over layers of the load-balancing loss of the last forward pass (scalar; 0 for a dense model)."""
    losses = [m.aux_loss for m in moe_layers(model) if m.aux_loss is not None]
    if not losses:
        return torch.zeros((), device=next(model.parameters()).device)
    return torch.stack([l.float() for l in losses]).sum()


def expert_load(model: nn.Module) -> list[list[float]]:
    """Per layer, the fraction of routed token slots each normal expert received since the last reset.

    Returns:
        [num_layers][num_experts] fractions; each row sums to 1 once tokens were seen (else all zeros).
    """
    out = []
    for m in moe_layers(model):
        total = m.load_counts.sum().item()
        out.append([c / total if total else 0.0 for c in m.load_counts.tolist()])
    return out


@contextlib.contextmanager
def real_tokens(model: nn.Module, attention_mask: torch.Tensor):
    """Within this block every MoE layer of `model` leaves padding out of its balance loss and load statistics.

    attention_mask: [B, T] (1 = real token), the mask of the forward pass run inside the block.
    """
    layers = moe_layers(model)
    flat = attention_mask.reshape(-1).bool()
    for m in layers:
        m.token_mask = flat.to(m.gate.weight.device)
    try:
        yield
    finally:
        for m in layers:
            m.token_mask = None


def reset_expert_load(model: nn.Module) -> None:
    """Zero the load statistics of every MoE layer."""
    for m in moe_layers(model):
        m.reset_load_stats()
