"""GAE and whitening against values worked out by hand."""

import pytest
import torch

from umm_ray.algo.gae import gae_advantages, whiten


def test_gae_hand_computed_with_right_padding():
    # gamma = 0.9, lam = 0.5 -> gamma * lam = 0.45.
    # Row 0 (3 real tokens): A2 = 1 - 0.3 = 0.7; A1 = (0.9*0.3 - 0.4) + 0.45*0.7 = 0.185;
    #                        A0 = (0.9*0.4 - 0.5) + 0.45*0.185 = -0.05675.
    # Row 1 (2 real tokens, garbage in the padded slot must be ignored): A1 = 2 - 0.5 = 1.5 (terminal after it);
    #                        A0 = (0.9*0.5 - 1.0) + 0.45*1.5 = 0.125.
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 0.5, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = gae_advantages(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[-0.05675, 0.185, 0.7], [0.125, 1.5, 0.0]]))
    torch.testing.assert_close(ret, torch.tensor([[0.44325, 0.585, 1.0], [1.125, 2.0, 0.0]]))


def test_gae_left_padding_matches_unpadded_suffix():
    rewards = torch.tensor([[5.0, 0.0, 1.0]])
    values = torch.tensor([[3.0, 0.4, 0.3]])
    adv, ret = gae_advantages(rewards, values, torch.tensor([[0, 1, 1]]), gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.0, 0.185, 0.7]]))
    torch.testing.assert_close(ret, torch.tensor([[0.0, 0.585, 1.0]]))


def test_gae_lambda_one_gamma_one_gives_reward_to_go():
    # With gamma = lam = 1 the returns are the Monte-Carlo reward-to-go, whatever the values.
    rewards = torch.tensor([[0.1, -0.2, 0.3, 1.0]])
    values = torch.tensor([[9.0, -4.0, 2.0, 0.5]])
    _, ret = gae_advantages(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[1.2, 1.1, 1.3, 1.0]]))


def test_gae_lambda_zero_is_one_step_td():
    rewards = torch.tensor([[0.0, 1.0]])
    values = torch.tensor([[0.2, 0.6]])
    adv, _ = gae_advantages(rewards, values, torch.ones(1, 2), gamma=0.5, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[0.5 * 0.6 - 0.2, 1.0 - 0.6]]))


def test_gae_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="must all be"):
        gae_advantages(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), 1.0, 0.95)


def test_whiten_hand_computed():
    # Real entries 1, 2, 3, 4: mean 2.5, unbiased variance 5/3 -> std 1.2909944.
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, -100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    out = whiten(x, mask)
    s = (5.0 / 3.0) ** 0.5
    torch.testing.assert_close(out, torch.tensor([[-1.5 / s, -0.5 / s, 0.5 / s], [1.5 / s, 0.0, 0.0]]))
    kept = whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept[0, 0], torch.tensor(-1.5 / s + 2.5))
    assert kept[1, 1] == 0


def test_whiten_needs_two_entries():
    with pytest.raises(ValueError, match="at least 2"):
        whiten(torch.ones(1, 3), torch.tensor([[1, 0, 0]]))
