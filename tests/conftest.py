"""Shared fixtures: a real local Ray cluster (small), tiny shared data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# On a loaded 2-core machine the raylet's agents can take longer than Ray's default 30 s to come up.
os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")


@pytest.fixture(scope="session")
def ray_local():
    """A real Ray cluster in this process, sized like a small node (logical CPUs exceed the 2 real cores)."""
    import ray

    if not ray.is_initialized():
        from jobs.common import start_local_ray

        start_local_ray(num_cpus=8, include_dashboard=False, log_to_driver=False,
                        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


@pytest.fixture
def shared_data() -> Path:
    """../shared/data beside the project; skips with a reason where it is absent (a user's clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (only present in the project's CI/dev machines)")
    return SHARED_DATA
