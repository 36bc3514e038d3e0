"""Ensemble aggregates mean / WCO / UWO against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from umm_ray.algo.ensemble import aggregate

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
