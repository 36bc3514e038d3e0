"""Best-of-N estimator against hand-computed values and brute force over all n-subsets."""

import itertools
import math

import numpy as np
import pytest
import torch

from umm_ray.algo.bon import BoNCurve, subset_best_weights, bon_curve, bon_estimate, bon_ns, kl_bon


def brute_force(proxy, gold, n):
    """Average over all n-subsets of the gold of the max-proxy sample (ties: mean gold of the tied maxima)."""
    golds, proxies = [], []
    for subset in itertools.combinations(range(len(proxy)), n):
        best = max(proxy[i] for i in subset)
        tied = [i for i in subset if proxy[i] == best]
        golds.append(sum(gold[i] for i in tied) / len(tied))
        proxies.append(best)
    return sum(proxies) / len(proxies), sum(golds) / len(golds)


def test_kl_bon_values():
    assert kl_bon(1) == 0.0
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)
    assert kl_bon(16) == pytest.approx(math.log(16) - 15 / 16)
    with pytest.raises(ValueError):
        kl_bon(0)
    assert bon_ns(1) == [1] and bon_ns(8) == [1, 2, 4, 8] and bon_ns(12) == [1, 2, 4, 8]


def test_hand_computed_n2_of_3():
    # Sorted by proxy: gold 0, 5, 10; weights for n=2: C(1,1)/C(3,2)=1/3 and C(2,1)/C(3,2)=2/3.
    p, g = bon_estimate([3.0, 1.0, 2.0], [10.0, 0.0, 5.0], 2)
    assert g == pytest.approx(25 / 3)
    assert p == pytest.approx(8 / 3)


def test_n1_is_mean_and_nN_is_max():
    rng = np.random.default_rng(0)
    proxy, gold = rng.normal(size=9), rng.normal(size=9)
    assert bon_estimate(proxy, gold, 1) == pytest.approx((proxy.mean(), gold.mean()))
    assert bon_estimate(proxy, gold, 9) == pytest.approx((proxy.max(), gold[proxy.argmax()]))


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_continuous(seed):
    rng = np.random.default_rng(seed)
    proxy, gold = rng.normal(size=8).tolist(), rng.normal(size=8).tolist()
    for n in range(1, 9):
        assert bon_estimate(proxy, gold, n) == pytest.approx(brute_force(proxy, gold, n), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_with_ties(seed):
    # Integer proxies in {0,1,2}: many ties, so the tie convention matters and must agree with brute force.
    rng = np.random.default_rng(100 + seed)
    proxy = rng.integers(0, 3, size=7).astype(float).tolist()
    gold = rng.normal(size=7).tolist()
    for n in range(1, 8):
        assert bon_estimate(proxy, gold, n) == pytest.approx(brute_force(proxy, gold, n), rel=1e-9, abs=1e-12)


def test_tie_result_does_not_depend_on_input_order():
    proxy, gold = [1.0, 1.0, 0.0, 1.0], [3.0, -1.0, 7.0, 0.5]
    perm = [3, 2, 0, 1]
    for n in (1, 2, 3):
        a = bon_estimate(proxy, gold, n)
        b = bon_estimate([proxy[i] for i in perm], [gold[i] for i in perm], n)
        assert a == pytest.approx(b)


def test_weights_are_stable_for_large_N():
    w = subset_best_weights(2000, 1024)
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
    assert w[:1023].sum() == 0.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"n=4 must be in \[1, N=3\]"):
        bon_estimate([1, 2, 3], [1, 2, 3], 4)
    with pytest.raises(ValueError, match="gold has 2"):
        bon_estimate([1, 2, 3], [1, 2], 1)
    with pytest.raises(ValueError, match="non-finite"):
        bon_estimate([1, float("nan")], [1, 2], 1)


def test_bon_curve_averages_prompts_and_roundtrips():
    proxy = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    gold = torch.tensor([[10.0, 0.0, 5.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    c = bon_curve(proxy, gold)
    assert c.ns == [1, 2, 4] and c.n_prompts == 2 and c.n_samples == 4
    assert c.kl == pytest.approx([kl_bon(1), kl_bon(2), kl_bon(4)])
    # n=4 is the max-proxy sample: gold 10 and 1 -> mean 5.5; n=1 is the mean: 4 and 2.5 -> 3.25.
    assert c.gold[2] == pytest.approx(5.5) and c.gold[0] == pytest.approx(3.25)
    expected_n2 = (brute_force(proxy[0].tolist(), gold[0].tolist(), 2)[1]
                   + brute_force(proxy[1].tolist(), gold[1].tolist(), 2)[1]) / 2
    assert c.gold[1] == pytest.approx(expected_n2)
    assert c.gold_sem[2] == pytest.approx(np.std([10.0, 1.0], ddof=1) / math.sqrt(2))
    assert c.gold_std == pytest.approx(gold.double().std(unbiased=False).item())
    assert BoNCurve.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match=r"\[P, N\]"):
        bon_curve([1.0, 2.0], [1.0, 2.0])
