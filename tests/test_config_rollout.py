"""The rollout section (its own module) and the other inference-precision keys: validation, help, and stage keys
that stay as they were while the new keys hold their defaults."""

from __future__ import annotations

import dataclasses

import pytest

from umm_ray.config import Config, ConfigError, describe, load_config
from umm_ray.pipeline import config_values


def test_new_keys_validate_and_have_help():
    cfg = load_config(None, ["--rollout.dtype", "bf16", "--rollout.enforce_eager", "false",
                             "--rollout.tensor_parallel_size", "2", "--ppo.reference_dtype", "fp32",
                             "--reward.gold_dtype", "bf16", "--reward.proxy_dtype", "fp16", "--ppo.gold_every", "5"])
    assert (cfg.rollout.dtype, cfg.rollout.enforce_eager, cfg.rollout.tensor_parallel_size) == ("bf16", "false", 2)
    assert (cfg.ppo.reference_dtype, cfg.reward.gold_dtype, cfg.reward.proxy_dtype, cfg.ppo.gold_every) == \
        ("fp32", "bf16", "fp16", 5)
    for bad, match in ((["--rollout.dtype", "float32"], "rollout.dtype: 'float32' is not one of"),
                       (["--rollout.enforce_eager", "maybe"], "rollout.enforce_eager: 'maybe' is not one of"),
                       (["--rollout.tensor_parallel_size", "0"], "rollout.tensor_parallel_size: 0 is below"),
                       (["--ppo.gold_every", "0"], "ppo.gold_every: 0 is below"),
                       (["--reward.gold_dtype", "int8"], "reward.gold_dtype: 'int8' is not one of")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, bad)
    lines = "\n".join(describe())
    for key in ("rollout.dtype", "rollout.enforce_eager", "rollout.tensor_parallel_size", "ppo.reference_dtype",
                "ppo.gold_every", "reward.proxy_dtype", "reward.gold_dtype"):
        assert f"--{key} (" in lines


def test_new_keys_stay_out_of_stage_keys_at_their_defaults():
    """A stage that reads the whole ppo / rollout section keys on the same values as before the new keys existed;
    a non-default value enters the key."""
    cfg = Config()
    keys = config_values(cfg, ["ppo", "rollout", "reward.proxy_dtype", "reward.gold_dtype"])
    for new in ("rollout.dtype", "rollout.enforce_eager", "rollout.tensor_parallel_size", "ppo.reference_dtype",
                "ppo.gold_every", "reward.proxy_dtype", "reward.gold_dtype"):
        assert new not in keys
    assert "rollout.backend" in keys and "ppo.steps" in keys
    changed = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, gold_every=3))
    assert config_values(changed, ["ppo"])["ppo.gold_every"] == 3


def test_tensor_parallel_needs_gpus_and_vllm():
    from umm_ray.ppo.roles import engine_gpus

    assert engine_gpus(load_config(None, [])) == 0.0
    assert engine_gpus(load_config(None, ["--run.num_gpus_per_actor", "1", "--rollout.tensor_parallel_size",
                                          "4"])) == 4.0
    with pytest.raises(ValueError, match=r"rollout.tensor_parallel_size=2 needs that many GPUs .* resources."
                                         r"rollout_gpus \(run.num_gpus_per_actor when -1\) is 0 \(a CPU run\)"):
        engine_gpus(load_config(None, ["--rollout.tensor_parallel_size", "2"]))
    with pytest.raises(ValueError, match="needs rollout.backend vllm"):
        engine_gpus(load_config(None, ["--run.num_gpus_per_actor", "1", "--rollout.tensor_parallel_size", "2",
                                       "--rollout.backend", "hf"]))
    with pytest.raises(ValueError, match="cannot share the policy ranks' one-GPU bundles"):
        engine_gpus(load_config(None, ["--run.num_gpus_per_actor", "1", "--rollout.tensor_parallel_size", "2",
                                       "--resources.colocate", "all", "--resources.policy_gpus", "0.5",
                                       "--resources.reference_gpus", "0.2", "--resources.rollout_gpus", "0.3"]))


def test_plan_shows_resolved_dtypes_and_tensor_parallel_gpus():
    """jobs.plan's PPO stage: on CPU the inference roles stay fp32 (as before), explicit dtypes are shown, and a
    tensor-parallel engine asks for tensor_parallel_size GPUs."""
    from umm_ray.plan import ppo_stage
    from umm_ray.plan_cluster import local_cluster

    cpu = {r.name: r for r in ppo_stage(load_config(None, []), local_cluster()).roles}
    assert {cpu[n].dtype for n in ("rollout engine (vLLM)", "reference", "proxy RM actor")} == {"fp32"}
    gpu = load_config(None, ["--run.num_gpus_per_actor", "1", "--rollout.tensor_parallel_size", "2",
                             "--reward.proxy_dtype", "fp32", "--ppo.reference_dtype", "fp16"])
    roles = {r.name: r for r in ppo_stage(gpu, local_cluster(gpus=8, gpu_memory=80 * 2**30)).roles}
    assert roles["rollout engine (vLLM)"].gpus == 2.0 and roles["rollout engine (vLLM)"].dtype == "bf16"
    assert roles["proxy RM actor"].dtype == "fp32" and roles["reference"].dtype == "fp16"


def test_engines_sleep_when_they_share_the_policy_gpus_or_when_told():
    from umm_ray.ppo.roles import engine_sleeps

    assert not engine_sleeps(load_config(None, []))
    assert engine_sleeps(load_config(None, ["--rollout.sleep_mode", "on"]))
    colocated = ["--run.num_gpus_per_actor", "1", "--resources.colocate", "all", "--resources.policy_gpus", "0.5",
                 "--resources.reference_gpus", "0.2", "--resources.rollout_gpus", "0.3"]
    assert engine_sleeps(load_config(None, colocated))
    assert not engine_sleeps(load_config(None, colocated + ["--rollout.sleep_mode", "off"]))
    assert not engine_sleeps(load_config(None, ["--run.num_gpus_per_actor", "1"]))  # own GPUs: nothing to share
