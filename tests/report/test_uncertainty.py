"""Intervals and significance-gated verdicts on report rows whose answer is known, checked both ways."""

import numpy as np
import pytest

from tests.fixtures import bon_scores, ppo_curves
from tests.fixtures import report_row as row
from umm_ray.algo.stats import wilson_interval
from umm_ray.report.records import PPOCurve
from umm_ray.report.uncertainty import (
    BoNData,
    PPOData,
    accuracy_diff,
    accuracy_interval,
    bon_diffs,
    ppo_diffs,
    ppo_intervals,
    row_stats,
)
from umm_ray.report.verdict import head_word, verdict

N_BOOT = 300  # enough for the clear-cut cases below; keeps the tests fast


def test_accuracy_interval_one_seed_is_wilson_and_seeds_bootstrap():
    one = accuracy_interval([[1] * 30 + [0] * 10])
    assert one == wilson_interval(30, 40) and one.lo == pytest.approx(0.598, abs=1e-3)
    rng = np.random.default_rng(0)
    two = accuracy_interval([rng.permutation([1.0] * 140 + [0.0] * 60).tolist() for _ in range(2)])
    assert two.value == pytest.approx(0.7) and 0.6 < two.lo < 0.7 < two.hi < 0.8
    assert accuracy_interval(None) is None


def test_accuracy_vs_dense_is_paired_over_the_same_pairs_and_said_in_the_verdict():
    rng = np.random.default_rng(3)
    bon, ppo = bon_scores(rng, hacked=True), ppo_curves(rng, 0.8)
    dense_won = [[1.0] * 110 + [0.0] * 90]  # 0.55 and 0.65 on the same 200 pairs: the two Wilson intervals overlap,
    umm_won = [[1.0] * 130 + [0.0] * 70]  # but the UMM wins every pair dense wins, and 20 more
    dense, umm = row("dense", "dense", bon, ppo, acc=dense_won), row("umm-2", "umm", bon, ppo, acc=umm_won)
    twin = row("umm-4", "umm", bon, ppo, acc=[rng.permutation(dense_won[0]).tolist()])  # as accurate, other pairs
    assert accuracy_interval(umm_won).lo < accuracy_interval(dense_won).hi
    d = row_stats(umm, dense, N_BOOT).vs_dense["acc_test"]
    assert d.value == pytest.approx(0.1) and 0.05 < d.lo < 0.1 < d.hi < 0.15
    st_d = row_stats(dense, dense, N_BOOT)
    assert "acc_test" not in (st_d.vs_dense or {})  # the reference is not compared with itself
    text = verdict(umm, dense, row_stats(umm, dense, N_BOOT), st_d)
    assert "accuracy vs dense on the same pairs: test labels 0.1 [" in text and "(resolved)" in text
    t = row_stats(twin, dense, N_BOOT).vs_dense["acc_test"]
    assert t.value == 0 and t.lo < 0 < t.hi and "(resolved)" not in verdict(twin, dense, row_stats(twin, dense), st_d)
    assert accuracy_diff(umm_won, [dense_won[0][:150]]) is None and accuracy_diff(None, dense_won) is None


def test_identical_rms_are_never_significant_and_say_so():
    rng = np.random.default_rng(1)
    bon, ppo = bon_scores(rng, hacked=True), ppo_curves(rng, 0.8)
    dense, twin = row("dense", "dense", bon, ppo), row("umm-2", "umm", bon, ppo)
    st_d, st_t = row_stats(dense, dense, N_BOOT), row_stats(twin, dense, N_BOOT)
    assert all(not iv.excludes_zero() for iv in st_t.vs_dense.values())
    text = verdict(twin, dense, st_t, st_d)
    assert text.startswith("NO SIGNIFICANT DIFFERENCE") and "-> no significant difference" in text


def test_clearly_robust_rm_mitigates_and_hackable_one_worsens():
    rng = np.random.default_rng(2)
    dense = row("dense", "dense", bon_scores(rng, hacked=True), ppo_curves(rng, 0.8))
    robust = row("umm-4", "umm", bon_scores(rng, hacked=False), ppo_curves(rng, 0.0))
    st_d = row_stats(dense, dense, N_BOOT)
    assert st_d.bon["drop"].lo > 0 and st_d.ppo["drop"].lo > 0  # the reference over-optimises, beyond the noise
    assert "over-optimised" in verdict(dense, dense, st_d, None)
    st_r = row_stats(robust, dense, N_BOOT)
    assert st_r.vs_dense["bon_drop"].hi < 0 and st_r.vs_dense["ppo_drop"].hi < 0
    assert verdict(robust, dense, st_r, st_d).startswith("MITIGATES. ")
    # The other way round: against a robust reference that does not over-optimise, there is nothing to grade ...
    st_rr = row_stats(robust, robust, N_BOOT)
    flipped = row_stats(dense, robust, N_BOOT)
    assert "dense shows no significant over-optimisation" in verdict(dense, robust, flipped, st_rr)
    # ... and against a mildly over-optimising reference, the hackable RM worsens.
    mild = row("dense", "dense", bon_scores(rng, hacked=True), ppo_curves(rng, 0.3))
    worse = row("moe-4", "moe", bon_scores(rng, hacked=True), ppo_curves(rng, 1.5))
    st_m = row_stats(mild, mild, N_BOOT)
    st_w = row_stats(worse, mild, N_BOOT)
    assert st_w.vs_dense["ppo_drop"].lo > 0
    assert "PPO: gold drop vs dense" in verdict(worse, mild, st_w, st_m)
    assert verdict(worse, mild, st_w, st_m).startswith(("WORSENS", "MIXED"))


def test_head_word_combines_methods():
    assert head_word({"bon": "M", "ppo": "M"}) == "MITIGATES. "
    assert head_word({"bon": "M", "ppo": "W"}) == "MIXED. "
    assert head_word({"bon": "M", "ppo": "N"}) == "MITIGATES under BoN only. "
    assert head_word({"bon": "", "ppo": "W"}) == "WORSENS. "
    assert head_word({"bon": "N"}) == "NO SIGNIFICANT DIFFERENCE. "
    assert head_word({"bon": ""}) == ""


def test_one_seed_ppo_interval_comes_from_rollout_noise_and_shrinks_with_batch():
    rng = np.random.default_rng(3)
    small = PPOData.from_curves(ppo_curves(rng, 0.5, seeds=1, batch=16))
    large = PPOData.from_curves(ppo_curves(rng, 0.5, seeds=1, batch=1024))
    a, b = ppo_intervals(small, N_BOOT)["drop"], ppo_intervals(large, N_BOOT)["drop"]
    assert a.lo < a.value < a.hi and (b.hi - b.lo) < 0.5 * (a.hi - a.lo)
    no_sd = PPOCurve(steps=[0, 1, 2], kl=[0, 1, 2], gold=[0, 1, 0], proxy=[0, 1, 2])
    assert not PPOData.from_curves([no_sd]).has_noise  # nothing to draw from: the report shows no interval


def test_paired_differences_reject_mismatched_inputs():
    rng = np.random.default_rng(4)
    a = BoNData.from_scores(*bon_scores(rng, False, seeds=1))
    b = BoNData.from_scores(*bon_scores(rng, False, seeds=2))
    with pytest.raises(ValueError, match="not the same prompts and seeds"):
        bon_diffs(a, b, N_BOOT)
    c = PPOData.from_curves(ppo_curves(rng, 0.1, seeds=1))
    d = PPOData.from_curves(ppo_curves(rng, 0.1, seeds=2))
    with pytest.raises(ValueError, match="not the same seeds"):
        ppo_diffs(c, d, N_BOOT)
    with pytest.raises(ValueError, match="different steps"):
        PPOData.from_curves(ppo_curves(rng, 0.1, seeds=1, steps=8) + ppo_curves(rng, 0.1, seeds=1, steps=9))


def _collapsing(rng, drop: float, seeds=2, steps=24, sd=0.3, batch=64) -> list[PPOCurve]:
    """Gold only falls (by `drop` over the run) while the proxy climbs: a regime with no gain to over-optimise."""
    t = np.arange(steps)
    return [PPOCurve(steps=t.tolist(), kl=(0.05 * t).tolist(),
                     gold=(-drop * t / steps + rng.normal(0, sd / np.sqrt(batch), steps)).tolist(),
                     proxy=(0.2 * t).tolist(), proxy_std0=1.0, gold_std0=1.0, gold_sd=[sd] * steps,
                     proxy_sd=[sd] * steps, batch_size=batch) for _ in range(seeds)]


def test_ppo_rise_interval_tells_a_rise_from_a_collapse():
    rng = np.random.default_rng(5)
    rising = ppo_intervals(PPOData.from_curves(ppo_curves(rng, 0.5)), N_BOOT)["rise"]
    assert rising.lo > 0.3  # the fixture's gold rises by 0.6 before it falls
    falling = ppo_intervals(PPOData.from_curves(_collapsing(rng, 0.5)), N_BOOT)["rise"]
    assert falling.lo <= 0 and falling.value == pytest.approx(0, abs=0.05)


def test_ppo_is_not_graded_when_dense_gold_never_rose():
    """A faster collapse is not 'worse over-optimisation': with no dense gain the PPO part says so and grades nothing,
    where the same drops after a real rise are graded WORSENS (test above)."""
    rng = np.random.default_rng(6)
    bon = bon_scores(rng, hacked=False)
    dense, fast = row("dense", "dense", bon, _collapsing(rng, 0.3)), row("umm-2", "umm", bon, _collapsing(rng, 1.2))
    st_d, st_f = row_stats(dense, dense, N_BOOT), row_stats(fast, dense, N_BOOT)
    assert st_f.vs_dense["ppo_drop"].lo > 0  # it does fall faster
    own = verdict(dense, dense, st_d, st_d)
    assert "never rose beyond its start" in own and "collapse, not over-optimisation" in own
    text = verdict(fast, dense, st_f, st_d)
    assert "PPO: dense's gold never rose here" in text and "under PPO" not in text and "WORSENS. " not in text


def test_an_unresolved_rise_is_not_called_a_collapse():
    """The smol run's dense PPO: gold up 0.23 to a late peak, but the rise interval reaches below 0. Not graded (no
    resolved gain), and not called a collapse either; a rise of exactly 0 (gold only fell) still is."""
    from umm_ray.algo.stats import Interval
    from umm_ray.report.fits import OveroptSummary
    from umm_ray.report.verdict import compare_to_reference, describe_reference

    s = OveroptSummary(peak_gold=0.569, peak_at=19, kl_at_peak=0.217, final_gold=0.522, final_kl=0.22,
                       drop_from_peak=0.047, drop_frac=0.2, proxy_gain=0.026, gold_gain=0.19, gap=-0.27,
                       gap_units="std")
    drop, unresolved, flat = Interval(0.047, 0, 0.33), Interval(0.234, -0.006, 0.46), Interval(0.0, -0.02, 0.05)
    text = describe_reference("ppo", s, drop, unresolved)
    assert "rise from the start is within the noise" in text and "no resolved gold gain" in text
    assert "collapse" not in text
    assert "never rose beyond its start" in describe_reference("ppo", s, drop, flat)
    diffs = {"ppo_drop": Interval(0.01, -0.2, 0.2), "ppo_final_gold": Interval(0.0, -0.2, 0.2)}
    line, word = compare_to_reference("ppo", diffs, drop, unresolved)
    assert word == "" and "rise is within the noise" in line and "collapse" not in line
    line, word = compare_to_reference("ppo", diffs, drop, flat)
    assert word == "" and "never rose here" in line
