"""cluster.yaml is a valid Ray autoscaler config (Ray's shipped schema, then `ray up`'s own preparation) and says
what the docs promise: GPU worker types that scale from zero, an idle timeout, the project installed with [gpu]."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


@pytest.fixture(scope="module")
def cluster() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_validates_against_rays_shipped_schema(cluster):
    jsonschema.validate(cluster, json.loads(SCHEMA.read_text()))


def test_schema_catches_a_broken_config(cluster):
    """The validation above can fail: a typo'd key or a non-integer resource is rejected."""
    schema = json.loads(SCHEMA.read_text())
    typo = copy.deepcopy(cluster)
    typo["idle_timout_minutes"] = 5
    bad_gpu = copy.deepcopy(cluster)
    bad_gpu["available_node_types"]["gpu_1x"]["resources"]["GPU"] = "one"
    for broken in (typo, bad_gpu):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


def test_passes_ray_up_preparation(cluster):
    """What `ray up` does before touching the cloud: merge provider defaults, docker checks, validate again."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(cluster))
    validate_config(prepared)
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def test_gpu_workers_scale_from_zero_and_fit_the_cluster_cap(cluster):
    types = cluster["available_node_types"]
    workers = {k: v for k, v in types.items() if k != cluster["head_node_type"]}
    gpu = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) > 0}
    assert len(gpu) >= 1, "no GPU worker type"
    for name, t in workers.items():
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cluster["max_workers"], name
    assert all(t["min_workers"] == 0 for t in gpu.values()), "GPU nodes should only exist while jobs need them"
    assert types[cluster["head_node_type"]]["resources"].get("GPU", 0) == 0
    assert cluster["idle_timeout_minutes"] > 0


def test_setup_installs_this_project_with_its_gpu_extra(cluster):
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "gpu" in extras
    mounts = {remote: local for remote, local in cluster["file_mounts"].items()}
    repo = next(remote for remote, local in mounts.items() if local in (".", "./"))
    assert any(f"cd {repo}" in c and 'pip install' in c and '-e ".[gpu]"' in c for c in cluster["setup_commands"])
    assert {".venv", "runs", ".git"} <= set(cluster["rsync_exclude"])


def test_docker_image_matches_installed_ray_and_python(cluster):
    """The node image's Ray must equal the Ray that submits jobs (Ray refuses mismatched clients)."""
    image = cluster["docker"]["image"]
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert f":{ray.__version__}-" in image, f"{image} vs installed ray {ray.__version__}"
    assert "py311" in image and requires == ">=3.11"


def test_every_node_mounts_shared_run_storage_at_one_path(cluster):
    """Run storage (umm_ray/storage.py): EFS mounted on each host by initialization_commands, bound into the
    container at the same path, and the documented output_dir under it."""
    init = " ".join(cluster["initialization_commands"])
    assert "mount -t nfs4" in init and "/mnt/shared" in init
    assert "-v /mnt/shared:/mnt/shared" in cluster["docker"]["run_options"]
    assert "--run.output_dir /mnt/shared/runs/" in (ROOT / "cluster.yaml").read_text()
    assert "--run.output_dir /mnt/shared/runs/" in (ROOT / "docs" / "cluster.md").read_text()
