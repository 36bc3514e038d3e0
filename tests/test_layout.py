"""RunLayout: every run-directory path spelled once, and the RM stage names compare and train_rm share."""

import pytest

from umm_ray.layout import RunLayout, resume_state


def test_paths_under_the_root(tmp_path):
    lay = RunLayout(str(tmp_path))
    assert lay.root == tmp_path and lay == RunLayout(tmp_path)
    assert lay.sft_model == tmp_path / "sft" / "model" and lay.sft_eval == tmp_path / "sft" / "eval.json"
    assert lay.prompts_ppo == tmp_path / "prepare" / "prompts_ppo.jsonl" == lay.prompts("ppo")
    assert lay.sft_data == tmp_path / "prepare" / "sft.jsonl" and lay.base == tmp_path / "prepare" / "base"
    assert lay.pairs_test == tmp_path / "pairs" / "pairs_test.jsonl" == lay.pairs_split("test")
    assert lay.ppo_job == tmp_path / "ppo" and lay.stage("eval") == tmp_path / "eval"


def test_rm_stages_and_models(tmp_path):
    lay = RunLayout(tmp_path)
    assert [RunLayout.rm_stage(k, 4) for k in ("dense", "umm", "moe", "ensemble")] == [
        "rm_dense", "rm_umm4", "rm_moe4", "rm_ensemble"]
    assert lay.rm_model("umm", 4) == tmp_path / "rm_umm4" / "model"
    assert lay.rm_model("ensemble") == tmp_path / "rm_ensemble" / "manifest.json"
    with pytest.raises(ValueError, match="rm kind 'umm' needs an expert count"):
        RunLayout.rm_stage("umm")
    with pytest.raises(ValueError, match="rm kind 'big' is not one of dense, moe, umm, ensemble"):
        lay.rm("big")
    with pytest.raises(ValueError, match="prompt split 'train' is not one of"):
        lay.prompts("train")


def test_resume_state_is_every_ray_train_dir_and_the_ppo_checkpoints(tmp_path):
    for d in ("ray_train/sft/checkpoint_1", "member_0/ray_train/a", "phase1/ray_train/ray_train",
              "checkpoints/step_000001", "policy/checkpoints", "model"):
        (tmp_path / d).mkdir(parents=True)
    assert resume_state(tmp_path) == [tmp_path / "member_0" / "ray_train", tmp_path / "phase1" / "ray_train",
                                      tmp_path / "ray_train", tmp_path / "checkpoints"]
    assert resume_state(tmp_path / "model") == []
