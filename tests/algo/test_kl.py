"""KL estimators and controllers against values worked out by hand."""

import math

import pytest
import torch

from umm_ray.algo.kl import (AdaptiveKLController, FixedKLController, kl_per_token, make_kl_controller,
                             sequence_kl)

LN2 = math.log(2.0)


def test_estimators_hand_computed():
    # Token 0: p = 0.5, q = 0.25 -> log ratio ln2; token 1: p = 0.25, q = 0.5 -> -ln2.
    logp = torch.log(torch.tensor([[0.5, 0.25]]))
    logq = torch.log(torch.tensor([[0.25, 0.5]]))
    torch.testing.assert_close(kl_per_token(logp, logq, "k1"), torch.tensor([[LN2, -LN2]]))
    torch.testing.assert_close(kl_per_token(logp, logq, "k2"), torch.tensor([[0.5 * LN2 ** 2, 0.5 * LN2 ** 2]]))
    # k3 = q/p - 1 - ln(q/p): 0.5 - 1 + ln2 and 2 - 1 - ln2.
    torch.testing.assert_close(kl_per_token(logp, logq, "k3"), torch.tensor([[LN2 - 0.5, 1.0 - LN2]]))


def test_k1_and_k3_are_unbiased_exactly():
    # E_p[k1] = E_p[k3] = KL(p||q) for a categorical: p = (.5,.25,.25), q = (.25,.5,.25): KL = 0.25 ln2.
    p = torch.tensor([0.5, 0.25, 0.25])
    q = torch.tensor([0.25, 0.5, 0.25])
    for kind in ("k1", "k3"):
        est = (p * kl_per_token(p.log()[None], q.log()[None], kind)[0]).sum()
        torch.testing.assert_close(est, torch.tensor(0.25 * LN2))


def test_sequence_kl_sums_real_tokens_only():
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.5, -0.5]])
    logq = torch.tensor([[-1.5, -1.0, -0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    torch.testing.assert_close(sequence_kl(logp, logq, mask, "k1"), torch.tensor([0.5 - 1.0, 1.5]))
    torch.testing.assert_close(sequence_kl(logp, logq, mask, "k2"), torch.tensor([0.125 + 0.5, 0.375]))


def test_unknown_kind_and_shape_errors():
    with pytest.raises(ValueError, match="unknown kind"):
        kl_per_token(torch.zeros(1, 2), torch.zeros(1, 2), "k4")
    with pytest.raises(ValueError, match="differ in shape"):
        kl_per_token(torch.zeros(1, 2), torch.zeros(1, 3))


def test_adaptive_controller_ziegler_update():
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    # KL 9 -> error 0.5 clipped to 0.2 -> beta * (1 + 0.2 * 256 / 10000)
    assert c.update(9.0, 256) == pytest.approx(0.1 * 1.00512)
    c2 = AdaptiveKLController(0.1, 6.0, 10000)
    assert c2.update(3.0, 256) == pytest.approx(0.1 * (1 - 0.00512))  # error -0.5 clipped to -0.2
    c3 = AdaptiveKLController(0.1, 6.0, 10000)
    assert c3.update(6.6, 256) == pytest.approx(0.1 * (1 + 0.1 * 0.0256))  # inside the clip range
    restored = AdaptiveKLController(1.0, 1.0, 1)
    restored.load_state_dict(c.state_dict())
    assert restored.update(9.0, 256) == pytest.approx(c.update(9.0, 256))


def test_fixed_controller_and_factory():
    f = FixedKLController(0.05)
    assert f.update(100.0, 1000) == 0.05
    assert isinstance(make_kl_controller(0.05), FixedKLController)
    assert isinstance(make_kl_controller(0.05, kl_target=6.0, kl_horizon=100), AdaptiveKLController)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, 0.0, 10)
