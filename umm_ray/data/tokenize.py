"""Turning (prompt, response) text into token ids, the one way every stage does it.

The model input is the rendered prompt (`umm_ray.data.chat.render_prompt`: the tokenizer's chat template under
`model.chat_template auto`, else the prompt itself) followed by the response and EOS. Without a template that is
plain concatenation (HH prompts end with "\\n\\nAssistant:", testbed prompts with "\\nAnswer:"; responses start with
a space). Too-long inputs lose the *start* of the prompt, so the response — the part being scored or trained — is
always kept whole when it fits.
"""

from __future__ import annotations

import torch

from umm_ray.data.chat import prompt_ids, response_ids


def encode_prompt_response(tokenizer, prompt: str, response: str, max_len: int, add_eos: bool = True,
                           chat_template: str = "auto") -> tuple[list[int], int]:
    """Tokenize one example; `chat_template` is the model.chat_template mode ('auto' | 'none').

    Returns:
        ids: token ids of prompt + response (+ eos), at most `max_len` long.
        prompt_len: how many of `ids` belong to the prompt (the rest is the response).
    """
    p = prompt_ids(tokenizer, prompt, chat_template)
    r = response_ids(tokenizer, response, add_eos)
    r = r[:max_len - 1] if len(r) >= max_len else r
    p = p[-(max_len - len(r)):] if len(p) + len(r) > max_len else p
    return p + r, len(p)


def pad_batch(seqs: list[list[int]], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists into `input_ids` [B, T] and `attention_mask` [B, T] (1 = real token)."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "right":
            ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, :len(s)] = 1
        else:
            ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, T - len(s):] = 1
    return ids, mask


def encode_texts(tokenizer, prompts: list[str], responses: list[str], max_len: int, chat_template: str = "auto"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch of (prompt, response) -> right-padded `input_ids` [B, T], `attention_mask` [B, T] for scoring."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs = [encode_prompt_response(tokenizer, p, r, max_len, chat_template=chat_template)[0]
            for p, r in zip(prompts, responses)]
    return pad_batch(seqs, pad)
