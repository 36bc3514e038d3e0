"""Tiny reward models (the testbed's: hidden 128, 2 layers, head_dim 64, from configs) and a small word-level
tokenizer for the model tests (no downloads)."""

from __future__ import annotations

import pytest
import torch

from umm_ray.testbed import models as testbed_models

WORDS = ("the a cat dog sat on mat good bad answer question is not very yes no one two three four five "
         "six seven eight nine ten red blue green list sort sum word long short repeat").split()


def make_tokenizer():
    """A word-level tokenizer over WORDS with <pad>=0, <bos>=1, <eos>=2, <unk>=3 (vocab 4 + len(WORDS))."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<pad>", "<bos>", "<eos>", "<unk>"] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def tiny_config(family: str, vocab_size: int):
    """The testbed's tiny config (hidden 128, 2 layers, head_dim 64) of `family`, pad 0 / bos 1 / eos 2."""
    cfg = testbed_models.tiny_config(family, vocab_size=vocab_size)
    cfg.pad_token_id, cfg.bos_token_id, cfg.eos_token_id = 0, 1, 2
    cfg.num_labels = 1
    return cfg


def make_rm(family: str, tok, seed: int = 0):
    """The testbed's tiny reward model of `family`, with a larger score head so score differences are visible."""
    model = testbed_models.make_reward_model(family, tok, seed=seed)
    with torch.no_grad():  # HF inits the head with std 0.02: scores ~1e-2 would make the 1e-5 checks weak
        model.score.weight.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(seed))
    return model.float().eval()


@pytest.fixture(scope="session")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="session")
def batch(tok):
    """(ids [6, T], mask [6, T]) right-padded, rows of different lengths."""
    from umm_ray.data.tokenize import encode_texts

    prompts = ["the cat sat on", "question one two", "list red blue", "sort five four three", "sum", "word long"]
    responses = [" the mat", " yes good answer", " green", " three four five six seven eight", " ten", " long long"]
    return encode_texts(tok, prompts, responses, max_len=32)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP spinning under load
    makes them ~20x slower; restore the setting afterwards for other test folders."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
