"""Tiny reward models and a tokenizer for the model tests (hidden 128, 2 layers, head_dim 64), built from configs.

Uses `umm_ray.testbed.models` / `umm_ray.testbed.tokenizer` when the testbed provides them, else builds the same
shapes directly from `transformers` configs (no downloads either way).
"""

from __future__ import annotations

import pytest
import torch

FAMILIES = ("llama", "qwen2", "gpt_neox", "gpt2")
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


def tiny_config(family: str, vocab_size: int, hidden: int = 128, layers: int = 2, inter: int = 256):
    """A tiny sequence-classification config (num_labels 1, pad id 0, dropout 0) of `family`."""
    from transformers import AutoConfig

    heads = hidden // 64
    common = dict(vocab_size=vocab_size, num_labels=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    sizes = {
        "llama": dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256),
        "qwen2": dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=256),
        "gpt_neox": dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=heads, max_position_embeddings=256, hidden_dropout=0.0,
                         attention_dropout=0.0),
        "gpt2": dict(n_embd=hidden, n_inner=inter, n_layer=layers, n_head=heads, n_positions=256,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0),
    }[family]
    return AutoConfig.for_model(family, **common, **sizes)


def make_rm(family: str, tok, seed: int = 0):
    """A tiny randomly initialised reward model of `family` whose vocab fits `tok`."""
    try:
        from umm_ray.testbed.models import make_reward_model
    except ImportError:
        make_reward_model = None
    if make_reward_model is not None:
        return make_reward_model(family, tok, seed=seed).float().eval()
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(family, len(tok)))
    # A non-trivial score head: HF inits it with small std; a larger one makes score differences visible.
    torch.nn.init.normal_(model.score.weight, std=0.5)
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
