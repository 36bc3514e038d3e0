"""How a prompt becomes model-input text: the tokenizer's chat template, or the prompt as it is. One place for all.

`model.chat_template` picks the mode:

- `auto` (default): when the tokenizer has a chat template, a prompt is rendered as one user turn followed by the
  assistant header (`apply_chat_template(..., add_generation_prompt=True)`); e.g. ChatML gives
  `<|im_start|>user\\n{prompt}<|im_end|>\\n<|im_start|>assistant\\n`. A tokenizer without one (the testbed's)
  gets the prompt unchanged, so `auto` there is exactly `none`.
- `none`: the prompt unchanged: the model input is plain `prompt + response` (the HH / testbed text conventions).

The response is never templated: it is the text after the prompt, followed by EOS (`umm_ray.data.tokenize`). That is
what a policy generates after the assistant header and where generation stops (a chat model's EOS is its
end-of-turn token, `<|im_end|>` for ChatML), so the ids SFT trains on, the rollout samples, PPO's policy and
reference score, and every reward model reads are the same ids for the same (prompt, response).

Rendering is idempotent: a prompt that already ends with the assistant header (OpenRLHF sends prompts rendered by
its own template) is kept as it is, and an empty prompt stays empty (the serve endpoint's whole-query form scores
a full text as the response to no prompt).

    text = render_prompt(tok, "What is 2+2?", "auto")
    ids = prompt_ids(tok, "What is 2+2?", "auto")        # what the rollout engine is given
"""

from __future__ import annotations

CHAT_MODES = ("auto", "none")
_PROBE = "\x00umm-probe\x00"  # a user message no real prompt contains: isolates the template's own text
_HEADERS: dict[tuple, str] = {}  # (template, bos, eos) -> the generation header it appends


def check_mode(mode: str) -> str:
    """`mode` when it is one of CHAT_MODES, else ValueError naming model.chat_template."""
    if mode not in CHAT_MODES:
        raise ValueError(f"model.chat_template: {mode!r} is not one of {list(CHAT_MODES)}")
    return mode


def uses_template(tokenizer, mode: str = "auto") -> bool:
    """True when prompts are rendered through `tokenizer`'s chat template under `mode` (auto + a template)."""
    return check_mode(mode) == "auto" and bool(getattr(tokenizer, "chat_template", None))


def _user_turn(tokenizer, prompt: str, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=generation_prompt)


def generation_header(tokenizer) -> str:
    """The text the template appends to open the assistant's turn (ChatML: `<|im_start|>assistant\\n`); '' if none.

    Found by rendering a probe message with and without `add_generation_prompt`; cached per template.
    """
    key = (str(tokenizer.chat_template), tokenizer.bos_token, tokenizer.eos_token)
    if key not in _HEADERS:
        with_header, without = _user_turn(tokenizer, _PROBE, True), _user_turn(tokenizer, _PROBE, False)
        _HEADERS[key] = with_header[len(without):] if with_header.startswith(without) else ""
    return _HEADERS[key]


def render_prompt(tokenizer, prompt: str, mode: str = "auto") -> str:
    """The model-input text of `prompt`: templated as one user turn + assistant header, or unchanged.

    Unchanged under `none`, for a tokenizer without a chat template, for an empty prompt, and for a prompt that
    already ends with the template's assistant header (rendered by the caller).
    """
    if not uses_template(tokenizer, mode) or not prompt:
        return prompt
    header = generation_header(tokenizer)
    if header and prompt.endswith(header):
        return prompt
    return _user_turn(tokenizer, prompt, True)


def prompt_ids(tokenizer, prompt: str, mode: str = "auto") -> list[int]:
    """Token ids of the rendered prompt (no special tokens added: a template writes its own, e.g. a BOS, as text)."""
    return tokenizer(render_prompt(tokenizer, prompt, mode), add_special_tokens=False)["input_ids"]


def prompts_ids(tokenizer, prompts: list[str], mode: str = "auto") -> list[list[int]]:
    """`prompt_ids` of every prompt, in one batched tokenizer call: list of B id lists."""
    texts = [render_prompt(tokenizer, p, mode) for p in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def response_ids(tokenizer, response: str, add_eos: bool = True) -> list[int]:
    """Token ids of a response as generated after the prompt: its text, then EOS (where generation stops)."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else ids
