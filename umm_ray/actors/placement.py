"""Placement groups that wait for resources: (STRICT_)PACK for a rank group, SPREAD for ensemble members.

On an autoscaling cluster a placement group that cannot be placed yet makes the autoscaler add nodes, so we wait for
it (generously) instead of failing; if it still cannot be placed we stop with a message naming what is missing, rather
than leaving actors pending forever.
"""

from __future__ import annotations

import uuid

import ray
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

DEFAULT_TIMEOUT_S = 600.0


def on_single_cpu_node() -> bool:
    """Whether the running Ray cluster is one alive node with CPUs and no GPUs: where processes working at once
    (training runs, an ensemble's reward actors) would only share its cores."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    return len(nodes) == 1 and not nodes[0].get("GPU") and nodes[0].get("CPU", 0) > 0


class PlacementError(RuntimeError):
    """A placement group could not be placed in time; the message names the missing resources."""


def _missing(bundles: list[dict[str, float]]) -> str:
    """Describe the gap between what the bundles need and what the cluster has in total."""
    need: dict[str, float] = {}
    for b in bundles:
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v
    have_total = ray.cluster_resources()
    have_free = ray.available_resources()
    parts = [f"{k}: need {v:g}, cluster total {have_total.get(k, 0):g}, free {have_free.get(k, 0):g}"
             for k, v in sorted(need.items())]
    return "; ".join(parts)


def make_placement_group(name: str, bundles: list[dict[str, float]], strategy: str = "PACK",
                         timeout_s: float = DEFAULT_TIMEOUT_S) -> PlacementGroup:
    """Create a placement group and block until it is placed.

    Args:
        name: shown in errors and the Ray dashboard (e.g. "policy", "proxy-ensemble").
        bundles: one resource dict per actor, e.g. `[claim.bundle()] * 2` (claim: a RoleResources).
        strategy: PACK, STRICT_PACK (a GPU rank group on one node), SPREAD / STRICT_SPREAD (ensemble members).
        timeout_s: how long to wait for the cluster (or the autoscaler) to provide the resources.

    Raises:
        PlacementError: not placed within `timeout_s`; names the resources that are short.
    """
    if not bundles:
        raise ValueError(f"placement group {name!r}: no bundles")
    # Names must be unique among live groups; a suffix lets two runs (or two groups of one role) coexist.
    pg = placement_group(bundles, strategy=strategy, name=f"{name}-{uuid.uuid4().hex[:8]}")
    try:
        ray.get(pg.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        detail = _missing(bundles)
        remove_placement_group(pg)
        raise PlacementError(
            f"placement group {name!r} ({len(bundles)} bundles, {strategy}) was not placed within {timeout_s:g}s; "
            f"resources: {detail}. Add nodes / resources or lower the actor counts.") from None
    return pg


def in_group(pg: PlacementGroup, index: int) -> PlacementGroupSchedulingStrategy:
    """Scheduling strategy pinning an actor to bundle `index` of `pg`."""
    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index,
                                            placement_group_capture_child_tasks=True)


def release(pg: PlacementGroup | None) -> None:
    """Remove a placement group (its actors must be gone or no longer needed)."""
    if pg is not None:
        remove_placement_group(pg)
