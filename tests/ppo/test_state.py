"""PPO checkpoints: atomic directories, the latest pointer, half-written checkpoints ignored, RNG round trip."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from umm_ray.ppo.state import (DriverState, capture_rng, latest_checkpoint, load_driver_state, restore_rng,
                               save_checkpoint)


def _engine_writer(calls):
    def save(path):
        calls.append(path)
        (torch.save({"w": torch.ones(2)}, f"{path}/engine.pt"))
    return save


def test_save_then_find_latest_and_prune(tmp_path):
    calls = []
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, DriverState(step=step, cursor=4 * step, kl_controller={"value": 0.1}),
                        _engine_writer(calls), keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_000002", "step_000003"]
    assert all(".tmp_" in c for c in calls)  # the engine always writes into the temp dir, never the final one
    latest = latest_checkpoint(tmp_path)
    assert latest == root / "step_000003"
    state = load_driver_state(latest)
    assert (state.step, state.cursor, state.kl_controller) == (3, 12, {"value": 0.1})


def test_half_written_checkpoint_is_ignored(tmp_path):
    save_checkpoint(tmp_path, DriverState(step=1), _engine_writer([]))
    # A SIGKILL during the next save leaves only a temp directory behind.
    (tmp_path / "checkpoints" / ".tmp_step_000002" / "ds").mkdir(parents=True)
    assert latest_checkpoint(tmp_path).name == "step_000001"
    # Even a lost `latest` pointer falls back to the newest complete directory.
    (tmp_path / "checkpoints" / "latest").unlink()
    assert latest_checkpoint(tmp_path).name == "step_000001"
    # Resaving step 2 replaces the stale temp dir.
    save_checkpoint(tmp_path, DriverState(step=2), _engine_writer([]))
    assert latest_checkpoint(tmp_path).name == "step_000002"
    assert not (tmp_path / "checkpoints" / ".tmp_step_000002").exists()


def test_no_checkpoint_and_corrupt_state(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    bad = tmp_path / "checkpoints" / "step_000001"
    bad.mkdir(parents=True)
    (bad / "driver_state.json").write_text("{not json")
    with pytest.raises(ValueError, match="driver_state.json: unreadable PPO driver state"):
        load_driver_state(bad)


def test_rng_round_trip():
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    saved = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(saved)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a
