"""Learnable merge: hand values, alpha = 1 gives the shared expert, theta gets gradients, plain-HF export."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from tests.models.conftest import make_rm
from umm_ray.algo.bt import bt_loss
from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.models.merge import (MergedFFN, bake, export_merged, make_mergeable, merge_coefficients, merge_weights,
                                  validate_alpha)
from umm_ray.models.moe import moe_layers
from umm_ray.models.reward_model import reward_forward
from umm_ray.models.upcycle import decoder_layers, upcycle


def _trained_like_moe(family, tok, n=4, k=2, seed=0):
    """An upcycled MoE whose experts differ (as after training), so the merge has something to choose."""
    moe = upcycle(make_rm(family, tok), n, k, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for layer in moe_layers(moe):
            for e in layer.experts:
                for p in e.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return moe


def test_merge_weights_hand_values():
    w0 = torch.tensor([1.0, 2.0])
    ws = [torch.tensor([3.0, 0.0]), torch.tensor([0.0, 6.0])]
    theta = torch.tensor([0.0, math.log(3.0)])  # softmax = [1/4, 3/4]
    got = merge_weights(w0, ws, theta, alpha=0.5)
    want = 0.5 * w0 + 0.5 * (0.25 * ws[0] + 0.75 * ws[1])  # = [0.875, 3.25]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, torch.tensor([0.875, 3.25]))
    torch.testing.assert_close(merge_weights(w0, ws, torch.zeros(2), 0.0), torch.tensor([1.5, 3.0]))
    torch.testing.assert_close(merge_weights(w0, ws, theta, 1.0), w0)


@pytest.mark.parametrize("alpha", [-0.1, 1.5, float("nan"), "half", None, True])
def test_alpha_out_of_range_rejected(alpha, tok):
    with pytest.raises(ValueError, match="alpha"):
        validate_alpha(alpha)
    with pytest.raises(ValueError, match="alpha"):
        make_mergeable(upcycle(make_rm("llama", tok), 2, 1), alpha)


def test_make_mergeable_needs_moe(tok):
    with pytest.raises(ValueError, match="no MoE layers"):
        make_mergeable(make_rm("llama", tok), 0.5)


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_alpha_one_gives_shared_expert(family, tok):
    moe = _trained_like_moe(family, tok)
    merged = make_mergeable(moe, 1.0)
    x = torch.randn(2, 5, merged.config.hidden_size)
    for layer, moe_layer in zip(decoder_layers(merged), moe_layers(moe)):
        assert isinstance(layer.mlp, MergedFFN)
        with torch.no_grad():
            torch.testing.assert_close(layer.mlp(x), moe_layer.experts[0](x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_only_theta_trains_and_gets_gradients(family, tok, batch):
    ids, mask = batch
    merged = make_mergeable(_trained_like_moe(family, tok), 0.5).train()
    trainable = [n for n, p in merged.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith("mlp.theta") for n in trainable)
    assert len(trainable) == merged.config.num_hidden_layers
    r = reward_forward(merged, ids, mask)
    bt_loss(r[:3], r[3:]).backward()
    for name, p in merged.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(row == pytest.approx([0.25] * 4) for row in merge_coefficients(merged))


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_bake_keeps_class_and_dense_parameter_count(family, tok, batch):
    ids, mask = batch
    dense = make_rm(family, tok)
    moe = upcycle(dense, 4, 2)
    merged = make_mergeable(moe, 0.3)
    with torch.no_grad():
        for layer in decoder_layers(merged):
            layer.mlp.theta.copy_(torch.randn(4))
        baked = bake(merged)
        assert type(baked) is type(dense)
        assert sum(p.numel() for p in baked.parameters()) == sum(p.numel() for p in dense.parameters())
        torch.testing.assert_close(reward_forward(baked, ids, mask), reward_forward(merged.eval(), ids, mask),
                                   rtol=0, atol=1e-5)
        # identical experts: any merge equals the dense model
        torch.testing.assert_close(reward_forward(baked, ids, mask), reward_forward(dense, ids, mask),
                                   rtol=0, atol=1e-5)


SUBPROCESS_SCORER = """
import json, sys, torch
from transformers import AutoModelForSequenceClassification
data = json.load(open(sys.argv[1]))
results = {}
for family, path in data["dirs"].items():
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()
    with torch.no_grad():
        out = model(input_ids=torch.tensor(data["ids"]), attention_mask=torch.tensor(data["mask"])).logits[:, 0]
    results[family] = {"scores": out.tolist(), "params": sum(p.numel() for p in model.parameters()),
                       "cls": type(model).__name__}
assert not any(m.startswith("umm_ray") for m in sys.modules), "umm_ray was imported"
print(json.dumps(results))
"""


def test_exported_checkpoints_score_the_same_in_plain_transformers(tok, batch, tmp_path):
    """One fresh interpreter that never imports umm_ray loads every family's export and scores the batch."""
    ids, mask = batch
    dirs, want, dense = {}, {}, {}
    for family in ARCH_FAMILIES:
        ref = make_rm(family, tok)
        dense[family] = (sum(p.numel() for p in ref.parameters()), type(ref).__name__)
        merged = make_mergeable(_trained_like_moe(family, tok), 0.5)
        with torch.no_grad():
            for layer in decoder_layers(merged):
                layer.mlp.theta.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
            want[family] = reward_forward(merged.eval(), ids, mask)
        out = export_merged(merged, tok, tmp_path / family)
        assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
        dirs[family] = str(out)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"dirs": dirs, "ids": ids.tolist(), "mask": mask.tolist()}))
    proc = subprocess.run([sys.executable, "-c", SUBPROCESS_SCORER, str(spec)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for family in ARCH_FAMILIES:
        assert (res[family]["params"], res[family]["cls"]) == dense[family], family
        assert (torch.tensor(res[family]["scores"]) - want[family]).abs().max().item() <= 1e-5, family
