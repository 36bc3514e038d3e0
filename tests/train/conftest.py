"""Fixtures for the training-stage tests: a small prepared testbed world with gold-labelled preference pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.common import PRESETS
from tests.fixtures import write_testbed_pairs
from umm_ray.config import load_config


def tiny_cfg(out: Path, *overrides: str):
    """The 'test' preset in `out`, with a local Ray cluster and the given dotted overrides."""
    return load_config(None, ["--run.output_dir", str(out), "--run.ray_address", "local", *overrides],
                       base=PRESETS["test"])


@pytest.fixture(scope="session")
def make_cfg():
    """`make_cfg(out, *overrides)`: the 'test' preset writing to `out` (a fixture: importlib mode has no conftest
    imports)."""
    return tiny_cfg


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """(cfg, world): a prepared 'test'-preset world (600 prompts) with ~600 gold-labelled pairs (10% label noise)."""
    from umm_ray.testbed.prepare import prepare_world

    out = tmp_path_factory.mktemp("world")
    cfg = tiny_cfg(out, "--testbed.n_prompts", "600")
    world = prepare_world(cfg)
    write_testbed_pairs(world, noise=0.1, seed=0)
    return cfg, world
