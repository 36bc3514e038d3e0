"""A byte-level BPE tokenizer trained locally on the world's texts, saved as a standard HF tokenizer.

Byte-level (GPT-2 style, all 256 bytes in the base alphabet) so that every string round-trips exactly — responses
keep their leading space. The normalizer and pre-tokenizer are exactly Qwen2's (NFC; split regex; byte level without
regex): transformers 5 loads any directory whose config.json says `qwen2` with its own Qwen2Tokenizer, which rebuilds
that pipeline around our vocab and merges — matching it means every loader (TokenizersBackend, Qwen2Tokenizer, vLLM)
produces the same ids for the same text, for every model family. No special token is added automatically: the
project's tokenization (`umm_ray.data.tokenize`) appends EOS itself, and vLLM then sees the same prompt ids as
training did.

    tok = train_tokenizer(texts, vocab_size=1024, out_dir="runs/x/prepare/tokenizer")
    tok = AutoTokenizer.from_pretrained("runs/x/prepare/tokenizer")   # the same tokenizer
    chat = with_chat_template(tok)       # a copy with ChatML, eos = pad = <|im_end|>, as SmolLM2-Instruct has

The testbed's own tokenizer has no chat template, so `model.chat_template auto` leaves its prompts as they are.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# SmolLM2-135M-Instruct's chat template, verbatim: ChatML with a default system turn when the chat has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3 in this order
# Qwen2's pre-tokenization regex (transformers.models.qwen2.tokenization_qwen2.PRETOKENIZE_REGEX), kept identical.
SPLIT_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
               r"""|\s+(?!\S)|\s+""")


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None
                    ) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` and (if `out_dir`) save it with `save_pretrained`.

    Args:
        texts: training strings (prompts and responses of the world).
        vocab_size: total vocabulary including the 256 byte symbols and 4 special tokens (> 260).
        out_dir: where to save; reload with `AutoTokenizer.from_pretrained(out_dir)`.

    Returns:
        The tokenizer, with bos/eos/pad/unk set (pad id 0, bos 1, eos 2, unk 3).
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    base = len(alphabet) + len(SPECIAL_TOKENS)
    if vocab_size <= base:
        raise ValueError(f"testbed.vocab_size: {vocab_size} leaves no merges; need > {base} (256 bytes + specials)")
    tk = Tokenizer(models.BPE())
    tk.normalizer = normalizers.NFC()
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=alphabet, show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                  model_max_length=4096, clean_up_tokenization_spaces=False)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(out_dir))
        portable_class_name(Path(out_dir) / "tokenizer_config.json")
    return tok


def with_chat_template(tok, template: str = CHATML_TEMPLATE):
    """A copy of `tok` that behaves like a chat model's tokenizer: `<|im_start|>` / `<|im_end|>` added as special
    tokens (ids len(tok), len(tok) + 1), eos = pad = `<|im_end|>` (the end-of-turn token generation stops on), and
    `template` as its chat template. `tok` itself is left unchanged."""
    out = copy.deepcopy(tok)
    out.add_tokens([IM_START, IM_END], special_tokens=True)
    out.eos_token = out.pad_token = IM_END
    out.chat_template = template
    return out


def portable_class_name(config_path: Path) -> None:
    """Name the generic class PreTrainedTokenizerFast (transformers 4.x loads it as that, 5.x as TokenizersBackend)."""
    cfg = json.loads(config_path.read_text())
    if cfg.get("tokenizer_class") not in (None, "TokenizersBackend"):
        return  # a model-specific class: leave it
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(cfg, indent=2) + "\n")


def tokenizer_stats(tok, texts: list[str]) -> dict:
    """Mean and max token counts of `texts`, and the mean tokens per word (how word-like the vocabulary is)."""
    lens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    words = sum(max(1, len(t.split())) for t in texts)
    return {"mean_tokens": sum(lens) / max(1, len(lens)), "max_tokens": max(lens, default=0),
            "tokens_per_word": sum(lens) / max(1, words)}
