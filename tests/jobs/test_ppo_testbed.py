"""PPO on the testbed for real: SFT policy, dense proxy RM trained on gold-labelled pairs, no KL penalty.

The whole pipeline runs (prepare -> sft -> pairs -> dense RM, with the `test` preset), then PPO must raise the proxy
reward it optimises. Minutes of CPU: marked slow.
"""

from __future__ import annotations

import dataclasses

import pytest

from jobs.common import PRESETS
from umm_ray.config import load_config
from umm_ray.report.metrics import read_metrics
from umm_ray.reward_source import RewardSource

GOLD = RewardSource("testbed")
src = RewardSource.parse


@pytest.mark.slow
def test_ppo_raises_the_dense_proxy_without_kl(ray_local, tmp_path):
    from umm_ray.ppo.driver import run_ppo
    from umm_ray import stages as S

    cfg = load_config(None, ["--run.output_dir", str(tmp_path), "--rollout.backend", "hf"], base=PRESETS["test"])
    S.prepare(cfg, tmp_path / "prepare")
    S.sft(cfg, tmp_path / "sft")
    S.pairs(cfg, tmp_path / "pairs")
    rm = S.train_rm(cfg, "dense", {}, tmp_path / "rm_dense")
    ppo = dataclasses.replace(cfg.ppo, steps=32, rollout_batch_size=32, micro_batch_size=16, kl_coef=0.0,
                              actor_lr=3e-4, checkpoint_every=100)
    cfg = dataclasses.replace(cfg, ppo=ppo)
    out = run_ppo(cfg, str(tmp_path / "sft" / "model"), src(rm["model"]), GOLD,
                  str(tmp_path / "prepare" / "prompts_ppo.jsonl"), tmp_path / "ppo")
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 33))
    first, last = rows[:8], rows[-8:]
    mean = lambda rs, k: sum(r[k] for r in rs) / len(rs)  # noqa: E731
    # Each window mean averages 8 x 32 samples; the rise must exceed 2.5 standard errors of the difference.
    se = ((mean(first, "proxy_reward_std") ** 2 + mean(last, "proxy_reward_std") ** 2) / (8 * 32)) ** 0.5
    rise = mean(last, "proxy_reward") - mean(first, "proxy_reward")
    assert rise > 2.5 * se, (rise, se)
    assert mean(last, "kl_k2") > mean(first, "kl_k2")
