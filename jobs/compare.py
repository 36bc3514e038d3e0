"""The main job: merged UMM-RM vs ensembles vs dense, under Best-of-N and PPO, with a report.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.compare --preset tiny

Stages (each cached by its config slice in `<output_dir>/<stage>/`; `--compare.force sft,pairs` redoes some):
prepare -> sft -> pairs -> RMs (dense, UMM per expert count with its unmerged MoE, ensemble) -> eval (accuracy,
throughput) -> bon (every RM on the same samples) -> ppo (dense, best UMM, ensemble mean/wco/uwo) -> report.

With `--rm.data` naming your own preferences (a file or hub dataset), prepare/sft/pairs give way to one `pairs` stage
that splits them; then `--ppo.policy_path`, `--ppo.prompts` and `--reward.gold` are required (checked at start).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from jobs.common import init_ray, parse_job_args, record_config
from umm_ray import stages as S
from umm_ray.config import Config
from umm_ray.pipeline import Stage, StageRunner
from umm_ray.ppo.roles import RolePool


def rm_names(cfg: Config) -> dict[str, tuple[str, dict]]:
    """Display name -> (rm kind, extra key) for every RM the comparison trains."""
    names = {"dense": ("dense", {})}
    for n in cfg.compare.expert_counts:
        names[f"umm{n}"] = ("umm", {"num_experts": int(n)})
    names["ensemble"] = ("ensemble", {})
    return names


def peak_rss_gb() -> float:
    """Peak RSS of this driver and of its finished children (Ray workers are reported by their own stages)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 2**20


def main(argv: list[str] | None = None) -> Path:
    t_start = time.time()
    cfg = parse_job_args(argv, "compare")
    if not S.uses_testbed(cfg):
        try:
            S.check_own_data(cfg)
        except ValueError as e:
            print(f"compare: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    init_ray(cfg)
    record_config(cfg, "compare")
    root = Path(cfg.run.output_dir)
    runner = StageRunner(root, cfg, force=cfg.compare.force)

    if S.uses_testbed(cfg):  # the embedded world: a policy, prompts and gold-labelled preferences of our own
        runner.run(Stage("prepare", lambda out: S.prepare(cfg), sections=("run", "testbed", "model")))
        runner.run(Stage("sft", lambda out: S.sft(cfg), sections=("sft",), deps=("prepare",)))
        runner.run(Stage("pairs", lambda out: S.pairs(cfg, out), sections=("testbed", "rollout"), deps=("sft",)))
    else:  # the user's policy, prompts, preferences and gold RM
        runner.run(Stage("pairs", lambda out: S.own_pairs(cfg, out), sections=("run", "rm", "testbed")))

    rms = {}
    for name, (kind, extra) in rm_names(cfg).items():
        sections = ("rm", "moe", "merge") if kind == "umm" else ("rm", "ensemble") if kind == "ensemble" else ("rm",)
        rms[f"rm_{name}"] = runner.run(Stage(f"rm_{name}", lambda out, k=kind, e=extra: S.train_rm(cfg, k, e, out),
                                             sections=sections, deps=("pairs",), extra={"kind": kind, **extra}))
    proxies = S.proxy_specs(cfg, rms)
    rm_stages = tuple(rms)
    hh = S.hh_pairs_path(cfg)
    evals = runner.run(Stage("eval", lambda out: S.evaluate(cfg, proxies, out), sections=("rm",), deps=rm_stages,
                             extra={"hh": str(hh or ""), "hh_pairs": cfg.compare.hh_eval_pairs}))
    bon = runner.run(Stage("bon", lambda out: S.bon(cfg, proxies, out), sections=("bon", "rollout"), deps=rm_stages))

    ppo, pool = {}, RolePool()  # the PPO runs share policy, engines, reference and gold; only the proxy changes
    try:
        for name, proxy in S.ppo_proxies(cfg, evals, proxies).items():
            ppo[name] = runner.run(Stage(f"ppo_{name}", lambda out, p=proxy: S.ppo(cfg, p, out, pool),
                                         sections=("ppo", "rollout"), deps=(proxy.stage,),
                                         extra={"proxy": str(proxy.source)}))
    finally:
        pool.shutdown()

    notes = [f"Wall time {time.time() - t_start:.0f} s (stage seconds: "
             + ", ".join(f"{k} {v:.0f}{' cached' if runner.cached[k] else ''}" for k, v in runner.timings.items())
             + f"); driver peak RSS {peak_rss_gb():.2f} GB."]
    if hh:
        notes.append(f"acc HH: accuracy on the first {cfg.compare.hh_eval_pairs or 'all'} pairs of {hh} (real "
                     "Anthropic HH-RLHF); these RMs were trained on testbed pairs, so it measures transfer, not fit.")
    report = S.report(cfg, proxies, evals, bon, ppo, root / "report", notes)
    (root / "compare" / "timings.json").write_text(json.dumps({"timings": runner.timings,
                                                                "cached": runner.cached}, indent=1))
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
