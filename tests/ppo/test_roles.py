"""The PPO roles as `start_roles` builds them from the config, on a real local Ray cluster.

model.trust_remote_code must reach every actor that loads a model: the policy ranks, the rollout engines, the
reference and the reward actors. A checkpoint that carries its own modelling code loads in all of them with the flag,
and is refused without it.
"""

from __future__ import annotations

import pytest
import ray

from tests.remote_code import REMOTE_BONUS, save_remote_lm, save_remote_rm

PROMPTS = ["Add 4 and 5.\nAnswer:", "Name a colour.\nAnswer:"]


def _cfg(*overrides: str):
    from umm_ray.config import load_config

    return load_config(None, ["--rollout.backend", "hf", "--rollout.max_new_tokens", "4", "--ppo.micro_batch_size",
                              "2", "--model.max_seq_len", "128", *overrides])


def test_trust_remote_code_reaches_every_role(ray_local, tmp_path):
    from umm_ray.actors.reward import RewardSpec
    from umm_ray.ppo.experience import make_policy_batch
    from umm_ray.ppo.roles import generate, start_roles

    policy = save_remote_lm(tmp_path / "policy")
    cfg = _cfg("--model.trust_remote_code", "true")
    proxy = RewardSpec.load(save_remote_rm(tmp_path / "rm"), "proxy", trust_remote_code=cfg.model.trust_remote_code)
    roles = start_roles(cfg, policy, [proxy], RewardSpec.load("testbed", "gold"))
    try:
        roll = generate(roles.engines, PROMPTS, seed=0)
        assert len(roll.responses) == len(PROMPTS)
        batch = make_policy_batch(roll.prompt_ids, [r or [0] for r in roll.response_ids], 0)
        ref = ray.get(roles.reference.logprobs_batch.remote(batch))
        logp, _ = roles.policy.forward_logprobs_values(batch)
        assert ref.shape == logp.shape == batch.response_mask.shape
        scores = roles.proxy.member_scores(PROMPTS, ["9", "red"])
        assert (scores > REMOTE_BONUS / 2).all()  # the RM's own code ran in the reward actor
    finally:
        roles.shutdown()


def test_without_trust_remote_code_an_engine_refuses_such_a_checkpoint(ray_local, tmp_path):
    from umm_ray.ppo.roles import make_engine

    engine = make_engine(_cfg(), save_remote_lm(tmp_path / "policy"))
    try:
        with pytest.raises(ray.exceptions.RayActorError, match="trust_remote_code"):
            ray.get(engine.ready.remote())
    finally:
        ray.kill(engine)
