"""compare.parallel_ppo's check: N PPO runs at once need N copies of the PPO stage's placement groups on the cluster,
checked before any stage runs, with the most runs that do fit named in the error."""

from __future__ import annotations

import pytest

from jobs.common import PRESETS
from umm_ray.config import load_config
from umm_ray.plan import DoesNotFit, make_stages
from umm_ray.plan_cluster import local_cluster
from umm_ray.plan_parallel import check_parallel_ppo, parallel_ppo_plan


def _cfg(n: int):
    return load_config(None, ["--compare.parallel_ppo", str(n)], base=PRESETS["test"])


def _one_run_cpus(cfg) -> float:
    (stage,) = make_stages(cfg, local_cluster(logical_cpus=64), ("ppo",))
    return sum(r.cpus * r.count for r in stage.roles)


def test_parallel_ppo_runs_are_placed_in_groups_of_their_own():
    cfg = _cfg(3)
    cpus = _one_run_cpus(cfg)
    plan = parallel_ppo_plan(cfg, 3, local_cluster(logical_cpus=3 * cpus))
    assert plan.ok
    (stage,) = plan.stages
    groups = {g.name for g in stage.groups()}
    assert all(any(name.startswith(f"run{j}:") for name in groups) for j in range(3))
    assert sum(r.cpus * r.count for r in stage.roles) == pytest.approx(3 * cpus)


def test_more_runs_than_the_cluster_holds_stop_before_any_stage_naming_the_key():
    cfg = _cfg(3)
    cpus = _one_run_cpus(cfg)
    check_parallel_ppo(cfg, local_cluster(logical_cpus=3 * cpus))  # fits: no error
    check_parallel_ppo(_cfg(1), local_cluster(logical_cpus=cpus))  # one run: nothing to check beyond PPO's own
    with pytest.raises(DoesNotFit, match=r"compare.parallel_ppo 3: the cluster holds 2 PPO run\(s\) at once; "
                                         r"use --compare.parallel_ppo 2"):
        check_parallel_ppo(cfg, local_cluster(logical_cpus=2 * cpus + 0.5))
