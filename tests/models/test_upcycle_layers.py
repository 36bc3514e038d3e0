"""moe.upcycle_layers: upcycling a subset of decoder layers, saving/loading it, merging it back to the dense shape,
and bad indices failing with the key's name."""

from __future__ import annotations

import pytest
import torch

from tests.models.conftest import make_rm
from umm_ray.config import ConfigError, load_config
from umm_ray.models.merge import bake, make_mergeable
from umm_ray.models.moe import SharedExpertMoE, moe_layers
from umm_ray.models.reward_model import reward_forward
from umm_ray.models.upcycle import decoder_layers, load_moe, save_moe, upcycle
from umm_ray.plan_memory import arch_from_config


def test_upcycle_layers_zero_upcycles_only_layer_zero_and_merges_to_the_dense_shape(tok, batch, tmp_path):
    dense = make_rm("llama", tok)
    moe = upcycle(dense, 3, 2, noisy=False, seed=0, layers=[0])
    layers = decoder_layers(moe)
    assert len(layers) == 2
    assert isinstance(layers[0].mlp, SharedExpertMoE) and not isinstance(layers[1].mlp, SharedExpertMoE)
    assert moe.umm_moe.layers == (0,) and len(moe_layers(moe)) == 1
    ids, mask = batch
    with torch.no_grad():  # identical experts: the partial MoE still scores like the dense model
        torch.testing.assert_close(reward_forward(moe, ids, mask), reward_forward(dense, ids, mask))
    # A partial MoE has the dense parameters plus one layer's n FFN copies and router (gate + noise).
    arch = arch_from_config(dense.config, "tiny")
    assert sum(p.numel() for p in moe.parameters()) == arch.params("rm", 3, moe_layers=1) < arch.params("rm", 3)

    # The MoE directory records the layers; loading rebuilds the same structure exactly.
    save_moe(moe, tok, tmp_path / "moe")
    loaded, _ = load_moe(tmp_path / "moe")
    assert loaded.umm_moe.layers == (0,)
    assert [n for n, _ in loaded.named_parameters()] == [n for n, _ in moe.named_parameters()]

    merged = bake(make_mergeable(loaded, 0.5))
    want = {n: p.shape for n, p in dense.named_parameters()}
    assert {n: p.shape for n, p in merged.named_parameters()} == want
    assert type(merged) is type(dense)


@pytest.mark.parametrize("layers", [[2], [-1], [0, 0], ["x"]])
def test_bad_upcycle_layer_index_names_the_key(layers, tok):
    with pytest.raises(ValueError, match=r"moe\.upcycle_layers"):
        upcycle(make_rm("llama", tok), 2, 1, layers=layers)


def test_upcycle_layers_config_parses_lists_and_rejects_bad_values():
    assert load_config(None, ["--moe.upcycle_layers", "0,2"]).moe.upcycle_layers == [0, 2]
    assert load_config(None, ["--moe.upcycle_layers", "[1]"]).moe.upcycle_layers == [1]
    assert load_config(None, []).moe.upcycle_layers == []
    for bad in ("-1", "a", "1,1"):
        with pytest.raises(ConfigError, match=r"moe\.upcycle_layers"):
            load_config(None, ["--moe.upcycle_layers", bad])
