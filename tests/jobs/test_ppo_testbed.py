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


@pytest.mark.slow
def test_ppo_raises_the_dense_proxy_without_kl(ray_local, tmp_path):
    from jobs.ppo import run_ppo
    from umm_ray import stages as S

    cfg = load_config(None, ["--run.output_dir", str(tmp_path), "--rollout.backend", "hf"], base=PRESETS["test"])
    S.prepare(cfg)
    S.sft(cfg)
    S.pairs(cfg, tmp_path / "pairs")
    rm = S.train_rm(cfg, "dense", {}, tmp_path / "rm_dense")
    ppo = dataclasses.replace(cfg.ppo, steps=24, rollout_batch_size=16, micro_batch_size=8, kl_coef=0.0,
                              actor_lr=3e-4, checkpoint_every=100)
    cfg = dataclasses.replace(cfg, ppo=ppo)
    out = run_ppo(cfg, str(tmp_path / "sft" / "model"), rm["model"], "testbed",
                  str(tmp_path / "prepare" / "prompts_ppo.jsonl"), tmp_path / "ppo")
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 25))
    first = sum(r["proxy_reward"] for r in rows[:6]) / 6
    last = sum(r["proxy_reward"] for r in rows[-6:]) / 6
    spread = sum(r["proxy_reward_std"] for r in rows[:6]) / 6
    # The proxy rises by a sizeable fraction of its initial per-sample spread, not by noise.
    assert last - first > 0.25 * spread, (first, last, spread)
    assert rows[-1]["kl_k2"] > rows[0]["kl_k2"]
