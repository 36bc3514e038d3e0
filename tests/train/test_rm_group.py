"""The compare job's shared RM worker group (`umm_ray.stages.train_rm_group`, compare.rm_worker_group): one Ray Train
worker group trains the runs of several RM stages (dense; a UMM's MoE and merge; the ensemble's members), and each
stage's own `train_rm` then finds its models done, starts no worker group, and reports the same models, losses and
held-out accuracy as the stage trained alone. Real Ray Train, the tiny testbed world."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.train.test_loop import _weights
from umm_ray import stages as S

FAST_RM = ("--rm.num_workers", "2", "--rm.batch_size", "16", "--rm.epochs", "1", "--rm.checkpoint_every", "1000",
           "--ensemble.members", "2")
# Two UMM stages: their MoE runs share a name ('rm_umm_moe') and must not share checkpoints in the one group
STAGES = (("dense", {}, "rm_dense"), ("umm", {"num_experts": 2}, "rm_umm2"), ("umm", {"num_experts": 3}, "rm_umm3"),
          ("ensemble", {}, "rm_ensemble"))
MODELS = ("rm_dense/model", "rm_umm2/moe/model", "rm_umm2/model", "rm_umm3/moe/model", "rm_umm3/model",
          "rm_ensemble/member_0/model", "rm_ensemble/member_1/model")


def _ray_train_dirs(root: Path) -> list[Path]:
    return sorted(root.rglob("ray_train"))


def test_rm_stages_trained_in_one_shared_group_match_the_stages_trained_alone(ray_local, tiny_world, make_cfg,
                                                                             tmp_path):
    cfg, _ = tiny_world
    cfg = make_cfg(cfg.run.output_dir, *FAST_RM, "--compare.rm_worker_group", "shared")
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    names = S.train_rm_group(cfg, [(cfg, kind, extra, shared / name) for kind, extra, name in STAGES],
                             shared / "rm_group")
    assert names == [name for *_, name in STAGES]
    assert _ray_train_dirs(shared) == [shared / "rm_group" / "ray_train"]  # one Ray Train run for all seven
    kept = {p.name.split("__")[0] for p in (shared / "rm_group" / "ray_train" / "rms").glob("*__checkpoint_*")}
    assert kept and kept <= {".".join(Path(m).parts[:-1]) for m in MODELS}  # runs are named by their stage dirs
    summaries = {name: S.train_rm(cfg, kind, extra, shared / name) for kind, extra, name in STAGES}
    assert _ray_train_dirs(shared) == [shared / "rm_group" / "ray_train"], "a stage started a worker group of its own"
    for kind, extra, name in STAGES:
        own = S.train_rm(cfg, kind, extra, alone / name)
        for split in ("val", "test"):
            assert summaries[name]["eval"][split]["accuracy"] == own["eval"][split]["accuracy"], (name, split)
            assert abs(summaries[name]["eval"][split]["bt_loss"] - own["eval"][split]["bt_loss"]) < 1e-5
    for model in MODELS:
        a, b = _weights(shared / model), _weights(alone / model)
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=f"{model}: {k}")
    curve = lambda root: json.loads((root / "rm_dense" / "eval.json").read_text())["loss_curve"]  # noqa: E731
    assert curve(shared) == curve(alone) and len(curve(shared)) > 5


def test_what_the_shared_group_leaves_to_its_stage(ray_local, tiny_world, make_cfg, tmp_path):
    """per_stage trains nothing; dmoe and an ensemble whose members train at once keep their own worker groups."""
    cfg, _ = tiny_world
    stages = [(cfg, "dmoe", {}, tmp_path / "rm_dmoe"), (cfg, "ensemble", {}, tmp_path / "rm_ensemble")]
    per_member = make_cfg(cfg.run.output_dir, "--compare.rm_worker_group", "shared",
                          "--ensemble.worker_group", "per_member")
    assert S.train_rm_group(per_member, [(per_member, k, e, o) for _, k, e, o in stages], tmp_path / "g") == []
    per_stage = make_cfg(cfg.run.output_dir, "--compare.rm_worker_group", "per_stage")
    assert S.train_rm_group(per_stage, [(cfg, "dense", {}, tmp_path / "rm_dense")], tmp_path / "g") == []
    assert not (tmp_path / "g").exists() and not (tmp_path / "rm_dense").exists()
