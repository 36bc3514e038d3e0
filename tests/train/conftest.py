"""Fixtures for the training-stage tests: a small prepared testbed world with gold-labelled preference pairs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from jobs.common import PRESETS
from umm_ray.config import load_config


def write_testbed_pairs(world, noise: float, seed: int, fracs=(0.7, 0.15, 0.15)) -> None:
    """Pairs of two programmatic SFT responses per prompt labelled by the testbed gold (`label_pairs`), split by
    prompt into world.pairs_{train,val,test} — the same kind of data the pairs stage writes from SFT samples."""
    from umm_ray.data import read_jsonl, split_pairs, write_jsonl
    from umm_ray.testbed.gold import TestbedGold
    from umm_ray.testbed.prepare import label_pairs

    by_prompt: dict[str, list[str]] = {}
    for _, row in read_jsonl(world.sft_data):
        if row["response"].strip():  # the world has a few whitespace-only answers; a comparison needs two texts
            by_prompt.setdefault(row["prompt"], []).append(row["response"])
    prompts, a, b = [], [], []
    for prompt, responses in by_prompt.items():
        for i in range(0, len(responses) - 1, 2):
            prompts.append(prompt)
            a.append(responses[i])
            b.append(responses[i + 1])
    pairs, _ = label_pairs(prompts, a, b, TestbedGold(), noise=noise, seed=seed)
    random.Random(seed).shuffle(pairs)
    for path, part in zip((world.pairs_train, world.pairs_val, world.pairs_test), split_pairs(pairs, fracs, seed)):
        write_jsonl(path, part)


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
