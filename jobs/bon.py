"""Best-of-N over-optimisation curves: N samples per prompt from the SFT policy, scored by every proxy RM and the gold.

    ray job submit ... -- python -m jobs.bon --preset tiny \\
        --bon.rms "dense=runs/default/rm/dense,ens-uwo=runs/default/rm/ensemble.json#uwo:0.5"

Defaults: policy `<output_dir>/sft/model` (or --bon.policy_path), prompts `<output_dir>/prepare/prompts_bon.jsonl`
(or --bon.prompts), the `reward.proxy` / `reward.proxy_path` proxy (named by its kind) when --bon.rms is empty, gold
`reward.gold`.
Writes `<output_dir>/bon/{bon.json, scores.json, samples.jsonl, config.yaml}` and prints gold/proxy per n.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.common import init_ray, parse_job_args, record_config
from umm_ray.actors.reward import proxy_source
from umm_ray.config import Config
from umm_ray.eval.bon import RMSpec, curve_table, parse_rm_entries, run_bon


def resolve_inputs(cfg: Config) -> tuple[str, dict[str, RMSpec]]:
    """(policy path, {name: RMSpec}) from the config, failing before any compute when something is missing."""
    policy = cfg.bon.policy_path or str(Path(cfg.run.output_dir) / "sft" / "model")
    if not Path(policy).exists() and not cfg.bon.policy_path:
        raise FileNotFoundError(f"{policy}: no SFT policy; run `python -m jobs.sft` first or set --bon.policy_path")
    if cfg.bon.rms:
        specs = parse_rm_entries(cfg.bon.rms)
    elif cfg.reward.proxy == "auto" and not cfg.reward.proxy_path:
        raise ValueError("no proxy RM to evaluate: set --bon.rms name=path,... or --reward.proxy_path (or "
                         "--reward.proxy dense|umm|moe|ensemble for the jobs.train_rm output)")
    else:
        text, kind = proxy_source(cfg)
        specs = {kind: RMSpec.parse(text)}
    for name, spec in specs.items():
        if not spec.path.startswith(("http://", "https://")) and not Path(spec.path).exists():
            raise FileNotFoundError(f"RM {name!r}: {spec.path} does not exist")
    return policy, specs


def main(argv: list[str] | None = None) -> dict:
    cfg = parse_job_args(argv, "bon")
    try:
        policy, specs = resolve_inputs(cfg)
    except (FileNotFoundError, ValueError) as e:
        print(f"bon: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    init_ray(cfg)
    out = record_config(cfg, "bon")
    curves = run_bon(cfg, policy, specs, cfg.reward.gold, out_dir=out)
    print(curve_table(curves))
    print(f"wrote {out / 'bon.json'}")
    return curves


if __name__ == "__main__":
    main()
