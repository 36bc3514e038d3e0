"""Best-of-N over-optimisation curves: N samples per prompt from the SFT policy, scored by every proxy RM and the gold.

    ray job submit ... -- python -m jobs.bon --preset tiny \\
        --bon.rms "dense=runs/default/rm/dense,ens-uwo=runs/default/rm/ensemble.json#uwo:0.5"

Defaults: policy `<output_dir>/sft/model` (or --bon.policy_path), prompts `<output_dir>/prepare/prompts_bon.jsonl`
(or --bon.prompts), proxy `reward.proxy_path` named `reward.proxy` when --bon.rms is empty, gold `reward.gold`.
Writes `<output_dir>/bon/{bon.json, scores.json, samples.jsonl, config.yaml}` and prints gold/proxy per n.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.common import init_ray, parse_job_args, record_config
from umm_ray.config import Config
from umm_ray.eval.bon import curve_table, run_bon
from umm_ray.reward_source import RewardSource, parse_named_sources, source_from_config


def resolve_inputs(cfg: Config) -> tuple[str, dict[str, RewardSource], RewardSource]:
    """(policy path, {name: proxy}, gold) from the config, failing before any compute when something is missing."""
    policy = cfg.bon.policy_path or str(Path(cfg.run.output_dir) / "sft" / "model")
    if not Path(policy).exists() and not cfg.bon.policy_path:
        raise FileNotFoundError(f"{policy}: no SFT policy; run `python -m jobs.sft` first or set --bon.policy_path")
    if cfg.bon.rms:
        sources = parse_named_sources(cfg.bon.rms, "bon.rms")
    elif cfg.reward.proxy_path:
        sources = {cfg.reward.proxy: RewardSource.parse(cfg.reward.proxy_path, "reward.proxy_path")}
    else:
        raise ValueError("no proxy RM to evaluate: set --bon.rms name=path,... or --reward.proxy_path")
    for name, source in sources.items():
        source.check_exists(f"RM {name!r}")
    gold = source_from_config(cfg.reward.gold, cfg.reward.remote_url, "reward.gold").check_exists("reward.gold")
    return policy, sources, gold


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_job_args(argv, "bon")
    try:
        policy, sources, gold = resolve_inputs(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"bon: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    init_ray(cfg)
    out = record_config(cfg, "bon")
    curves = run_bon(cfg, policy, sources, gold, out_dir=out)
    print(curve_table(curves))
    print(f"wrote {out / 'bon.json'}")
    return curves


if __name__ == "__main__":
    main()
