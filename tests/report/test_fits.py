"""Gao et al. fits recover known coefficients; over-optimisation summaries on hand-made curves."""

import math

import numpy as np
import pytest

from umm_ray.report.fits import fit_curve, fit_gain, overopt_summary, smooth


def test_bon_fit_recovers_a_b_exactly_and_with_noise():
    kl = np.array([0.0, 0.19, 0.64, 1.45, 2.35, 3.3, 4.2])
    d = np.sqrt(kl)
    gold = 0.3 + d * (1.2 - 0.4 * d)
    fit = fit_curve("bon", kl, gold)
    assert (fit.a, fit.b, fit.r0) == pytest.approx((1.2, 0.4, 0.3))
    assert fit.rmse < 1e-12
    # Peak of d (a - b d) at a / 2b = 1.5 with gain a^2 / 4b = 0.9.
    assert fit.peak() == pytest.approx((1.5, 0.3 + 0.9))
    noisy = gold + np.random.default_rng(0).normal(0, 0.01, size=gold.size) * (d > 0)
    fit_n = fit_curve("bon", kl, noisy)
    assert fit_n.a == pytest.approx(1.2, abs=0.05) and fit_n.b == pytest.approx(0.4, abs=0.05)


def test_rl_fit_recovers_a_b():
    d = np.linspace(0.0, 6.0, 25)
    gold = -1.0 + d * (0.8 - 0.5 * np.log(np.where(d > 0, d, 1.0)))
    fit = fit_curve("rl", d ** 2, gold)
    assert (fit.a, fit.b, fit.r0) == pytest.approx((0.8, 0.5, -1.0))
    # dR/dd = a - b log d - b = 0 -> d* = exp(a/b - 1); R(d*) = r0 + b d*.
    d_star = math.exp(0.8 / 0.5 - 1)
    assert fit.peak() == pytest.approx((d_star, -1.0 + 0.5 * d_star))
    assert fit.predict([0.0])[0] == pytest.approx(-1.0)


def test_fit_errors_and_no_peak():
    with pytest.raises(ValueError, match="at least 2 points"):
        fit_gain("bon", [0.0, 1.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="not one of"):
        fit_gain("linear", [1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match=">= 0"):
        fit_curve("rl", [0.0, -1.0, 2.0], [0.0, 1.0, 2.0])
    rising = fit_curve("bon", [0.0, 1.0, 4.0], [0.0, 1.0, 2.0])  # straight line in d: b = 0
    assert rising.b == pytest.approx(0.0, abs=1e-12) and rising.peak() is None


def test_overopt_summary_hand_computed():
    steps = [0, 1, 2, 3, 4]
    kl = [0.0, 1.0, 2.0, 3.0, 4.0]
    gold = [0.0, 0.5, 0.8, 0.6, 0.2]
    proxy = [0.0, 1.0, 2.0, 3.0, 4.0]
    s = overopt_summary(steps, kl, gold, proxy)
    assert s.peak_gold == pytest.approx(0.8) and s.peak_at == 2 and s.kl_at_peak == 2.0
    assert s.final_gold == pytest.approx(0.2) and s.drop_from_peak == pytest.approx(0.6)
    assert s.drop_frac == pytest.approx(0.75)
    assert (s.proxy_gain, s.gold_gain, s.gap, s.gap_units) == pytest.approx((4.0, 0.2, 3.8, "raw"))
    scaled = overopt_summary(steps, kl, gold, proxy, proxy_scale=2.0, gold_scale=0.1)
    assert scaled.gap == pytest.approx(4.0 / 2.0 - 0.2 / 0.1) and scaled.gap_units == "std"


def test_smoothing_removes_single_step_spike():
    gold = [0.0, 0.1, 0.9, 0.2, 0.25, 0.3]
    assert smooth(gold, 3) == pytest.approx([0.05, 1.0 / 3, 0.4, 0.45, 0.25, 0.275])
    s = overopt_summary(range(6), range(6), gold, range(6), window=3)
    assert s.peak_at == 3 and s.peak_gold == pytest.approx(0.45)


@pytest.mark.parametrize("window", [1, 2, 5, 15, 200])
def test_smoothing_is_the_mean_of_each_shrinking_window(window):
    x = np.random.default_rng(window).normal(size=120)
    h = window // 2
    want = [x[max(0, i - h): i + h + 1].mean() for i in range(x.size)] if window > 1 else x
    assert smooth(x, window) == pytest.approx(want, abs=1e-12)
