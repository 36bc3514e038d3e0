"""umm_ray/data/tokenize.py with a tiny word-level tokenizer built here (one token per whitespace-separated word)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from umm_ray.data.tokenize import encode_prompt_response, encode_texts, pad_batch

WORDS = "Human: Assistant: hi hello how are you fine thanks a b c d e f g h".split()


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    t = Tokenizer(models.WordLevel(unk_token="<unk>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.train_from_iterator([" ".join(WORDS)], trainers.WordLevelTrainer(special_tokens=["<pad>", "<eos>", "<unk>"]))
    return PreTrainedTokenizerFast(tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def _ids(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_fits_whole_with_eos(tok):
    ids, plen = encode_prompt_response(tok, "Human: hi Assistant:", " hello how are you", max_len=16)
    assert ids == _ids(tok, "Human: hi Assistant:") + _ids(tok, "hello how are you") + [tok.eos_token_id]
    assert plen == 3 and tok.eos_token_id == 1
    ids, plen = encode_prompt_response(tok, "Human: hi Assistant:", " fine", max_len=16, add_eos=False)
    assert ids == _ids(tok, "Human: hi Assistant: fine") and plen == 3


def test_truncation_drops_prompt_start_keeps_response(tok):
    prompt, response = "Human: a b c d e f Assistant:", " hello how"
    ids, plen = encode_prompt_response(tok, prompt, response, max_len=6)
    # response + eos = 3 tokens kept whole; the prompt keeps its last 3 tokens
    assert ids == _ids(tok, "e f Assistant: hello how") + [tok.eos_token_id]
    assert plen == 3 and len(ids) == 6


def test_response_longer_than_max_len_keeps_one_prompt_token(tok):
    ids, plen = encode_prompt_response(tok, "Human: hi Assistant:", " a b c d e f g h", max_len=5)
    assert ids == _ids(tok, "Assistant: a b c d") and plen == 1  # eos does not fit


def test_pad_batch_right_and_left(tok):
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="right")
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_encode_texts_batch(tok):
    ids, mask = encode_texts(tok, ["Human: hi Assistant:", "Human: a b c Assistant:"], [" fine", " thanks a"], 32)
    assert ids.shape == mask.shape == (2, 8)
    assert mask.sum(1).tolist() == [5, 8]
    assert ids[0, 5:].tolist() == [tok.pad_token_id] * 3 and ids[0, 4].item() == tok.eos_token_id
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        encode_texts(tok, ["a", "b"], ["c"], 8)
