"""The main job: merged UMM-RM vs ensembles vs dense, under Best-of-N and PPO, with a report.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.compare --preset tiny

Stages (each cached in `<output_dir>/<stage>/` by the config keys it reads; `--compare.force sft,pairs` redoes some;
the wiring is `umm_ray.graph.StageGraph`):
prepare -> sft -> pairs -> RMs (dense, UMM per expert count with its unmerged MoE, ensemble, DMoERM with
--compare.dmoe) -> eval (accuracy,
throughput) -> bon (every RM on the same samples) -> ppo (dense, best UMM, ensemble mean/wco/uwo) -> report.

With `--compare.seeds K`, seeds 1..K-1 repeat the RM, eval, bon and ppo stages under `<output_dir>/seed<k>/` (seed 0
is the one-seed layout above), and the report's intervals and verdicts pool the seeds.

With `--rm.data` naming your own preferences (a file or hub dataset), prepare/sft/pairs give way to one `pairs` stage
that splits them; then `--ppo.policy_path`, `--ppo.prompts` and `--reward.gold` are required (checked at start).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray import stages as S
from umm_ray.graph import StageGraph
from umm_ray.pipeline import StageRunner
from umm_ray.plan_parallel import check_parallel_ppo
from umm_ray.ppo.roles import RolePool


def peak_rss_gb() -> float:
    """Peak RSS of this driver and of its finished children (Ray workers are reported by their own stages)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 2**20


def main(argv: list[str] | None = None) -> Path:
    t_start = time.time()
    cfg, dry = job_config(argv, "compare")
    if not S.uses_testbed(cfg):
        try:
            S.check_own_data(cfg)
        except ValueError as e:
            print(f"compare: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    try:  # a hub-id gold is first used at the BoN / PPO stages: check it exists now, not hours of RM training later
        S.gold_source(cfg).check_exists("reward.gold")
    except (ValueError, FileNotFoundError) as e:
        print(f"compare: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    root = Path(cfg.run.output_dir)
    runner = StageRunner(root, cfg, force=cfg.compare.force, dry_run=dry)
    if dry:
        dry_run(cfg, "compare", StageGraph(cfg, runner).compare)
    init_ray(cfg)
    record_config(cfg, "compare")
    check_parallel_ppo(cfg)  # N PPO runs at once need N role pools placed together: known now, not after the RMs
    # Each pool's PPO runs share policy, engines, reference and gold; only the proxy changes.
    pools = [RolePool() for _ in range(cfg.compare.parallel_ppo)]
    try:
        result = StageGraph(cfg, runner).compare(pools)
    finally:
        for pool in pools:
            pool.shutdown()

    notes = [f"Wall time {time.time() - t_start:.0f} s (stage seconds: "
             + ", ".join(f"{k} {v:.0f}{' cached' if runner.cached[k] else ''}" for k, v in runner.timings.items())
             + f"); driver peak RSS {peak_rss_gb():.2f} GB."]
    hh = S.hh_pairs_path(cfg)
    if hh:
        notes.append(f"acc HH: accuracy on the first {cfg.compare.hh_eval_pairs or 'all'} pairs of {hh} (real "
                     "Anthropic HH-RLHF); these RMs were trained on testbed pairs, so it measures transfer, not fit.")
    report = S.report(cfg, result, root / "report", notes)
    (root / "compare" / "timings.json").write_text(json.dumps({"timings": runner.timings,
                                                                "cached": runner.cached}, indent=1))
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
