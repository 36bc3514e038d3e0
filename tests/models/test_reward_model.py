"""Reward model forward, validated loading (clear errors before compute), Scorers and load_scorer."""

from __future__ import annotations

import inspect
import json

import pytest
import torch

from tests.models.conftest import make_rm, tiny_config
from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.data.shared_prefix import pack_pairs
from umm_ray.data.tokenize import encode_prompt_response, pad_batch
from umm_ray.models.reward_model import (EnsembleScorer, RewardModelScorer, load_reward_model, load_scorer,
                                         pair_rewards_shared_prefix, reward_forward)
from umm_ray.models.upcycle import save_moe, upcycle
from umm_ray.records import Scorer

PROMPTS = ["the cat sat on", "question one two", "list red blue", "sum", "word long"]
RESPONSES = [" the mat", " yes good answer", " green blue red", " ten", " long long long long"]


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_reward_forward_matches_hf_and_ignores_padding(family, tok, batch):
    ids, mask = batch
    model = make_rm(family, tok)
    with torch.no_grad():
        r = reward_forward(model, ids, mask)
        hf = model(input_ids=ids, attention_mask=mask).logits[:, 0]  # HF pools at the last non-pad id
        lengths = [int(m.sum()) for m in mask]
        alone = torch.stack([reward_forward(model, ids[i:i + 1, :n], mask[i:i + 1, :n])[0]
                             for i, n in enumerate(lengths)])
    assert r.shape == (ids.shape[0],) and r.dtype == torch.float32
    torch.testing.assert_close(r, hf, rtol=0, atol=1e-5)
    torch.testing.assert_close(r, alone, rtol=0, atol=1e-5)


PAIR_PROMPTS = ["the cat sat on", "question one two three", "sum"]
CHOSEN = [" the mat", " yes good answer", " ten"]
REJECTED = [" a dog", " no", " one two three four five six"]


def _pair_rows(tok):
    enc = lambda rs: [encode_prompt_response(tok, p, r, 32)[0] for p, r in zip(PAIR_PROMPTS, rs)]  # noqa: E731
    return enc(CHOSEN), enc(REJECTED)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_shared_prefix_rewards_and_gradients_equal_two_rows(family, attn, tok):
    """One packed row per pair (prompt once) gives each response the reward, and the BT loss the gradient, of
    scoring chosen and rejected as their own rows."""
    chosen, rejected = _pair_rows(tok)
    model = make_rm(family, tok)
    model.config._attn_implementation = attn
    ids, mask = pad_batch(chosen + rejected, tok.pad_token_id)
    packed = pack_pairs(chosen, rejected, tok.pad_token_id)
    assert packed["mask"].sum() < mask.sum()  # the prompts really are shared

    def loss_and_grads(fn):
        model.zero_grad()
        r = fn()
        rc, rr = r.chunk(2)
        (-torch.nn.functional.logsigmoid(rc - rr).mean()).backward()
        return r.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    r2, g2 = loss_and_grads(lambda: reward_forward(model, ids, mask))
    r1, g1 = loss_and_grads(lambda: pair_rewards_shared_prefix(model, **packed))
    torch.testing.assert_close(r1, r2, rtol=0, atol=1e-5)
    assert g1.keys() == g2.keys()
    for name in g2:
        torch.testing.assert_close(g1[name], g2[name], rtol=1e-4, atol=1e-4, msg=name)  # grads reach ~10


def test_shared_prefix_refuses_attention_without_a_dense_mask(tok):
    chosen, rejected = _pair_rows(tok)
    model = make_rm("llama", tok)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="share_prompt needs sdpa or eager.*flash_attention_2"):
        pair_rewards_shared_prefix(model, **pack_pairs(chosen, rejected, tok.pad_token_id))


def test_shared_prefix_rewards_of_a_noiseless_moe(tok):
    chosen, rejected = _pair_rows(tok)
    moe = upcycle(make_rm("llama", tok), num_experts=4, top_k=2, noisy=False, seed=0).eval()
    ids, mask = pad_batch(chosen + rejected, tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(pair_rewards_shared_prefix(moe, **pack_pairs(chosen, rejected, tok.pad_token_id)),
                                   reward_forward(moe, ids, mask), rtol=0, atol=1e-5)


@pytest.fixture
def dense_dir(tok, tmp_path):
    model = make_rm("llama", tok)
    model.save_pretrained(tmp_path / "dense")
    tok.save_pretrained(tmp_path / "dense")
    return tmp_path / "dense", model


def test_load_reward_model_round_trip_and_scorer(dense_dir, tok):
    path, model = dense_dir
    loaded, tok2 = load_reward_model(path)
    assert not loaded.training and len(tok2) == len(tok)
    scorer = RewardModelScorer(loaded, tok2, max_len=32, batch_size=2)  # batches of 2: sorting + unsorting
    assert isinstance(scorer, Scorer)
    got = scorer.score(PROMPTS, RESPONSES)
    from umm_ray.data.tokenize import encode_texts

    ids, mask = encode_texts(tok, PROMPTS, RESPONSES, 32)
    with torch.no_grad():
        want = reward_forward(model.eval(), ids, mask)
    assert len(got) == len(PROMPTS) and all(isinstance(v, float) for v in got)
    torch.testing.assert_close(torch.tensor(got), want, rtol=0, atol=1e-5)
    assert inspect.signature(load_reward_model).parameters["trust_remote_code"].default is False
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        scorer.score(PROMPTS[:2], RESPONSES[:1])


def _save_with_tok(model, tok, path):
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_rejects_unsupported_family(tok, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.for_model("opt", vocab_size=len(tok), hidden_size=64, ffn_dim=128, num_hidden_layers=1,
                               num_attention_heads=1, word_embed_proj_dim=64, num_labels=1, pad_token_id=0)
    path = _save_with_tok(AutoModelForSequenceClassification.from_config(cfg), tok, tmp_path / "opt")
    with pytest.raises(ValueError, match="unsupported backbone family model_type='opt'"):
        load_reward_model(path)


def test_rejects_causal_lm_checkpoint(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = tiny_config("llama", len(tok))
    path = _save_with_tok(AutoModelForCausalLM.from_config(cfg), tok, tmp_path / "clm")
    with pytest.raises(ValueError, match=r"not a reward model: architectures=\['LlamaForCausalLM'\]"):
        load_reward_model(path)
    # the same weights with the architecture name stripped: caught by the missing score head
    cfg_file = path / "config.json"
    raw = json.loads(cfg_file.read_text())
    raw.pop("architectures", None)
    cfg_file.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="no trained score head"):
        load_reward_model(path)


def test_rejects_multi_label_classifier(tok, tmp_path):
    from transformers import AutoModelForSequenceClassification

    cfg = tiny_config("qwen2", len(tok))
    cfg.num_labels = 3
    path = _save_with_tok(AutoModelForSequenceClassification.from_config(cfg), tok, tmp_path / "cls3")
    with pytest.raises(ValueError, match="num_labels=3"):
        load_reward_model(path)


def test_rejects_vocab_mismatch(tok, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_config(tiny_config("gpt_neox", vocab_size=len(tok) - 5))
    path = _save_with_tok(model, tok, tmp_path / "small_vocab")
    with pytest.raises(ValueError, match=f"vocab mismatch: tokenizer has {len(tok)} tokens .* vocab_size is "
                                         f"{len(tok) - 5}"):
        load_reward_model(path)


def test_rejects_pickle_only_checkpoint(dense_dir, tmp_path):
    path, model = dense_dir
    for f in path.glob("*.safetensors"):
        f.unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"only pickle weights \['pytorch_model.bin'\].*safetensors only"):
        load_reward_model(path)


def test_load_scorer_dense_moe_and_ensemble(dense_dir, tok, tmp_path):
    path, model = dense_dir
    moe = upcycle(model, 4, 2, seed=5)
    with torch.no_grad():
        for name, p in moe.named_parameters():
            if "experts" in name:
                p.add_(torch.randn_like(p) * 0.05)
    save_moe(moe, tok, tmp_path / "moe")
    dense_scores = load_scorer(path, max_len=32).score(PROMPTS, RESPONSES)
    moe_scores = load_scorer(tmp_path / "moe", max_len=32).score(PROMPTS, RESPONSES)
    direct = RewardModelScorer(moe, tok, max_len=32).score(PROMPTS, RESPONSES)
    torch.testing.assert_close(torch.tensor(moe_scores), torch.tensor(direct), rtol=0, atol=1e-6)
    assert max(abs(a - b) for a, b in zip(moe_scores, dense_scores)) > 1e-4  # the perturbed MoE differs
    manifest = tmp_path / "ens.json"
    scale = [[0.3, 2.0], [-0.7, 0.5]]  # each member's [mean, std]: the ensemble combines (raw - mean) / std
    manifest.write_text(json.dumps({"members": ["dense", str(tmp_path / "moe")], "aggregate": "uwo", "lambda": 0.5,
                                    "scale": scale}))
    ens = load_scorer(manifest, max_len=32)
    assert isinstance(ens, EnsembleScorer) and isinstance(ens, Scorer)
    members = torch.tensor(ens.member_scores(PROMPTS, RESPONSES))
    raw = torch.tensor([dense_scores, moe_scores])
    want = (raw - torch.tensor([[0.3], [-0.7]])) / torch.tensor([[2.0], [0.5]])
    torch.testing.assert_close(members, want, rtol=0, atol=1e-6)
    assert ens.members[0].tok is ens.members[0].inner.tok  # the wrapper hands through the scorer's tokenizer
    mean, var = members.mean(0), ((members - members.mean(0)) ** 2).mean(0)
    torch.testing.assert_close(torch.tensor(ens.score(PROMPTS, RESPONSES)), mean - 0.5 * var, rtol=0, atol=1e-6)


def test_bad_manifest_and_aggregate(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"members": []}))
    with pytest.raises(ValueError, match="non-empty list of member paths"):
        load_scorer(bad)
    bad.write_text(json.dumps({"members": ["a", "b"]}))  # written before members had a scale: refused, with the fix
    with pytest.raises(ValueError, match=r"bad.json: ensemble manifest has no 'scale'.*\[\[0, 1\], \[0, 1\]\]"):
        load_scorer(bad)
    for scale in ([[0.0, 1.0]], [[0.0, 1.0], [0.0, 0.0]], [[0.0, 1.0], "x"]):  # wrong length, std 0, not a pair
        bad.write_text(json.dumps({"members": ["a", "b"], "scale": scale}))
        with pytest.raises(ValueError, match=r"'scale' must hold one \[mean, std > 0\] per member \(2\)"):
            load_scorer(bad)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        EnsembleScorer([object()], aggregate="max")
