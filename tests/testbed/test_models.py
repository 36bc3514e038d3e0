"""Tiny model factories: every family builds, runs forward with head_dim 64, and round-trips through save_pretrained."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.testbed.models import make_causal_lm, make_reward_model, save_model, tiny_config
from umm_ray.testbed.tokenizer import train_tokenizer
from umm_ray.testbed.world import make_prompts


@pytest.fixture(scope="module")
def tok():
    ps = make_prompts(200, seed=0)
    return train_tokenizer([p.prompt for p in ps] + [p.reference for p in ps], 400, None)


def _batch(tok):
    rows = [tok("List 3 fruits.\nAnswer: apple", add_special_tokens=False)["input_ids"],
            tok("What color is a fig?\nAnswer: a fig is purple.", add_special_tokens=False)["input_ids"]]
    T = max(map(len, rows))
    ids = torch.full((2, T), tok.pad_token_id)
    mask = torch.zeros((2, T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)], mask[i, :len(r)] = torch.tensor(r), 1
    return ids, mask


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_config_shapes(family, tok):
    cfg = tiny_config(family, tokenizer=tok, hidden_size=192, num_layers=3, intermediate_size=96, max_seq_len=128)
    assert cfg.hidden_size == 192 and cfg.num_attention_heads == 3  # head_dim 64
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    assert cfg.num_hidden_layers == 3 and cfg.vocab_size == len(tok)
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (1, 2, 0)
    assert cfg.max_position_embeddings == 128


@pytest.mark.parametrize("family", ARCH_FAMILIES)
def test_build_forward_save_reload(family, tok, tmp_path):
    ids, mask = _batch(tok)
    lm = make_causal_lm(family, tok, seed=1)
    rm = make_reward_model(family, tok, seed=1)
    lm.eval(), rm.eval()
    logits = lm(input_ids=ids, attention_mask=mask).logits
    rewards = rm(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (2, ids.shape[1], len(tok)) and rewards.shape == (2, 1)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == tok.pad_token_id
    assert lm.generation_config.eos_token_id == tok.eos_token_id
    # same seed, same weights
    assert torch.equal(make_causal_lm(family, tok, seed=1)(input_ids=ids).logits, lm(input_ids=ids).logits)
    save_model(lm, tok, tmp_path / "lm")
    save_model(rm, tok, tmp_path / "rm")
    assert (tmp_path / "lm" / "model.safetensors").is_file()
    lm2 = AutoModelForCausalLM.from_pretrained(tmp_path / "lm")
    rm2 = AutoModelForSequenceClassification.from_pretrained(tmp_path / "rm")
    torch.testing.assert_close(lm2(input_ids=ids, attention_mask=mask).logits, logits)
    torch.testing.assert_close(rm2(input_ids=ids, attention_mask=mask).logits, rewards)
    # the score is read at each row's last real token: padding more on the right changes nothing
    pad = torch.full((2, 3), tok.pad_token_id)
    wider = rm2(input_ids=torch.cat([ids, pad], 1), attention_mask=torch.cat([mask, torch.zeros_like(pad)], 1)).logits
    torch.testing.assert_close(wider, rewards, atol=1e-5, rtol=1e-4)
    _check_tokenizer_from_model_dir(tok, tmp_path / "lm")


def _check_tokenizer_from_model_dir(tok, path):
    """transformers 5 picks a tokenizer class by model type (Qwen2Tokenizer for qwen2, which rebuilds the
    pre-tokenizer): whatever class loads from a saved model dir must give the same ids as the trained tokenizer."""
    loaded = AutoTokenizer.from_pretrained(path)
    texts = [p.prompt + p.reference for p in make_prompts(50, seed=5)] + [" 12 apples,  café\t~ 😀\n", "List 3"]
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert loaded(t)["input_ids"] == ids and loaded.decode(ids) == t, (type(loaded).__name__, t)
    assert [loaded.pad_token_id, loaded.bos_token_id, loaded.eos_token_id] == [0, 1, 2]


def test_bad_arguments(tok):
    with pytest.raises(ValueError, match="multiple of 64"):
        tiny_config("llama", tokenizer=tok, hidden_size=100)
    with pytest.raises(ValueError, match="not one of"):
        tiny_config("mamba", tokenizer=tok)
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        tiny_config("qwen2", vocab_size=10, tokenizer=tok)


def test_chat_model_has_the_real_models_quirks(tok, tmp_path):
    """CHAT_MODEL + with_chat_template: tied embeddings, 6 query heads over 3 KV heads, eos = pad; reloads the same."""
    from umm_ray.testbed.models import CHAT_MODEL
    from umm_ray.testbed.tokenizer import with_chat_template

    chat = with_chat_template(tok)
    lm = make_causal_lm("llama", chat, seed=0, **CHAT_MODEL)
    cfg = lm.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (6, 3, 64)
    assert cfg.tie_word_embeddings and lm.lm_head.weight is lm.get_input_embeddings().weight
    assert cfg.eos_token_id == cfg.pad_token_id == chat.eos_token_id and cfg.vocab_size == len(tok) + 2
    save_model(lm, chat, tmp_path)
    back = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids, mask = _batch(chat)
    with torch.no_grad():
        assert torch.allclose(back(input_ids=ids, attention_mask=mask).logits,
                              lm.eval()(input_ids=ids, attention_mask=mask).logits, atol=1e-5)
    assert AutoTokenizer.from_pretrained(tmp_path).chat_template == chat.chat_template


def test_kv_heads_must_divide_the_query_heads(tok):
    with pytest.raises(ValueError, match="num_kv_heads 4 must divide the 6 query heads"):
        tiny_config("llama", tokenizer=tok, hidden_size=384, num_kv_heads=4)
    with pytest.raises(ValueError, match="'gpt2' has no grouped-query attention"):
        tiny_config("gpt2", tokenizer=tok, hidden_size=384, num_kv_heads=3)
    assert tiny_config("qwen2", tokenizer=tok, hidden_size=384, num_kv_heads=3).num_key_value_heads == 3
