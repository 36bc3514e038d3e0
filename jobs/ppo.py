"""PPO on Ray actors against one proxy RM, with the gold watching (the loop: `umm_ray.ppo.driver.run_ppo`).

    python -m jobs.train_rm --rm.kind dense                       # writes runs/default/rm_dense/model
    ray job submit ... -- python -m jobs.ppo --preset tiny --reward.proxy_path runs/default/rm_dense/model \\
        [--ppo.kl_coef 0.05] [--ppo.world_size 2 --ppo.zero_stage 2] [--rollout.backend hf]

Defaults (`umm_ray.layout.RunLayout` of run.output_dir, i.e. what the stage graph writes): policy `<out>/sft/model`
(or --ppo.policy_path), prompts `<out>/prepare/prompts_ppo.jsonl` (or --ppo.prompts), proxy --reward.proxy_path, else
the RM of kind reward.proxy that `jobs.train_rm` / `jobs.compare` trained: `<out>/rm_dense/model`,
`<out>/rm_umm<moe.num_experts>/model`, `<out>/rm_moe<moe.num_experts>/model` or `<out>/rm_ensemble/manifest.json`
(reward.proxy remote: reward.remote_url; a kind is checked against the checkpoint). An ensemble manifest may carry
'#wco' / '#uwo:0.1', else ensemble.aggregate. Gold `reward.gold`. Writes `<out>/ppo/`: metrics.jsonl, tb/,
checkpoints/, policy/ (final HF checkpoint), summary.json, config.yaml. Rerunning the same command resumes from the
latest checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray.config import Config
from umm_ray.layout import RunLayout
from umm_ray.model_hub import check_model_input
from umm_ray.ppo.driver import run_ppo
from umm_ray.reward_source import RewardSource, proxy_source, source_from_config


def resolve_inputs(cfg: Config) -> tuple[str, RewardSource, RewardSource, str]:
    """(policy, proxy, gold, prompts) from the config, failing before any compute when something is missing."""
    layout = RunLayout(cfg.run.output_dir)
    policy = cfg.ppo.policy_path or str(layout.sft_model)
    # a local directory or a hub id (each actor then loads its own node's snapshot: `model_hub.local_model`)
    check_model_input(policy, "policy", "run `python -m jobs.sft` first or set --ppo.policy_path")
    prompts = cfg.ppo.prompts or str(layout.prompts_ppo)
    if not cfg.ppo.prompts and not Path(prompts).exists():
        raise FileNotFoundError(f"{prompts}: no PPO prompts; run `python -m jobs.prepare` or set --ppo.prompts")
    r = cfg.reward
    proxy, _ = proxy_source(cfg)  # reward.proxy's kind is checked against the checkpoint
    gold = source_from_config(r.gold, r.remote_url, "reward.gold").check_exists("reward.gold")
    return policy, proxy, gold, prompts


def main(argv: list[str] | None = None) -> Path:
    cfg, dry = job_config(argv, "ppo")
    if dry:
        dry_run(cfg, "ppo", resolve=lambda: resolve_inputs(cfg))
    try:
        policy, proxy, gold, prompts = resolve_inputs(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"ppo: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    init_ray(cfg)
    out = record_config(cfg, RunLayout(cfg.run.output_dir).ppo_job.name)
    torch.manual_seed(cfg.run.seed)
    return run_ppo(cfg, policy, proxy, gold, prompts, out)


if __name__ == "__main__":
    main()
