"""Best-of-N over-optimisation curves: N samples per prompt from the SFT policy, scored by every proxy RM and the gold.

    python -m jobs.train_rm --rm.kind umm --moe.num_experts 4     # writes runs/default/rm_umm4/model
    ray job submit ... -- python -m jobs.bon --preset tiny --reward.proxy_path runs/default/rm_umm4/model
    python -m jobs.bon --bon.rms \\
        "dense=runs/default/rm_dense/model,ens-uwo=runs/default/rm_ensemble/manifest.json#uwo:0.5"

Defaults (`umm_ray.layout.RunLayout` of run.output_dir, i.e. what the stage graph writes): policy `<out>/sft/model`
(or --bon.policy_path), prompts `<out>/prepare/prompts_bon.jsonl` (or --bon.prompts), proxies --bon.rms, else one RM
from reward.proxy / reward.proxy_path (named by its kind; a kind with no path picks the RM of that kind
`jobs.train_rm` / `jobs.compare` trained: `<out>/rm_dense/model`, `<out>/rm_umm<moe.num_experts>/model`,
`<out>/rm_moe<n>/model`, `<out>/rm_ensemble/manifest.json`). Gold `reward.gold`. Writes `<out>/bon/{bon.json,
scores.json, samples.jsonl, config.yaml}` and prints gold/proxy per n.
"""

from __future__ import annotations

import sys

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray.config import Config
from umm_ray.eval.bon import curve_table, run_bon
from umm_ray.layout import RunLayout
from umm_ray.model_hub import check_model_input
from umm_ray.reward_source import RewardSource, parse_named_sources, proxy_source, source_from_config


def resolve_inputs(cfg: Config) -> tuple[str, dict[str, RewardSource], RewardSource]:
    """(policy path, {name: proxy}, gold) from the config, failing before any compute when something is missing."""
    policy = cfg.bon.policy_path or str(RunLayout(cfg.run.output_dir).sft_model)
    # a local directory or a hub id (each rollout actor then loads its own node's snapshot)
    check_model_input(policy, "SFT policy", "run `python -m jobs.sft` first or set --bon.policy_path")
    r = cfg.reward
    if cfg.bon.rms:
        sources = parse_named_sources(cfg.bon.rms, "bon.rms")
    else:
        proxy, kind = proxy_source(cfg)
        sources = {kind: proxy}
    for name, source in sources.items():
        source.check_exists(f"RM {name!r}")
    gold = source_from_config(r.gold, r.remote_url, "reward.gold").check_exists("reward.gold")
    return policy, sources, gold


def main(argv: list[str] | None = None) -> dict:
    cfg, dry = job_config(argv, "bon")
    if dry:
        dry_run(cfg, "bon", resolve=lambda: resolve_inputs(cfg))
    try:
        policy, sources, gold = resolve_inputs(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"bon: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    init_ray(cfg)
    out = record_config(cfg, RunLayout(cfg.run.output_dir).bon.name)
    curves = run_bon(cfg, policy, sources, gold, out_dir=out)
    print(curve_table(curves))
    print(f"wrote {out / 'bon.json'}")
    return curves


if __name__ == "__main__":
    main()
