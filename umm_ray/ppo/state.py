"""PPO checkpoints: DeepSpeed engine state + the driver's state, written atomically, found again on resume.

Layout under `<out_dir>/checkpoints/`:
    step_000004/ds/...              DeepSpeed: weights, optimizer, ZeRO partitions of every rank
    step_000004/driver_state.json   DriverState (step, data cursor, KL controller, reward normaliser, RNG states)
    latest                          text file naming the newest complete checkpoint directory

A checkpoint is first written to `.tmp_step_XXXXXX/` and renamed into place only when complete, and `latest` is
replaced atomically after the rename, so a SIGKILL at any moment leaves the previous checkpoint usable. On a
multi-node cluster `out_dir` must be on storage every policy rank can write (each rank saves its own partition).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from umm_ray.layout import PPO_CHECKPOINT_DIR

STATE_FILE = "driver_state.json"


@dataclass
class DriverState:
    """Everything besides the DeepSpeed engine that a resumed run needs.

    Attributes:
        step: PPO steps completed (the next step to run, 0-based).
        cursor: prompts drawn so far (= step * rollout_batch_size; kept for inspection and checked on resume).
        data_seed: seed of the prompt order.
        kl_controller: `state_dict()` of the KL controller.
        reward_moments: `state_dict()` of the reward normaliser.
        rng: python / numpy / torch RNG states of the driver.
    """

    step: int = 0
    cursor: int = 0
    data_seed: int = 0
    kl_controller: dict = field(default_factory=dict)
    reward_moments: dict = field(default_factory=dict)
    rng: dict = field(default_factory=dict)


def capture_rng() -> dict:
    """The driver's RNG states as JSON-able data."""
    np_state = np.random.get_state()
    return {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "torch": torch.get_rng_state().tolist()}


def restore_rng(rng: dict) -> None:
    """Inverse of `capture_rng` (no-op for an empty dict)."""
    if not rng:
        return
    v, s, g = rng["python"]
    random.setstate((v, tuple(s), g))
    n = rng["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / PPO_CHECKPOINT_DIR


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(out_dir: str | Path, state: DriverState, save_engine, keep: int = 2) -> Path:
    """Write one checkpoint atomically and prune old ones.

    Args:
        out_dir: the PPO run directory.
        state: the driver state after `state.step` completed steps.
        save_engine: callable(dir: str) that writes the DeepSpeed state there (e.g. `PolicyGroup.save_checkpoint`).
        keep: how many checkpoints to keep.

    Returns:
        The final checkpoint directory.
    """
    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{state.step:06d}"
    tmp, final = root / f".tmp_{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_engine(str(tmp))
    _write_atomic(tmp / STATE_FILE, json.dumps(asdict(state)))
    if final.exists():  # a rerun of the same step after a resume: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    _write_atomic(root / "latest", name)
    for old in sorted(root.glob("step_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The newest complete checkpoint directory, or None. Half-written `.tmp_*` directories are ignored."""
    root = checkpoint_root(out_dir)
    pointer = root / "latest"
    if pointer.is_file():
        cand = root / pointer.read_text().strip()
        if (cand / STATE_FILE).is_file():
            return cand
    complete = [d for d in sorted(root.glob("step_*")) if (d / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def load_driver_state(ckpt: str | Path) -> DriverState:
    """Read driver_state.json of a checkpoint; ValueError naming the file if it is unreadable."""
    path = Path(ckpt) / STATE_FILE
    try:
        return DriverState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: unreadable PPO driver state ({e})") from None
