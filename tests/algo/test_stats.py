"""Confidence intervals and significance-gated verdicts on data whose answer is known."""

import itertools
import math

import numpy as np
import pytest

from umm_ray.algo.stats import (Interval, bon_win_rates, bootstrap, drop_ci, drop_from_peak, curve_mean, mean_ci,
                                paired_diff_ci, significance_word, wilson_interval)


def test_wilson_interval_known_values():
    iv = wilson_interval(50, 100)
    assert iv.value == 0.5 and iv.lo == pytest.approx(0.4038, abs=1e-3) and iv.hi == pytest.approx(0.5962, abs=1e-3)
    edge = wilson_interval(0, 10)
    assert edge.lo == 0.0 and 0.2 < edge.hi < 0.35  # stays inside [0, 1], unlike the normal interval
    with pytest.raises(ValueError, match="correct=11, n=10"):
        wilson_interval(11, 10)


def test_mean_ci_covers_truth_and_shrinks_with_data():
    rng = np.random.default_rng(0)
    small, large = mean_ci(rng.normal(1.0, 1.0, 50)), mean_ci(rng.normal(1.0, 1.0, 2000))
    assert small.lo < 1.0 < small.hi and large.lo < 1.0 < large.hi
    assert (large.hi - large.lo) < 0.5 * (small.hi - small.lo)
    # width ~ 2 * 1.96 / sqrt(n) for unit variance
    assert (large.hi - large.lo) == pytest.approx(2 * 1.96 / math.sqrt(2000), rel=0.15)


def test_bootstrap_is_seeded():
    x = np.random.default_rng(1).normal(size=100)
    assert mean_ci(x) == mean_ci(x)
    assert mean_ci(x, seed=1) != mean_ci(x, seed=2)



@pytest.mark.parametrize("shape,seeded", [((50,), False), ((3, 40), True), ((1, 40), True), ((30, 4), False)])
def test_mean_ci_is_the_bootstrap_of_the_mean(shape, seeded):
    """The vectorised mean_ci draws the same resamples as the generic bootstrap, one draw at a time."""
    x = np.random.default_rng(7).normal(size=shape)
    generic = bootstrap(lambda v: v.mean(), x, seeded=seeded, n_boot=500, seed=3)
    fast = mean_ci(x, seeded=seeded, n_boot=500, seed=3)
    assert (fast.value, fast.lo, fast.hi) == pytest.approx((generic.value, generic.lo, generic.hi), abs=1e-12)

def _curves(rng, peak_then_drop: float, n_prompts=200, k=6, noise=0.3):
    """Per-prompt gold curves rising to the middle, then falling by `peak_then_drop` by the end."""
    base = np.concatenate([np.linspace(0, 1, k // 2), 1 - peak_then_drop * np.linspace(0, 1, k - k // 2 + 1)[1:]])
    return base[None, :] + rng.normal(0, noise, size=(n_prompts, k))


def test_identical_rms_are_never_significant():
    rng = np.random.default_rng(2)
    dense = _curves(rng, 0.8)
    diff = paired_diff_ci(lambda c: drop_from_peak(curve_mean(c)), dense, dense.copy())
    assert diff.value == 0 and diff.lo == 0 and diff.hi == 0
    assert significance_word(diff).startswith("no significant difference")


def test_same_distribution_is_not_significant():
    """Two RMs whose curves come from the same process (independent noise): the verdict must not pick a side."""
    rng = np.random.default_rng(3)
    a, b = _curves(rng, 0.5, noise=0.5), _curves(rng, 0.5, noise=0.5)
    diff = paired_diff_ci(lambda c: drop_from_peak(curve_mean(c)), a, b)
    assert not diff.excludes_zero()
    assert significance_word(diff).startswith("no significant difference")


def test_clearly_better_rm_mitigates_and_worse_worsens():
    rng = np.random.default_rng(4)
    dense, robust = _curves(rng, 0.9), _curves(rng, 0.0)
    stat = lambda c: drop_from_peak(curve_mean(c))  # noqa: E731
    better = paired_diff_ci(stat, robust, dense)
    assert better.hi < 0 and significance_word(better).startswith("MITIGATES")
    worse = paired_diff_ci(stat, dense, robust)
    assert worse.lo > 0 and significance_word(worse).startswith("WORSENS")


def test_seeds_widen_the_interval():
    """Across seeds that disagree, the hierarchical bootstrap is wider than one seed's prompt bootstrap."""
    rng = np.random.default_rng(5)
    seeds = np.stack([_curves(rng, d, noise=0.2) for d in (0.2, 0.9, 0.5)])  # [S=3, P, K]
    one = drop_ci(seeds[0])
    pooled = drop_ci(seeds, seeded=True)
    assert (pooled.hi - pooled.lo) > (one.hi - one.lo)


def test_bon_win_rate_matches_brute_force():
    rng = np.random.default_rng(6)
    proxy = rng.integers(0, 3, size=(4, 5)).astype(float)  # ties in proxy on purpose
    gold = rng.normal(size=(4, 5))
    ns = [1, 2, 3, 5]
    got = bon_win_rates(proxy, gold, ns)
    for k, n in enumerate(ns):
        total = 0.0
        for p, g in zip(proxy, gold):
            per_subset = []
            for subset in itertools.combinations(range(5), n):
                best = max(p[list(subset)])
                winners = [i for i in subset if p[i] == best]  # ties broken uniformly at random
                per_subset.append(np.mean([np.mean([(g[i] > g[j]) + 0.5 * (g[i] == g[j]) for j in range(5)])
                                           for i in winners]))
            total += np.mean(per_subset)
        assert got[k] == pytest.approx(total / 4, abs=1e-12)
    assert got[0] == pytest.approx(0.5)


def test_bon_win_rate_direction():
    rng = np.random.default_rng(7)
    gold = rng.normal(size=(50, 16))
    good = bon_win_rates(gold, gold, [1, 4, 16])
    bad = bon_win_rates(-gold, gold, [1, 4, 16])
    assert good[0] == pytest.approx(0.5) and good[1] > 0.75 and good[2] > 0.95
    assert bad[2] < 0.05
    with pytest.raises(ValueError, match="every n must be in"):
        bon_win_rates(gold, gold, [32])


def test_interval_format():
    assert Interval(0.5, 0.4, 0.6).fmt() == "0.5 [0.4, 0.6]"
