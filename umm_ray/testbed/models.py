"""Tiny models of the paper's families (Llama, Qwen2, GPT-NeoX; GPT-2 too) built from configs, no downloads.

head_dim is fixed at 64 (num_heads = hidden_size / 64; grouped KV only when `num_kv_heads` is given), so the shapes
match what vLLM's CPU kernels support. Weights are float32 and saved as safetensors with `save_model`.
`CHAT_MODEL` gives a Llama with the quirks of a real small chat model (SmolLM2-135M-Instruct): tied embeddings and
grouped-query attention with 3 KV heads; pair it with `testbed.tokenizer.with_chat_template` (ChatML, eos = pad).

    tok = AutoTokenizer.from_pretrained(".../tokenizer")
    lm = make_causal_lm("llama", tok, seed=0)                  # LlamaForCausalLM, 2 layers, hidden 128
    rm = make_reward_model("qwen2", tok, seed=0)               # Qwen2ForSequenceClassification, num_labels=1
    chat = make_causal_lm("llama", with_chat_template(tok), **CHAT_MODEL)   # tied, 6 heads over 3 KV heads
    save_model(lm, tok, "runs/x/prepare/base")
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, GenerationConfig, GPT2Config,
                          GPTNeoXConfig, LlamaConfig, PretrainedConfig, Qwen2Config)

from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.testbed.tokenizer import portable_class_name

HEAD_DIM = 64
# A tiny Llama shaped like SmolLM2-135M-Instruct where it matters (tied input/output embeddings, 3 KV heads shared by
# the query heads: 6 here, 9 there), small enough for the non-slow tests.
CHAT_MODEL = {"hidden_size": 384, "num_layers": 2, "intermediate_size": 256, "max_seq_len": 256, "num_kv_heads": 3,
              "tie_embeddings": True}


def _special_ids(tokenizer) -> dict:
    if tokenizer is None:
        return {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": pad}


def tiny_config(family: str, vocab_size: int | None = None, hidden_size: int = 128, num_layers: int = 2,
                intermediate_size: int = 256, max_seq_len: int = 256, tokenizer=None, num_kv_heads: int | None = None,
                tie_embeddings: bool = False) -> PretrainedConfig:
    """Config of a tiny model of `family` with head_dim 64.

    Args:
        family: one of ARCH_FAMILIES.
        vocab_size: embedding rows; defaults to `len(tokenizer)` (then required).
        hidden_size: a multiple of 64; num_attention_heads = hidden_size // 64.
        max_seq_len: max_position_embeddings (context length in tokens).
        tokenizer: supplies bos/eos/pad ids (and vocab_size when not given).
        num_kv_heads: key/value heads for grouped-query attention (llama / qwen2 only; must divide the query heads);
            None = one per query head.
        tie_embeddings: share the input embedding with the LM head (tie_word_embeddings).

    Raises:
        ValueError: naming the bad argument (unknown family, hidden_size not a multiple of 64, vocab too small, KV
            heads that do not divide the query heads or a family without grouped KV).
    """
    if family not in ARCH_FAMILIES:
        raise ValueError(f"model family {family!r} is not one of {list(ARCH_FAMILIES)}")
    if hidden_size % HEAD_DIM:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of {HEAD_DIM} (head_dim is fixed at 64)")
    if vocab_size is None:
        if tokenizer is None:
            raise ValueError("tiny_config: give vocab_size or a tokenizer")
        vocab_size = len(tokenizer)
    if tokenizer is not None and vocab_size < len(tokenizer):
        raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
    heads = hidden_size // HEAD_DIM
    kv_heads = heads if num_kv_heads is None else num_kv_heads
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"num_kv_heads {num_kv_heads} must divide the {heads} query heads (hidden_size / 64)")
    if kv_heads != heads and family not in ("llama", "qwen2"):
        raise ValueError(f"num_kv_heads: family {family!r} has no grouped-query attention (llama, qwen2 do)")
    ids = _special_ids(tokenizer)
    common = dict(vocab_size=vocab_size, tie_word_embeddings=tie_embeddings, **ids)
    if family in ("llama", "qwen2"):
        cls = LlamaConfig if family == "llama" else Qwen2Config
        cfg = cls(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=HEAD_DIM,
                  max_position_embeddings=max_seq_len, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                  rms_norm_eps=1e-6, **common)
        if family == "qwen2":
            cfg.max_window_layers = num_layers
    elif family == "gpt_neox":
        cfg = GPTNeoXConfig(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=num_layers,
                            num_attention_heads=heads, max_position_embeddings=max_seq_len,
                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "partial_rotary_factor": 0.25}, **common)
    else:
        cfg = GPT2Config(n_embd=hidden_size, n_inner=intermediate_size, n_layer=num_layers, n_head=heads,
                         n_positions=max_seq_len, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                         summary_first_dropout=0.0, **common)  # no dropout: RL log-probs must be deterministic
    cfg.dtype = torch.float32
    return cfg


def _build(auto_cls, family: str, tokenizer, seed: int, sizes: dict, **extra):
    cfg = tiny_config(family, tokenizer=tokenizer, **sizes)
    for k, v in extra.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)  # initialisation is the only randomness; same seed -> same weights
    model = auto_cls.from_config(cfg, dtype=torch.float32)
    ids = _special_ids(tokenizer)
    if hasattr(model, "generation_config") and model.generation_config is not None and auto_cls is AutoModelForCausalLM:
        model.generation_config = GenerationConfig(**ids, max_length=cfg.max_position_embeddings
                                                   if hasattr(cfg, "max_position_embeddings") else cfg.n_positions)
    return model


def make_causal_lm(family: str, tokenizer, seed: int = 0, **sizes):
    """A freshly initialised tiny causal LM (`AutoModelForCausalLM`), eos/bos/pad ids in config and generation config.

    `sizes` are tiny_config's keyword arguments (hidden_size, num_layers, intermediate_size, max_seq_len, vocab_size,
    num_kv_heads, tie_embeddings).
    """
    return _build(AutoModelForCausalLM, family, tokenizer, seed, sizes)


def make_reward_model(family: str, tokenizer, seed: int = 0, **sizes):
    """A freshly initialised tiny sequence classifier with one output (a reward model), pad_token_id set so the
    score is read at each sequence's last real token."""
    return _build(AutoModelForSequenceClassification, family, tokenizer, seed, sizes, num_labels=1)


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """Save model (safetensors), its generation config and the tokenizer into one HF directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out))
        portable_class_name(out / "tokenizer_config.json")
    return out
