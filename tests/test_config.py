"""Config: defaults validate, YAML round-trips, overrides apply, and bad keys/types/values fail naming the key."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from umm_ray.config import RENAMED, Config, ConfigError, describe, load_config, parse_overrides, save_config

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_valid_and_tiny():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.hidden_size % 64 == 0
    assert cfg.run.num_gpus_per_actor == 0


def test_dotted_overrides_apply_with_types():
    cfg = load_config(overrides=["--ppo.kl_coef", "0.05", "--rm.kind=umm", "--moe.num_experts", "6",
                                 "--sft.lr", "1e-3", "--model.trust_remote_code", "true",
                                 "--compare.expert_counts", "[2, 4]"])
    assert cfg.ppo.kl_coef == 0.05 and cfg.rm.kind == "umm" and cfg.moe.num_experts == 6
    assert cfg.sft.lr == 1e-3 and cfg.model.trust_remote_code is True
    assert cfg.compare.expert_counts == [2, 4]


def test_yaml_round_trip(tmp_path):
    cfg = load_config(overrides=["--ppo.steps", "7", "--ensemble.aggregate", "uwo"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg


def test_yaml_below_cli(tmp_path):
    (tmp_path / "c.yaml").write_text("ppo:\n  steps: 3\n  kl_coef: 0.1\n")
    cfg = load_config(tmp_path / "c.yaml", ["--ppo.steps", "5"])
    assert cfg.ppo.steps == 5 and cfg.ppo.kl_coef == 0.1


@pytest.mark.parametrize("args,needle", [
    (["--ppo.kl_cof", "0.1"], "ppo.kl_cof' (did you mean 'kl_coef'?)"),
    (["--pop.steps", "3"], "did you mean 'ppo'"),
    (["--ppo.steps", "three"], "ppo.steps: expected an int"),
    (["--ppo.steps", "0"], "ppo.steps: 0 is below the minimum 1"),
    (["--merge.alpha", "1.5"], "merge.alpha: 1.5 is above the maximum 1.0"),
    (["--rm.kind", "huge"], "rm.kind: 'huge' is not one of"),
    (["--moe.num_experts", "2", "--moe.top_k", "3"], "moe.top_k: 3 exceeds moe.num_experts=2"),
    (["--serve.min_replicas", "3", "--serve.max_replicas", "2"], "serve.min_replicas: 3 exceeds serve.max_replicas=2"),
    (["--testbed.label_length_bias", "1.5"], "testbed.label_length_bias"),
    (["--rm.val_frac", "0.5", "--rm.test_frac", "0.5"], "rm.val_frac + rm.test_frac: 0.5 + 0.5 leaves no training"),
    (["--reward.proxy", "best"], "reward.proxy: 'best' is not one of ['auto', 'dense', 'umm', 'moe', 'ensemble', "),
    (["--model.hidden_size", "100"], "model.hidden_size: 100 must be a multiple of 64"),
    (["--model.trust_remote_code", "maybe"], "model.trust_remote_code: expected a bool"),
    (["--ppo.steps"], "has no value"),
    (["steps"], "unexpected argument"),
])
def test_bad_input_names_the_key(args, needle):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=args)
    assert needle in str(e.value)


def test_missing_or_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "l.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "l.yaml")


def test_parse_overrides_nesting():
    assert parse_overrides(["--a.b.c", "1", "--d=2"]) == {"a": {"b": {"c": "1"}}, "d": "2"}


def test_every_key_has_help():
    lines = describe()
    assert len(lines) > 50
    assert all(line.split(": ", 1)[1].strip() for line in lines), "a config key lacks help text"


@pytest.mark.parametrize("old,new", [("testbed.val_frac", "rm.val_frac"), ("testbed.test_frac", "rm.test_frac"),
                                     ("model.policy_path", "sft.base_path")])
def test_renamed_keys_stop_naming_the_new_key(tmp_path, old, new):
    """A config written before a key moved stops at start with the new name, from the CLI and from YAML alike."""
    assert old in RENAMED
    with pytest.raises(ConfigError, match=rf"config key '{old}' was renamed: use {new}"):
        load_config(overrides=[f"--{old}", "0.1"])
    section, key = old.split(".")
    (tmp_path / "old.yaml").write_text(f"{section}:\n  {key}: 0.1\n")
    with pytest.raises(ConfigError, match=rf"'{old}' was renamed: use {new}"):
        load_config(tmp_path / "old.yaml")


def _leaf_keys(cls=Config, prefix: str = "") -> list[str]:
    """Every leaf key as 'section.key'."""
    hints, out = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += _leaf_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _sources() -> dict[str, str]:
    files = [p for d in ("umm_ray", "jobs") for p in sorted((ROOT / d).rglob("*.py")) if p.name != "config.py"]
    return {str(p.relative_to(ROOT)): p.read_text() for p in files}


def test_every_leaf_key_is_read_somewhere():
    """A dead key fails here. A key counts as read when the code says `.section.key`, or reads `.key` in a file that
    also takes the section (`.section` or its `SectionConfig` type), as code that is handed `cfg.ppo` does."""
    sources = _sources()
    type_names = {name: t.__name__ for name, t in typing.get_type_hints(Config).items()}
    dead = []
    for section, key in (k.split(".") for k in _leaf_keys()):
        full = re.compile(rf"\.{section}\.{key}\b")
        attr = re.compile(rf"\.{key}\b")
        holder = re.compile(rf"\.{section}\b|\b{type_names[section]}\b")
        if not any(full.search(text) or (attr.search(text) and holder.search(text)) for text in sources.values()):
            dead.append(f"{section}.{key}")
    assert not dead, f"config keys nothing reads (remove them, or make them do what their help says): {dead}"
    assert len(_leaf_keys()) == len(describe())


def test_expert_counts_from_the_command_line_are_integers_and_checked():
    assert load_config(None, ["--compare.expert_counts", "2"]).compare.expert_counts == [2]
    assert load_config(None, ["--compare.expert_counts", "2,6"]).compare.expert_counts == [2, 6]
    with pytest.raises(ConfigError, match=r"compare.expert_counts: expected integers >= 2, got \['x', 1\]"):
        load_config(None, ["--compare.expert_counts", "x,1"])
