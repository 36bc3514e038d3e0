"""Config: defaults validate, YAML round-trips, overrides apply, and bad keys/types/values fail naming the key."""

import pytest

from umm_ray.config import Config, ConfigError, describe, load_config, parse_overrides, save_config


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
    (["--testbed.val_frac", "0.5", "--testbed.test_frac", "0.5"], "leaves no training pairs"),
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
