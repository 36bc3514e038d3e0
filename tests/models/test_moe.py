"""Routing math (hand values) and the SharedExpertMoE module."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from umm_ray.models.moe import (SharedExpertMoE, balance_loss, cv_squared, expert_load, importance_and_load,
                                moe_aux_loss, real_tokens, reset_expert_load, routing_weights, smooth_load,
                                validate_moe_args)


def test_routing_weights_hand_values():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])
    gates, idx = routing_weights(p, top_k=2)
    e5, e3, e2, e7 = math.exp(0.5), math.exp(0.3), math.exp(0.2), math.exp(0.7)
    expected = torch.tensor([
        [0.5, 0.5 * e5 / (e5 + e3), 0.5 * e3 / (e5 + e3), 0.0],
        [0.3, 0.0, 0.7 * e2 / (e7 + e2), 0.7 * e7 / (e7 + e2)],
    ])
    torch.testing.assert_close(gates, expected, rtol=0, atol=1e-7)
    assert idx.tolist() == [[0, 1], [2, 1]]


def test_routing_weights_top1_and_topn():
    p = torch.tensor([[0.6, 0.4]])
    g1, _ = routing_weights(p, 1)
    torch.testing.assert_close(g1, torch.tensor([[0.4, 0.6, 0.0]]))  # softmax over one prob = 1 -> g_1 = p_max
    g2, _ = routing_weights(p, 2)
    e6, e4 = math.exp(0.6), math.exp(0.4)
    torch.testing.assert_close(g2, torch.tensor([[0.4, 0.6 * e6 / (e6 + e4), 0.6 * e4 / (e6 + e4)]]))


@pytest.mark.parametrize("n,k", [(2, 1), (4, 2), (6, 2), (4, 4), (8, 3)])
def test_routing_weights_properties(n, k):
    torch.manual_seed(n * 10 + k)
    p = torch.softmax(torch.randn(257, n) * 3, dim=-1)
    gates, idx = routing_weights(p, k)
    torch.testing.assert_close(gates.sum(-1), torch.ones(257), rtol=0, atol=1e-6)
    torch.testing.assert_close(gates[:, 0], 1 - p.max(-1).values, rtol=0, atol=0)
    assert ((gates[:, 1:] != 0).sum(-1) <= k).all()
    assert (gates >= 0).all()
    # the selected experts are exactly the k largest probabilities
    assert torch.equal(idx.sort(-1).values, p.topk(k, -1).indices.sort(-1).values)


def test_cv_squared_and_balance_loss_hand_values():
    assert cv_squared(torch.tensor([1.0, 2.0, 3.0])).item() == pytest.approx(1.0 / 4.0)  # unbiased var 1, mean 2
    assert cv_squared(torch.tensor([2.0, 2.0])).item() == 0.0
    assert cv_squared(torch.tensor([5.0])).item() == 0.0
    assert cv_squared(torch.zeros(3)).item() == 0.0
    loss = balance_loss(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 4.0]))
    assert loss.item() == pytest.approx(0.01 * (0.25 + 8.0 / 4.0))  # var([0,4]) = 8, mean^2 = 4


def test_importance_and_load_hand_values():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])
    imp, load = importance_and_load(p, torch.tensor([[0], [1]]))
    torch.testing.assert_close(imp, torch.tensor([0.5, 0.6, 0.0]))
    torch.testing.assert_close(load, torch.tensor([1.0, 1.0, 0.0]))


def test_smooth_load_hand_values():
    clean = torch.tensor([[1.0, 0.0, 0.0]])
    noisy = torch.tensor([[1.5, 0.2, -0.1]])
    std = torch.ones(1, 3)
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    # top-1: expert 0 is in (threshold = 2nd largest noisy 0.2); experts 1, 2 are out (threshold = largest 1.5)
    expected = torch.tensor([phi(1.0 - 0.2), phi(0.0 - 1.5), phi(0.0 - 1.5)])
    torch.testing.assert_close(smooth_load(clean, noisy, std, 1), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("n,k", [(1, 1), (0, 1), (4, 0), (4, 5), (2, 3), (2.0, 1), (4, True)])
def test_bad_expert_settings_rejected(n, k):
    with pytest.raises(ValueError, match="num_experts|top_k"):
        validate_moe_args(n, k)
    with pytest.raises(ValueError, match="num_experts|top_k"):
        SharedExpertMoE(nn.Linear(8, 8), 8, n, k)


def _mlp(h=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(h, 32), nn.GELU(), nn.Linear(32, h))


@pytest.mark.parametrize("noisy,train", [(False, False), (False, True), (True, True)])
def test_identical_experts_reproduce_ffn(noisy, train):
    ffn = _mlp()
    moe = SharedExpertMoE(ffn, 16, 4, 2, noisy=noisy).train(train)
    x = torch.randn(3, 7, 16)
    torch.testing.assert_close(moe(x), ffn(x), rtol=0, atol=1e-6)


def test_forward_matches_explicit_per_token_sum():
    """With experts made different, y = sum_e g_e E_e(x) token by token, gates from routing_weights."""
    moe = SharedExpertMoE(_mlp(), 16, 4, 2, noisy=False, generator=torch.Generator().manual_seed(1)).eval()
    with torch.no_grad():
        for e in moe.experts:
            for p in e.parameters():
                p.add_(torch.randn_like(p) * 0.1)
    x = torch.randn(2, 5, 16)
    y = moe(x).reshape(-1, 16)
    h = x.reshape(-1, 16)
    gates, _ = routing_weights(torch.softmax(moe.gate(h), -1), 2)
    manual = torch.stack([sum(gates[t, e] * moe.experts[e](h[t]) for e in range(5)) for t in range(h.shape[0])])
    torch.testing.assert_close(y, manual, rtol=0, atol=1e-6)


def test_router_init_and_aux_loss_gradients():
    moe = SharedExpertMoE(_mlp(h=64), 64, 6, 2, noisy=True, generator=torch.Generator().manual_seed(0)).train()
    assert moe.gate.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(moe.noise.weight) == 0
    x = torch.randn(4, 9, 64)
    y = moe(x)
    aux = moe_aux_loss(moe)
    assert aux.item() > 0 and aux is not None
    (y.pow(2).mean() + aux).backward()
    assert moe.gate.weight.grad.abs().sum() > 0
    assert moe.noise.weight.grad.abs().sum() > 0  # reaches W_noise through the smooth load estimate


def test_expert_load_stats():
    moe = SharedExpertMoE(_mlp(), 16, 4, 2, noisy=False).eval()
    moe(torch.randn(10, 16))
    moe(torch.randn(6, 16))
    assert moe.tokens_seen.item() == 16
    assert moe.load_counts.sum().item() == 16 * 2
    frac = expert_load(moe)
    assert len(frac) == 1 and sum(frac[0]) == pytest.approx(1.0)
    reset_expert_load(moe)
    assert expert_load(moe) == [[0.0] * 4]


@pytest.mark.parametrize("noisy", [False, True])
def test_real_tokens_leave_padding_out_of_load_stats_and_balance_loss(noisy):
    """Padded batch under `real_tokens` == the real tokens alone: same counts, same balance loss, same outputs."""
    moe = SharedExpertMoE(_mlp(), 16, 4, 2, noisy=noisy, generator=torch.Generator().manual_seed(2)).train(noisy)
    x = torch.randn(3, 6, 16)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4])
    real = x[mask.bool()]  # [12, 16]
    torch.manual_seed(0)
    y_real = moe(real)
    aux_real, counts_real = moe.aux_loss, moe.load_counts.clone()
    reset_expert_load(moe)
    with real_tokens(moe, mask):
        torch.manual_seed(0)
        y = moe(x)
    assert moe.token_mask is None  # cleared on exit
    assert moe.tokens_seen.item() == 12 and moe.load_counts.sum().item() == 12 * 2
    if not noisy:  # the noise draw covers padding too, so only the deterministic router compares exactly
        assert torch.equal(moe.load_counts, counts_real)
        torch.testing.assert_close(moe.aux_loss, aux_real)
        torch.testing.assert_close(y[mask.bool()], y_real)
    reset_expert_load(moe)
    moe(x)  # outside the block every position counts
    assert moe.tokens_seen.item() == 18
