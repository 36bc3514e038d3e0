"""The locally trained tokenizer: exact round trip, special tokens, standard HF save/reload, deterministic training."""

from __future__ import annotations

import random

import pytest
from transformers import AutoTokenizer

from umm_ray.data.tokenize import encode_prompt_response
from umm_ray.testbed.tokenizer import tokenizer_stats, train_tokenizer
from umm_ray.testbed.world import make_prompts, sft_responses


@pytest.fixture(scope="module")
def texts():
    ps = make_prompts(400, seed=0)
    rng = random.Random(0)
    return [p.prompt for p in ps] + [p.reference for p in ps] + [r for p in ps for r in sft_responses(p, 2, rng)]


@pytest.fixture(scope="module")
def tok_dir(texts, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(texts, 1024, out)
    return out


def test_reload_and_special_tokens(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert len(tok) <= 1024
    assert tok("List 3 fruits.\nAnswer:")["input_ids"] == tok("List 3 fruits.\nAnswer:", add_special_tokens=False)[
        "input_ids"]  # nothing added automatically: training and vLLM see the same prompt ids


def test_round_trip_exact(tok_dir, texts):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    for t in texts[::7] + [" apple, pear.", "  two  spaces\tand\ttabs ~!", ""]:
        assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
    ids, n_prompt = encode_prompt_response(tok, "List 2 fruits.\nAnswer:", " apple, pear.", 64)
    assert ids[-1] == tok.eos_token_id
    assert tok.decode(ids[n_prompt:-1]) == " apple, pear."  # the response keeps its leading space


def test_world_words_are_mostly_single_tokens(tok_dir, texts):
    stats = tokenizer_stats(AutoTokenizer.from_pretrained(tok_dir), texts)
    print(f"\ntokenizer stats (vocab 1024): {stats}")
    assert stats["tokens_per_word"] < 1.7 and stats["max_tokens"] <= 40


def test_training_is_deterministic(texts, tmp_path):
    a = train_tokenizer(texts, 600, None)
    b = train_tokenizer(texts, 600, None)
    assert a.get_vocab() == b.get_vocab()


def test_non_ascii_is_bytes(tok_dir):
    tok = AutoTokenizer.from_pretrained(tok_dir)
    assert tok.unk_token_id not in tok("café", add_special_tokens=False)["input_ids"]  # bytes, not unk


def test_vocab_too_small():
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b c"], 50, None)
