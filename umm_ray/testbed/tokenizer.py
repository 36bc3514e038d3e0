"""A byte-level BPE tokenizer trained locally on the world's texts, saved as a standard HF tokenizer.

Byte-level (GPT-2 style) so that strings round-trip exactly — responses keep their leading space. The base alphabet
is the printable ASCII bytes plus tab/newline rather than all 256 bytes, which leaves ~150 more merges for whole words
at small vocabularies; any other byte (non-ASCII text, which the world never produces) encodes as <|unk|>. No special token is added automatically: the
project's tokenization (`umm_ray.data.tokenize`) appends EOS itself, and vLLM then sees the same prompt ids as
training did.

    tok = train_tokenizer(texts, vocab_size=1024, out_dir="runs/x/prepare/tokenizer")
    tok = AutoTokenizer.from_pretrained("runs/x/prepare/tokenizer")   # the same tokenizer
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD, UNK = "<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0..3 in this order


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | Path | None = None
                    ) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` and (if `out_dir`) save it with `save_pretrained`.

    Args:
        texts: training strings (prompts and responses of the world).
        vocab_size: total vocabulary including the 97 ASCII byte symbols and 4 special tokens (>= 102).
        out_dir: where to save; reload with `AutoTokenizer.from_pretrained(out_dir)`.

    Returns:
        The tokenizer, with bos/eos/pad/unk set (pad id 0, bos 1, eos 2, unk 3).
    """
    alphabet = _ascii_alphabet()
    base = len(alphabet) + len(SPECIAL_TOKENS)
    if vocab_size <= base:
        raise ValueError(f"testbed.vocab_size: {vocab_size} leaves no merges; need > {base} (ASCII bytes + specials)")
    tk = Tokenizer(models.BPE(unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=alphabet, show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token=UNK,
                                  model_max_length=4096, clean_up_tokenization_spaces=False)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(str(out_dir))
        _portable_class_name(Path(out_dir) / "tokenizer_config.json")
    return tok


def _ascii_alphabet() -> list[str]:
    """The byte-level symbols of printable ASCII, tab and newline (GPT-2's byte-to-unicode map)."""
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    text = "".join(chr(b) for b in range(32, 127)) + "\t\n"
    return sorted({ch for piece, _ in pre.pre_tokenize_str(text) for ch in piece})


def _portable_class_name(config_path: Path) -> None:
    """Name the class PreTrainedTokenizerFast: transformers 4.x loads it as that, 5.x as its TokenizersBackend."""
    cfg = json.loads(config_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(cfg, indent=2) + "\n")


def tokenizer_stats(tok, texts: list[str]) -> dict:
    """Mean and max token counts of `texts`, and the mean tokens per word (how word-like the vocabulary is)."""
    lens = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts]
    words = sum(max(1, len(t.split())) for t in texts)
    return {"mean_tokens": sum(lens) / max(1, len(lens)), "max_tokens": max(lens, default=0),
            "tokens_per_word": sum(lens) / max(1, words)}
