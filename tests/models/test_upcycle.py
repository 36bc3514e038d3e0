"""Upcycling keeps scores exactly; validation; MoE save/load round trip; BT training with the MoE RM."""

from __future__ import annotations

import random

import pytest
import torch

from tests.models.conftest import WORDS, make_rm
from umm_ray.algo.bt import bt_loss
from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.models.moe import SharedExpertMoE, expert_load, moe_aux_loss, moe_layers
from umm_ray.models.reward_model import reward_forward
from umm_ray.models.upcycle import decoder_layers, load_moe, save_moe, upcycle

SETTINGS = [(2, 1), (4, 2), (6, 2), (4, 4)]


@pytest.mark.parametrize("family", ARCH_FAMILIES)
@pytest.mark.parametrize("n,k", SETTINGS)
def test_upcycled_scores_equal_dense(family, n, k, tok, batch):
    ids, mask = batch
    dense = make_rm(family, tok)
    with torch.no_grad():
        want = reward_forward(dense, ids, mask)
        moe = upcycle(dense, n, k, noisy=False, seed=1)
        got_train = reward_forward(moe.train(), ids, mask)
        got_eval = reward_forward(moe.eval(), ids, mask)
        noisy = upcycle(dense, n, k, noisy=True, seed=2).train()
        got_noisy = reward_forward(noisy, ids, mask)  # routing is random, the output still is not
    assert want.abs().max() > 1e-3  # the scores are not trivially zero
    for got in (got_train, got_eval, got_noisy):
        assert (got - want).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_upcycle_structure(family, tok):
    dense = make_rm(family, tok)
    moe = upcycle(dense, 4, 2)
    assert type(moe) is type(dense) and not moe_layers(dense)  # the input is left dense
    layers = decoder_layers(moe)
    assert all(isinstance(layer.mlp, SharedExpertMoE) for layer in layers)
    assert len(moe_layers(moe)) == dense.config.num_hidden_layers
    dense_sd, moe_sd = dense.state_dict(), moe.state_dict()
    for key, value in dense_sd.items():  # everything outside the FFN is copied unchanged
        if ".mlp." not in key:
            assert torch.equal(moe_sd[key], value), key
    for i, layer in enumerate(decoder_layers(dense)):  # every expert is an exact copy of the FFN
        for e in moe_layers(moe)[i].experts:
            for (name, p), (_, q) in zip(layer.mlp.named_parameters(), e.named_parameters()):
                assert torch.equal(p, q), name
    assert moe.umm_moe.num_experts == 4 and moe.umm_moe.family == family


@pytest.mark.parametrize("n,k", [(1, 1), (4, 0), (4, 5), (3, 4)])
def test_upcycle_rejects_bad_settings(n, k, tok):
    with pytest.raises(ValueError, match="num_experts|top_k"):
        upcycle(make_rm("llama", tok), n, k)


def test_upcycle_rejects_unsupported_family_and_double_upcycle(tok):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model("opt", vocab_size=64, hidden_size=64, ffn_dim=128, num_hidden_layers=1,
                               num_attention_heads=1, word_embed_proj_dim=64, num_labels=1)
    with pytest.raises(ValueError, match="unsupported backbone family model_type='opt'"):
        upcycle(AutoModelForSequenceClassification.from_config(cfg), 2, 1)
    moe = upcycle(make_rm("llama", tok), 2, 1)
    with pytest.raises(ValueError, match="already a MoE"):
        upcycle(moe, 2, 1)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_moe_save_load_round_trip(family, tok, batch, tmp_path):
    ids, mask = batch
    moe = upcycle(make_rm(family, tok), 4, 2, seed=3)
    with torch.no_grad():  # make routers and experts differ, like after training
        for p in moe.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_moe(moe, tok, tmp_path / "moe")
    assert (tmp_path / "moe" / "umm_moe.json").is_file()
    assert not list((tmp_path / "moe").glob("*.bin"))
    loaded, tok2 = load_moe(tmp_path / "moe")
    assert loaded.umm_moe == moe.umm_moe and len(tok2) == len(tok)
    sd, sd2 = moe.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    assert all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        assert torch.equal(reward_forward(moe.eval(), ids, mask), reward_forward(loaded, ids, mask))
    # In bf16 (reward.proxy_dtype): built and loaded in bf16, float32 scores within bf16 rounding of fp32's.
    half, _ = load_moe(tmp_path / "moe", dtype=torch.bfloat16, with_tokenizer=False)
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        want, got = reward_forward(loaded, ids, mask), reward_forward(half, ids, mask)
    assert got.dtype == torch.float32 and torch.allclose(got, want, atol=0.05 * want.abs().max().item() + 1e-3)


def test_load_moe_rejects_non_moe_dir(tmp_path):
    (tmp_path / "umm_moe.json").write_text("{not json")
    with pytest.raises(ValueError, match="umm_moe.json"):
        load_moe(tmp_path)


def _pairs(n, seed):
    """Separable synthetic preferences: the chosen response contains 'good', the rejected one 'bad'."""
    from umm_ray.data.tokenize import encode_texts

    from tests.models.conftest import make_tokenizer

    rng = random.Random(seed)
    tok = make_tokenizer()
    filler = [w for w in WORDS if w not in ("good", "bad")]
    prompts, chosen, rejected = [], [], []
    for _ in range(n):
        prompts.append(" ".join(rng.choices(filler, k=4)))
        body = rng.choices(filler, k=rng.randint(2, 6))
        pos = rng.randint(0, len(body))
        chosen.append(" " + " ".join(body[:pos] + ["good"] + body[pos:]))
        rejected.append(" " + " ".join(body[:pos] + ["bad"] + body[pos:]))
    return encode_texts(tok, prompts, chosen, 32), encode_texts(tok, prompts, rejected, 32)


def _heldout_loss(model, pairs):
    (ci, cm), (ri, rm) = pairs
    with torch.no_grad():
        return bt_loss(reward_forward(model.eval(), ci, cm), reward_forward(model, ri, rm)).item()


def test_bt_training_lowers_heldout_loss(tok):
    torch.manual_seed(0)
    moe = upcycle(make_rm("llama", tok), 4, 2, seed=0)
    train, held = _pairs(256, seed=1), _pairs(64, seed=2)
    before = _heldout_loss(moe, held)
    opt = torch.optim.AdamW(moe.parameters(), lr=2e-3)
    (ci, cm), (ri, rm) = train
    moe.train()
    for step in range(12):
        sl = slice((step * 32) % 256, (step * 32) % 256 + 32)
        loss = bt_loss(reward_forward(moe, ci[sl], cm[sl]), reward_forward(moe, ri[sl], rm[sl]))
        opt.zero_grad()
        (loss + moe_aux_loss(moe)).backward()
        opt.step()
    after = _heldout_loss(moe, held)
    assert after < before - 0.2 and after < 0.4, (before, after)
    loads = expert_load(moe)
    assert len(loads) == 2 and all(sum(row) == pytest.approx(1.0) for row in loads)
