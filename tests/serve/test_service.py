"""What a serve replica loads (no Ray): dense, MoE and ensemble reward models, and the ensemble aggregates."""

from __future__ import annotations

import pytest

from umm_ray.models.reward_model import load_reward_model, load_scorer
from umm_ray.serve.service import RewardService, load_service


def test_dense_service_matches_the_scorer(tiny_rms, pairs):
    prompts, responses = pairs
    svc = load_service(str(tiny_rms["dense"]))
    out = svc.score_all(prompts, responses)
    assert svc.names == ["dense"] and len(svc.members) == 1
    assert out.rewards == pytest.approx(load_scorer(tiny_rms["dense"]).score(prompts, responses), abs=1e-5)
    assert out.member_scores == [out.rewards]
    assert "<|eos|>" in svc.special_tokens and "<|pad|>" in svc.special_tokens


@pytest.mark.parametrize("how, lam", [("mean", 0.0), ("wco", 0.0), ("uwo", 0.5)])
def test_ensemble_service_aggregates_member_scores(tiny_rms, pairs, how, lam):
    prompts, responses = pairs
    svc = load_service(str(tiny_rms["ensemble"]), how=how, lam=lam)
    out = svc.score_all(prompts, responses)
    assert svc.names == ["m0", "m1", "m2"]
    for j, name in enumerate(svc.names):
        assert out.member_scores[j] == pytest.approx(load_scorer(tiny_rms[name]).score(prompts, responses), abs=1e-5)
    for i in range(len(prompts)):  # by hand: mean, min, mean - lam * population variance
        col = [out.member_scores[j][i] for j in range(3)]
        mean = sum(col) / 3
        want = {"mean": mean, "wco": min(col), "uwo": mean - lam * sum((c - mean) ** 2 for c in col) / 3}[how]
        assert out.rewards[i] == pytest.approx(want, abs=1e-5)
    assert len(set(round(x, 4) for x in out.member_scores[0] + out.member_scores[1])) > 8  # members differ


def test_unmerged_moe_dir_serves_and_equals_dense_at_upcycle(tiny_rms, pairs, tmp_path):
    from umm_ray.models.upcycle import save_moe, upcycle

    model, tok = load_reward_model(tiny_rms["dense"])
    moe_dir = save_moe(upcycle(model, num_experts=3, top_k=2, seed=1).eval(), tok, tmp_path / "moe")
    prompts, responses = pairs
    moe = load_service(str(moe_dir)).score(prompts, responses)
    dense = load_service(str(tiny_rms["dense"])).score(prompts, responses)
    assert moe == pytest.approx(dense, abs=1e-4)  # routing weights sum to 1: MoE == dense at initialisation


def test_testbed_gold_service(pairs):
    from umm_ray.testbed.gold import TestbedGold

    prompts, responses = pairs
    assert load_service("testbed").score(prompts, responses) == TestbedGold().score(prompts, responses)


def test_missing_path_and_bad_members_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_service(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="one name per member"):
        RewardService([], [])


def test_member_returning_wrong_count_is_an_error():
    class Short:
        def score(self, prompts, responses):
            return [0.0]

    with pytest.raises(RuntimeError, match="member short returned 1 scores for 2 items"):
        RewardService([Short(), Short()], ["short", "other"]).score(["a", "b"], ["c", "d"])


def test_trust_remote_code_reaches_the_served_model(tmp_path, pairs):
    """model.trust_remote_code (via ServeSpec): the checkpoint's own code, which adds a bonus to every score, runs
    only with the flag."""
    from tests.remote_code import REMOTE_BONUS, save_remote_rm

    prompts, responses = pairs
    path = save_remote_rm(tmp_path / "rm")
    plain = load_service(path).score(prompts, responses)
    remote = load_service(path, trust_remote_code=True).score(prompts, responses)
    assert remote == pytest.approx([s + REMOTE_BONUS for s in plain], abs=1e-3)
