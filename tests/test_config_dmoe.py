"""The dmoe config section builds, validates and documents itself with umm_ray.config's machinery."""

from __future__ import annotations

import pytest

from umm_ray.config import ConfigError, describe, from_dict
from umm_ray.config_dmoe import DMoEConfig


def test_defaults_are_the_papers_lora_settings_and_overrides_are_typed():
    d = DMoEConfig()
    assert (d.lora_r, d.lora_alpha, d.lora_dropout, d.target_modules, d.phase1_frac) == (
        32, 32.0, 0.05, ["q_proj", "v_proj"], 0.6)
    over = from_dict(DMoEConfig, {"lora_r": "8", "target_modules": "c_attn", "tasks": "[a, b]"}, "dmoe.")
    assert (over.lora_r, over.target_modules, over.tasks) == (8, ["c_attn"], ["a", "b"])
    assert DMoEConfig().target_modules is not DMoEConfig().target_modules  # no shared mutable default


def test_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="dmoe.phase1_frac: 1.5 is above the maximum 0.95"):
        from_dict(DMoEConfig, {"phase1_frac": 1.5}, "dmoe.")
    with pytest.raises(ConfigError, match="unknown config key 'dmoe.lora_rank' \\(did you mean 'lora_r'\\?\\)"):
        from_dict(DMoEConfig, {"lora_rank": 8}, "dmoe.")
    assert all(line.split(":", 1)[1].strip() for line in describe(DMoEConfig, "dmoe."))  # every key has help
