"""Placement groups: placed when resources exist, a clear error naming the shortfall when they never appear."""

from __future__ import annotations

import pytest
import ray

from umm_ray.actors.placement import PlacementError, in_group, make_placement_group, release
from umm_ray.resources import RoleResources


def test_pack_group_places_actors_in_its_bundles(ray_local):
    pg = make_placement_group("t-pack", [RoleResources("t", 1, 0).bundle()] * 2, "PACK", timeout_s=120)
    try:
        @ray.remote(num_cpus=1)
        def where():
            return ray.get_runtime_context().get_placement_group_id()

        ids = ray.get([where.options(scheduling_strategy=in_group(pg, i)).remote() for i in range(2)])
        assert ids == [pg.id.hex()] * 2
    finally:
        release(pg)


def test_unplaceable_group_names_the_missing_resources(ray_local):
    with pytest.raises(PlacementError, match=r"'t-huge' \(1 bundles, SPREAD\) was not placed within 2s; "
                                             r"resources: CPU: need 1000, cluster total 8"):
        make_placement_group("t-huge", [RoleResources("t", 1000, 0).bundle()], "SPREAD", timeout_s=2)
    with pytest.raises(PlacementError, match="GPU: need 1, cluster total 0"):
        make_placement_group("t-gpu", [RoleResources("t", 1, 1).bundle()], timeout_s=2)
