"""jobs.train_rm end to end: `python -m jobs.train_rm` drivers join the test's Ray cluster (as under `ray job
submit`). Dense BT training on gold-labelled testbed pairs (given as a preference file) lowers the held-out BT loss;
the slow test runs the whole chain from an empty directory (prepare -> SFT -> pairs -> UMM) through the stage graph,
then reruns from cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.common import PRESETS
from jobs.train_rm import expand_kind
from umm_ray.config import load_config

from tests.fixtures import run_job as _run_job


def run_job(module: str, args: list[str], log: Path, timeout: float = 2400) -> str:
    return _run_job(module, args, log, timeout)


def gold_pairs_from_sft_rows(world, out: Path, noise: float, seed: int) -> Path:
    """Two programmatic SFT responses per prompt, labelled by the testbed gold, as one preference file `out`."""
    from umm_ray.data import read_jsonl, write_jsonl
    from umm_ray.testbed.gold import TestbedGold
    from umm_ray.testbed.prepare import label_pairs

    by_prompt: dict[str, list[str]] = {}
    for _, row in read_jsonl(world.sft_data):
        by_prompt.setdefault(row["prompt"], []).append(row["response"])
    rows = [(p, r[i], r[i + 1]) for p, r in by_prompt.items() for i in range(0, len(r) - 1, 2)
            if r[i].strip() and r[i + 1].strip()]  # a preference file may not hold empty responses
    pairs, _ = label_pairs(*map(list, zip(*rows)), TestbedGold(), noise=noise, seed=seed)
    write_jsonl(out, pairs)
    return out


def test_kind_shorthand():
    assert expand_kind(["--kind", "umm", "--kind=dense", "--rm.lr", "1"]) == ["--rm.kind", "umm", "--rm.kind=dense",
                                                                              "--rm.lr", "1"]


def test_dense_job_lowers_held_out_bt_loss(ray_local, tmp_path):
    from umm_ray.models.reward_model import load_reward_model
    from umm_ray.testbed.prepare import prepare_world

    out = tmp_path / "run"
    common = ["--preset", "test", "--run.output_dir", str(out), "--testbed.n_prompts", "600"]
    world = prepare_world(load_config(None, common[2:], base=PRESETS["test"]))
    prefs = gold_pairs_from_sft_rows(world, tmp_path / "prefs.jsonl", noise=0.1, seed=0)
    address = ray_local.get_runtime_context().gcs_address
    own = ["--rm.data", str(prefs), "--rm.val_frac", "0.15", "--rm.test_frac", "0.15"]
    log = run_job("jobs.train_rm", [*common, *own, "--run.ray_address", address, "--kind", "dense",
                                    "--rm.base_path", str(world.base), "--rm.num_workers", "2", "--rm.batch_size", "16",
                                    "--rm.epochs", "2", "--rm.checkpoint_every", "10"], tmp_path / "rm.log")
    assert "dense RM:" in log
    stage = out / "rm_dense"
    ev = json.loads((stage / "eval.json").read_text())
    assert ev["val"]["bt_loss"] < ev["initial"]["val"]["bt_loss"] - 0.02, (ev["initial"]["val"], ev["val"])
    assert ev["val"]["accuracy"] > ev["initial"]["val"]["accuracy"]
    assert ev["test"]["accuracy"] > 0.55
    assert ev["n_pairs"]["train"] > 300 and len(ev["loss_curve"]) == ev["steps"]
    assert (stage / "loss_curve.png").stat().st_size > 0 and (stage / "config.yaml").is_file()
    assert not (out / "sft" / "model").exists()  # an explicit backbone on own data needs no SFT stage
    assert json.loads((out / "pairs" / "stats.json").read_text())["n_test"] == ev["n_pairs"]["test"]
    model, _ = load_reward_model(stage / "model")
    assert sum(p.numel() for p in model.parameters()) == ev["params"]


@pytest.mark.slow
def test_umm_job_from_an_empty_directory_runs_every_missing_stage(ray_local, tmp_path):
    from umm_ray.models.reward_model import load_reward_model

    out = tmp_path / "run"
    address = ray_local.get_runtime_context().gcs_address
    args = ["--preset", "test", "--run.output_dir", str(out), "--run.ray_address", address, "--rm.kind", "umm",
            "--rollout.backend", "hf", "--moe.num_experts", "2", "--moe.top_k", "1", "--sft.num_workers", "2"]
    run_job("jobs.train_rm", args, tmp_path / "umm.log")
    for path in ("prepare/world.json", "sft/model/model.safetensors", "pairs/pairs_train.jsonl",
                 "rm_umm2/moe/model/umm_moe.json", "rm_umm2/model/model.safetensors"):
        assert (out / path).is_file(), path
    for stage in ("prepare", "sft", "pairs", "rm_umm2"):  # the stage graph's markers, as compare writes them
        assert (out / stage / "_done.json").is_file(), stage
    ev = json.loads((out / "rm_umm2" / "eval.json").read_text())
    assert ev["params"] == ev["dense_params"]
    model, _ = load_reward_model(out / "rm_umm2" / "model")
    assert sum(p.numel() for p in model.parameters()) == ev["dense_params"]
    log = run_job("jobs.train_rm", args, tmp_path / "again.log")  # everything cached: nothing is retrained
    assert all(f"[stage {s}] cached" in log for s in ("prepare", "sft", "pairs", "rm_umm2")), log[-2000:]
