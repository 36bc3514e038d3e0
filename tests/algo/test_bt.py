"""Bradley–Terry loss and preference accuracy against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from umm_ray.algo.bt import bt_loss, pair_outcomes, pref_accuracy


def test_bt_loss_hand_values():
    rc, rr = torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.0, 0.0, 1.0])
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 1, 0, -2
    want = (math.log1p(math.exp(-1.0)) + math.log(2.0) + math.log1p(math.exp(2.0))) / 3
    assert bt_loss(rc, rr).item() == pytest.approx(want, rel=1e-6)


def test_bt_loss_is_stable_for_large_margins():
    big = torch.tensor([1000.0, -1000.0])
    loss = bt_loss(big, torch.zeros(2))
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx((0.0 + 1000.0) / 2)  # log(1+e^-1000) ~ 0, log(1+e^1000) ~ 1000


def test_bt_loss_gradient_hand_value():
    rc = torch.tensor([0.0], requires_grad=True)
    bt_loss(rc, torch.tensor([0.0])).backward()
    assert rc.grad.item() == pytest.approx(-0.5)  # d/dd -log sigmoid(d) = sigmoid(d) - 1 = -0.5 at 0


def test_bt_loss_shape_mismatch():
    with pytest.raises(ValueError, match="differ"):
        bt_loss(torch.zeros(3), torch.zeros(2))


def test_pref_accuracy_hand_values():
    rc = torch.tensor([2.0, 0.0, 1.0, 5.0])
    rr = torch.tensor([1.0, 1.0, 1.0, -5.0])
    assert pref_accuracy(rc, rr) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert math.isnan(pref_accuracy(torch.zeros(0), torch.zeros(0)))


def test_pref_accuracy_times_n_gives_back_the_count():
    """258 of 1154: a float32 mean would give 258.0000097 back; held-out reports count pairs from it."""
    n, k = 1154, 258
    rc = torch.cat([torch.ones(k), torch.zeros(n - k)])
    assert pref_accuracy(rc, torch.full((n,), 0.5)) * n == pytest.approx(k, abs=1e-9)


def test_pair_outcomes_per_pair_and_their_mean_is_the_accuracy():
    rc = torch.tensor([2.0, 1.0, 1.0, 1.0 + 1e-12], dtype=torch.float64)
    rr = torch.tensor([1.0, 2.0, 1.0, 1.0], dtype=torch.float64)
    won = pair_outcomes(rc, rr)
    assert won.tolist() == [1.0, 0.0, 0.5, 1.0]  # a float64 margin below float32's resolution is still a win
    assert pref_accuracy(rc, rr) == won.mean().item()
    with pytest.raises(ValueError, match="pair_outcomes: shapes"):
        pair_outcomes(torch.zeros(2), torch.zeros(3))
