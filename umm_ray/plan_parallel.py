"""Whether the compare job's PPO runs fit the cluster several at a time (`compare.parallel_ppo`).

Each concurrent run holds a role pool of its own for its whole duration (policy ranks, rollout engines, reference,
proxy and gold actors), so N runs at once need N copies of the PPO stage's placement groups placed together. A
pool kept alive while another run waits for room would never free it, so this is checked before any training,
not left to Ray's queue.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from umm_ray.config import Config
from umm_ray.plan import DoesNotFit, Plan, explain, make_stages, running_cluster
from umm_ray.plan_cluster import Cluster, place

log = logging.getLogger(__name__)


def parallel_ppo_plan(cfg: Config, n: int, cluster: Cluster) -> Plan:
    """The PPO stage's roles n times over, each copy in placement groups of its own ('run<j>:<group>')."""
    (stage,) = make_stages(cfg, cluster, ("ppo",))
    roles = tuple(replace(r, name=f"run {j}: {r.name}", group=f"run{j}:{r.group}") for j in range(n)
                  for r in stage.roles)
    copies = replace(stage, name=f"{n} PPO runs at once (compare.parallel_ppo)", roles=roles)
    return Plan(cluster, (replace(copies, placement=place(copies.groups(), cluster)),))


def check_parallel_ppo(cfg: Config, cluster: Cluster | None = None) -> None:
    """Stop before any stage runs when compare.parallel_ppo PPO runs cannot be placed at once.

    Raises:
        DoesNotFit: naming compare.parallel_ppo, what did not fit, and the most runs that do.
    """
    n = cfg.compare.parallel_ppo
    if n <= 1:
        return
    cluster = cluster or running_cluster()
    if cluster is None:
        log.info("compare.parallel_ppo %d: multi-node cluster; check it with `python -m jobs.plan --cluster <file>`", n)
        return
    plan = parallel_ppo_plan(cfg, n, cluster)
    if plan.ok:
        return
    fits = max((k for k in range(1, n) if parallel_ppo_plan(cfg, k, cluster).ok), default=0)
    raise DoesNotFit(explain(plan) + f"\n  compare.parallel_ppo {n}: the cluster holds {fits} PPO run(s) at once; "
                     f"use --compare.parallel_ppo {max(fits, 1)}")
