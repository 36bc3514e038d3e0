"""Several training runs in one Ray Train worker group, one after another: the ensemble's members
(`ensemble.worker_group shared`) and a UMM's MoE and merge runs pay one worker-group start-up instead of one each.

Each run is what `fit` would train alone: the same seed, the same data order, the same steps, so it comes out the
same either way (tests/train/test_group.py). What differs is only where the time goes: one TorchTrainer start (worker
processes, the process group, imports) for all runs, and no runs at the same time. A run may start from what an
earlier run of the group wrote (the merge starts from the MoE): every rank waits until rank 0 has written a run's
model before the next run begins.

    results = fit_group([(task, examples, spec_0), (task, examples, spec_1)], group_dir)   # one TrainResult each

A stage whose runs all carry a matching marker already (a group trained them) gets their results without starting a
worker group: `finished_runs`, and `fit_group` itself.

Storage: one Ray Train run, `<group_dir>/ray_train/<group name>`, holds every run's checkpoints (named
`<run>__checkpoint_<step>`); rank 0 writes each finished run's model to `<spec.stage_dir>/model` and a marker,
`<spec.stage_dir>/group_run.json` ({fingerprint, result}), at once. A relaunch after a kill skips the runs whose
marker matches their fingerprint, resumes the run the latest checkpoint belongs to, and starts the rest fresh.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path

import torch

from umm_ray.layout import RAY_TRAIN_DIR
from umm_ray.train.loop import (STATE_FILE, TrainResult, TrainSpec, TrainTask, _check, _mean_over_ranks,
                                make_trainer, run_fingerprint, set_aside_stale_run, train_run)

MARKER = "group_run.json"


def _marker(spec: TrainSpec, fingerprint: dict) -> dict | None:
    """The finished run's result when `<stage_dir>/group_run.json` matches this fingerprint and its model is there."""
    path = Path(spec.stage_dir) / MARKER
    if not path.is_file() or not (Path(spec.stage_dir) / "model").is_dir():
        return None
    done = json.loads(path.read_text())
    return done["result"] if done.get("fingerprint") == fingerprint else None


def finished_runs(runs: list[tuple[TrainTask, list, TrainSpec]]) -> list[TrainResult] | None:
    """Each run's result when every one of them was trained before by a worker group (its marker matches, its model
    is there), else None: a stage whose runs an earlier group trained (the compare job's shared RM group) starts no
    worker group of its own."""
    done = [_marker(spec, run_fingerprint(task, examples, spec)) for task, examples, spec in runs]
    if not runs or any(d is None for d in done):
        return None
    return [_result(spec, d) for (_, _, spec), d in zip(runs, done)]


def _result(spec: TrainSpec, out: dict) -> TrainResult:
    return TrainResult(name=spec.name, model_dir=Path(spec.stage_dir) / "model", history=out["history"],
                       total_steps=out["total_steps"], resumed_from=out["resumed_from"], started_at=out["started_at"],
                       ended_at=out["ended_at"], entered_at=out["entered_at"])


def _group_loop(config: dict) -> list[dict] | None:
    """Worker function: train every run not finished before, in order; rank 0 returns one result dict per run."""
    import ray.train  # heavy: ~2 s; runs on the training workers only

    entered_at = time.time()
    rank = ray.train.get_context().get_world_rank()
    ckpt = ray.train.get_checkpoint()
    results = []
    with (ckpt.as_directory() if ckpt else contextlib.nullcontext()) as ckpt_dir:
        latest = json.loads((Path(ckpt_dir) / STATE_FILE).read_text())["fingerprint"] if ckpt_dir else None
        for task, examples, spec, fingerprint in config["runs"]:
            done = _marker(spec, fingerprint)
            if done is not None:  # finished before a relaunch: its model and marker are on shared storage
                results.append(done)
                continue
            resume = Path(ckpt_dir) if latest == fingerprint else None
            out = train_run(task, spec, examples, fingerprint, resume, entered_at, prefix=f"{spec.name}__",
                            on_final=lambda raw, r, t=task, s=spec: _export(t, raw, r, s))
            if rank == 0:
                (Path(spec.stage_dir) / MARKER).write_text(json.dumps({"fingerprint": fingerprint, "result": out}))
            _mean_over_ranks([0.0])  # an all-reduce every rank joins: no rank starts the next run before the export
            results.append(out)
            entered_at = time.time()  # the next run's turn starts now: no start-up of its own
    return results if rank == 0 else None


def _export(task: TrainTask, raw: torch.nn.Module, rank: int, spec: TrainSpec) -> None:
    """Rank 0 writes the run's HF model to `<stage_dir>/model` (what `fit` copies out of the final checkpoint)."""
    if rank != 0:
        return
    model_dir = Path(spec.stage_dir) / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    task.save(raw, model_dir)


def fit_group(runs: list[tuple[TrainTask, list, TrainSpec]], group_dir: Path,
              name: str = "group") -> list[TrainResult]:
    """Train each (task, examples, spec) in one Ray Train worker group, in order; the group takes the first spec's
    workers, resources, placement and failure settings (the runs must agree on them: a ValueError names the first
    that differs). Returns one `TrainResult` per run; each run's model is at `<spec.stage_dir>/model`."""
    if not runs:
        raise ValueError("fit_group: no runs to train")
    specs = [spec for _, _, spec in runs]
    first = specs[0]
    for task, examples, spec in runs:
        _check(task, examples, spec)
        for key in ("num_workers", "use_gpu", "worker", "placement_strategy", "max_failures"):
            if getattr(spec, key) != getattr(first, key):
                raise ValueError(f"fit_group: run {spec.name!r} has {key}={getattr(spec, key)!r} but "
                                 f"{first.name!r} has {getattr(first, key)!r}; one worker group needs one value")
        Path(spec.stage_dir).mkdir(parents=True, exist_ok=True)
    for key in ("name", "stage_dir"):  # checkpoints are named by the run, models written to its stage dir
        seen = [str(getattr(spec, key)) for spec in specs]
        if len(set(seen)) != len(seen):
            dup = next(v for v in seen if seen.count(v) > 1)
            raise ValueError(f"fit_group: two runs have {key} {dup!r}; each run of a group needs its own")
    done = finished_runs(runs)
    if done is not None:  # all trained before: no worker group
        return done
    # A later run's fingerprint may name files an earlier run writes (the merge's MoE): hashed from its task and
    # data, not from the files, so it is known before the group starts.
    runs = [(task, examples, spec, run_fingerprint(task, examples, spec)) for task, examples, spec in runs]
    group_dir = Path(group_dir).absolute()
    set_aside_stale_run(group_dir / RAY_TRAIN_DIR / name, *[r[3] for r in runs])  # a checkpoint of none of these runs
    trainer = make_trainer(_group_loop, {"runs": runs}, first, group_dir / RAY_TRAIN_DIR, name)
    result = trainer.fit()
    outs = result.return_value
    if outs is None or len(outs) != len(specs):
        raise RuntimeError(f"Ray Train group {name!r} finished without a result per run (see its logs)")
    return [_result(spec, o) for spec, o in zip(specs, outs)]
