"""Ensemble aggregates mean / WCO / UWO against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from umm_ray.algo.ensemble import aggregate, member_scale, standardise

SCORES = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 4.0], [6.0, 0.0]])  # k=4 members, B=2


def test_mean_and_wco():
    torch.testing.assert_close(aggregate(SCORES, "mean"), torch.tensor([3.0, 1.0]))
    torch.testing.assert_close(aggregate(SCORES, "wco"), torch.tensor([1.0, 0.0]))


def test_uwo_uses_population_variance():
    # column 0: mean 3, pop var (4+1+0+9)/4 = 3.5; column 1: mean 1, pop var (1+1+9+1)/4 = 3
    torch.testing.assert_close(aggregate(SCORES, "uwo", lam=0.5), torch.tensor([3.0 - 1.75, 1.0 - 1.5]))
    torch.testing.assert_close(aggregate(SCORES, "uwo", lam=0.0), aggregate(SCORES, "mean"))


def test_single_member_and_errors():
    one = torch.tensor([[1.0, -2.0]])
    for how in ("mean", "wco", "uwo"):
        torch.testing.assert_close(aggregate(one, how, 0.5), torch.tensor([1.0, -2.0]))
    with pytest.raises(ValueError, match="how must be one of"):
        aggregate(SCORES, "median")
    with pytest.raises(ValueError, match=r"\[k, B\]"):
        aggregate(torch.zeros(3), "mean")
    with pytest.raises(ValueError, match="lambda"):
        aggregate(SCORES, "uwo", lam=-1.0)


def test_member_scale_is_each_members_mean_and_population_std():
    scores = torch.tensor([[1.0, 3.0, 5.0, 7.0], [10.0, 10.0, 12.0, 8.0]])
    (m0, s0), (m1, s1) = member_scale(scores)
    assert (m0, m1) == (4.0, 10.0)
    assert s0 == pytest.approx(5.0 ** 0.5) and s1 == pytest.approx(2.0 ** 0.5)
    # On that scale the members agree on where the middle is: a constant offset between members disappears.
    z = [(scores[i] - m) / s for i, (m, s) in enumerate(member_scale(scores))]
    shifted = [(scores[0] + 100.0 - m) / s for m, s in member_scale(torch.stack([scores[0] + 100.0]))]
    torch.testing.assert_close(z[0], shifted[0].float())


def test_member_scale_errors():
    with pytest.raises(ValueError, match="member\\(s\\) \\[1\\] give every one of the 3"):
        member_scale(torch.tensor([[0.0, 1.0, 2.0], [4.0, 4.0, 4.0]]))
    with pytest.raises(ValueError, match="N >= 2"):
        member_scale(torch.tensor([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        member_scale(torch.tensor([[1.0, float("nan")]]))


def test_standardise_puts_each_member_on_its_own_calibration_scale():
    calib = torch.tensor([[1.0, 3.0, 5.0, 7.0], [10.0, 10.0, 12.0, 8.0]])
    scale = member_scale(calib)
    z = standardise(calib, scale)
    assert z.dtype == torch.float64
    torch.testing.assert_close(z.mean(1), torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(2, dtype=torch.float64))
    # New samples go through the same affine map per member: member 1's 12.0 is +sqrt(2) of its std above its mean.
    torch.testing.assert_close(standardise(torch.tensor([[4.0], [12.0]]), scale),
                               torch.tensor([[0.0], [2.0 ** 0.5]], dtype=torch.float64))


def test_standardise_errors_name_the_shape_and_the_bad_std():
    with pytest.raises(ValueError, match="k = 2 members"):
        standardise(torch.zeros(3, 4), [(0.0, 1.0), (0.0, 1.0)])
    with pytest.raises(ValueError, match="std must be > 0"):
        standardise(torch.zeros(2, 4), [(0.0, 1.0), (0.0, 0.0)])
