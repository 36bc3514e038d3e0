"""PPO losses, reward shaping and normalisation against values worked out by hand."""

import math

import pytest
import torch

from umm_ray.algo.ppo import (RunningMoments, clip_rewards, entropy_from_logits, last_token_index, masked_mean,
                              policy_loss, token_rewards, value_loss)


def test_masked_mean():
    x = torch.tensor([[1.0, 2.0, 30.0], [4.0, 50.0, 60.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert masked_mean(x, mask).item() == pytest.approx(7.0 / 3.0)
    torch.testing.assert_close(masked_mean(x, mask, dim=-1), torch.tensor([1.5, 4.0]))
    torch.testing.assert_close(masked_mean(x, torch.zeros(2, 3), dim=-1), torch.zeros(2))


def test_policy_loss_hand_computed_and_gradient():
    # ratios 1.5, 0.5, 1.0, 0.5 (+ a padded slot); advantages 1, 1, -2, -1; eps 0.2.
    # max(-A r, -A clip(r)): -1.2 (clipped), -0.5, 2.0, 0.8 (clipped) -> mean 0.275, clip fraction 2/4.
    old = torch.zeros(1, 5)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0, 0.5, 3.0]])).requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -2.0, -1.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss, clip_frac = policy_loss(logp, old, adv, mask, clip_eps=0.2)
    assert loss.item() == pytest.approx(0.275)
    assert clip_frac.item() == pytest.approx(0.5)
    loss.backward()
    # d/dlogp of -A r is -A r: unclipped tokens 1 and 2 get -0.5/4 and 2/4; clipped and padded tokens get 0.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, -0.125, 0.5, 0.0, 0.0]]))


def test_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.0, 2.0, 5.0]])
    old = torch.tensor([[0.5, 0.5, 2.0, 0.0]])
    returns = torch.tensor([[2.0, 1.0, 1.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # clipped values 0.7, 0.3, 2.0: errors max(1, 1.69), max(1, 0.49), max(1, 1) -> 0.5 * 3.69 / 3.
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(0.615)
    assert value_loss(values, old, returns, mask, clip=None).item() == pytest.approx(0.5)
    assert value_loss(values, old, returns, mask, clip=0.0).item() == pytest.approx(0.5)


def test_entropy_hand_computed():
    # Position 0 uniform over 4 -> ln 4; position 1 (.5, .25, .25, 0) -> 1.5 ln 2; position 2 padded.
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0],
                            [math.log(0.5), math.log(0.25), math.log(0.25), -1e9],
                            [10.0, 0.0, 0.0, 0.0]]])
    ent = entropy_from_logits(logits, torch.tensor([[1, 1, 0]]))
    assert ent.item() == pytest.approx((math.log(4) + 1.5 * math.log(2)) / 2, rel=1e-5)


def test_token_rewards_hand_computed():
    scores = torch.tensor([1.0, -2.0])
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # Row 0: -0.1 * (0.5, 0, -1) + score 1 at index 2; row 1: -0.1 * (0, 1) + score -2 at index 1, padded slot 0.
    out = token_rewards(scores, logp, ref, mask, kl_coef=0.1)
    torch.testing.assert_close(out, torch.tensor([[-0.05, 0.0, 1.1], [0.0, -2.1, 0.0]]))


def test_last_token_index_and_empty_rows():
    torch.testing.assert_close(last_token_index(torch.tensor([[1, 1, 0], [0, 1, 1], [1, 0, 0]])),
                               torch.tensor([1, 2, 0]))
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        last_token_index(torch.tensor([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="must be"):
        token_rewards(torch.zeros(3), torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), 0.1)


def test_clip_rewards():
    torch.testing.assert_close(clip_rewards(torch.tensor([-20.0, 3.0, 12.0]), 10.0), torch.tensor([-10.0, 3.0, 10.0]))
    torch.testing.assert_close(clip_rewards(torch.tensor([-20.0]), 0.0), torch.tensor([-20.0]))


def test_running_moments_hand_computed_and_state():
    rm = RunningMoments()
    assert rm.update(torch.tensor([1.0, 2.0, 3.0])) == pytest.approx((2.0, 1.0))
    rm.update(torch.tensor([4.0, 5.0]))
    # All of 1..5: mean 3, unbiased std sqrt(2.5).
    assert rm.mean == pytest.approx(3.0)
    assert rm.std == pytest.approx(math.sqrt(2.5))
    torch.testing.assert_close(rm.normalize(torch.tensor([3.0, 4.0])), torch.tensor([0.0, 1.0 / math.sqrt(2.5)]))
    torch.testing.assert_close(rm.normalize(torch.tensor([3.0]), shift_mean=False),
                               torch.tensor([3.0 / math.sqrt(2.5)]))
    other = RunningMoments()
    other.load_state_dict(rm.state_dict())
    other.update(torch.tensor([10.0]))
    rm.update(torch.tensor([10.0]))
    assert other.std == pytest.approx(rm.std)
    with pytest.raises(ValueError, match="empty"):
        rm.update(torch.tensor([]))
