"""Job inputs: catalog model names resolve to their cached directory; missing inputs are named before any work."""

import pytest

from jobs.common import job_config
from jobs.inputs import InputError, check_inputs, resolve_models
from umm_ray.config import load_config
from umm_ray.pretrained import CACHE_ENV


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_catalog_names_resolve_to_the_cached_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "fetch.json").write_text("{}")  # what a finished fetch leaves
    cfg = resolve_models(_cfg("--sft.base_path", "smollm2-135m", "--rm.base_path", "smollm2-135m",
                              "--ppo.policy_path", "runs/x/sft/model"))
    assert cfg.sft.base_path == cfg.rm.base_path == str(tmp_path / "smollm2-135m")
    assert cfg.ppo.policy_path == "runs/x/sft/model"  # not a catalog name: left as it is


def test_check_inputs_names_the_key_and_path(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    with pytest.raises(InputError, match=r"rm.data: .*nope.jsonl does not exist"):
        check_inputs(_cfg("--rm.data", str(tmp_path / "nope.jsonl")))
    with pytest.raises(InputError, match="reward.gold: .*no-rm does not exist"):
        check_inputs(_cfg("--reward.gold", str(tmp_path / "no-rm")))
    with pytest.raises(InputError, match="sft.base_path: .*missing/dir/x does not exist"):
        check_inputs(_cfg("--sft.base_path", str(tmp_path / "missing" / "dir" / "x")))
    notes = check_inputs(_cfg("--sft.base_path", "smollm2-135m", "--rm.base_path", "Qwen/Qwen2.5-0.5B-Instruct",
                              "--rm.data", "Anthropic/hh-rlhf"))
    text = "\n".join(notes)
    assert "catalog model 'smollm2-135m'" in text and "fetched on first use" in text
    assert "hub id" in text and "hub dataset 'Anthropic/hh-rlhf'" in text


def test_a_dry_run_spells_catalog_names_as_the_real_run_without_fetching(tmp_path, monkeypatch):
    """Stage keys hash sft.base_path: the dry run must hash the cached directory the real run hashes, or it reports
    a finished SFT stage as one that would rerun."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    argv = ["--sft.base_path", "smollm2-135m", "--run.output_dir", str(tmp_path / "run")]
    dry_cfg, dry = job_config([*argv, "--dry-run"], "sft")
    assert dry and dry_cfg.sft.base_path == str(tmp_path / "smollm2-135m")
    assert not (tmp_path / "smollm2-135m").exists()  # named, not fetched
    assert "catalog model 'smollm2-135m'" in "\n".join(check_inputs(dry_cfg))  # the note still says where from
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "fetch.json").write_text("{}")  # what a finished fetch leaves
    real_cfg, dry = job_config(argv, "sft")
    assert not dry and real_cfg.sft.base_path == dry_cfg.sft.base_path
    notes = "\n".join(check_inputs(real_cfg))
    assert f"catalog model 'smollm2-135m' -> {tmp_path / 'smollm2-135m'} (cached)" in notes
