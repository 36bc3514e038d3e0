"""Row parsers for the preference formats, shared by the local-file and hub paths (so tests of one cover both).

Text conventions (the model input is plain `prompt + response`, see `umm_ray/data/tokenize.py`):
- Every prompt built here ends with "\\n\\nAssistant:" and every response built here starts with a space, the
  Anthropic HH layout. HH transcripts are used as they are.
- AlpacaFarm instructions use the template `ALPACA_TEMPLATE`: "\\n\\nHuman: {instruction}\\n\\n{input}\\n\\nAssistant:"
  (the input paragraph only when non-empty), so one reward model can score HH, AlpacaFarm and WebGPT alike.
- Generic `{prompt, chosen, rejected}` rows are taken verbatim.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from umm_ray.data.validate import RowDropped, RowError, get_dict, get_field, get_number, get_str
from umm_ray.records import PreferencePair

ASSISTANT = "\n\nAssistant:"
HUMAN = "\n\nHuman:"
ALPACA_TEMPLATE = "\n\nHuman: {instruction}\n\nAssistant:"
ALPACA_TEMPLATE_INPUT = "\n\nHuman: {instruction}\n\n{input}\n\nAssistant:"


def as_response(text: str) -> str:
    """Response text in the HH layout: it follows "Assistant:" after one space."""
    return text if text[:1].isspace() else " " + text


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """AlpacaFarm instruction (+ optional input) in the HH-style template; see the module docstring."""
    if input_text.strip():
        return ALPACA_TEMPLATE_INPUT.format(instruction=instruction.strip(), input=input_text.strip())
    return ALPACA_TEMPLATE.format(instruction=instruction.strip())


def split_transcript(text: str) -> tuple[str, str]:
    """Split one HH transcript into (prompt through the last "\\n\\nAssistant:", the last assistant turn)."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        raise RowError("no_assistant_turn", f"transcript has no {ASSISTANT!r} turn: {text[:60]!r}")
    end = cut + len(ASSISTANT)
    return text[:end], text[end:]


def split_hh_pair(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH transcripts of one conversation into (prompt, chosen response, rejected response).

    The prompt is the shared history through the last "\\n\\nAssistant:" that both transcripts contain at the same
    place, and it must be the last assistant turn of at least one of them. That equals "prompt = all but the last
    assistant turn" for ordinary rows, and also keeps rows whose response itself contains a "\\n\\nAssistant:"
    (5 rows of the harmless-base test split), which a per-transcript split would see as two different prompts.

    Raises:
        RowError: "no_assistant_turn" when a transcript has no assistant turn; "prompt_mismatch" when the two
            transcripts are different conversations (they diverge before the last assistant turn of both).
    """
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if ASSISTANT not in text:
            raise RowError("no_assistant_turn", f"{name} transcript has no {ASSISTANT!r} turn: {text[:60]!r}")
    shared = len(os.path.commonprefix([chosen, rejected]))
    cut = chosen.rfind(ASSISTANT, 0, shared)
    end = cut + len(ASSISTANT)
    if cut < 0 or (ASSISTANT in chosen[end:] and ASSISTANT in rejected[end:]):
        p_c, p_r = split_transcript(chosen)[0], split_transcript(rejected)[0]
        raise RowError("prompt_mismatch", f"chosen and rejected do not share a prompt: they differ from character "
                       f"{shared} ({chosen[shared:shared + 40]!r} vs {rejected[shared:shared + 40]!r}); prompts "
                       f"have {p_c.count(ASSISTANT)} and {p_r.count(ASSISTANT)} assistant turns")
    return chosen[:end], chosen[end:], rejected[end:]


def make_pair(prompt: str, chosen: str, rejected: str, source: str, family: str = "") -> PreferencePair:
    """Build a `PreferencePair`, rejecting an empty prompt, an empty response, or two identical responses."""
    if not prompt.strip():
        raise RowError("empty_prompt", "prompt is empty")
    for name, text in (("chosen", chosen), ("rejected", rejected)):
        if not text.strip():
            raise RowError("empty_response", f"{name} response is empty: {text!r}")
    if chosen.strip() == rejected.strip():
        raise RowError("identical_responses", f"chosen == rejected: {chosen.strip()[:60]!r}")
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, source=source, family=family)


def parse_hh(row: dict, source: str) -> PreferencePair:
    """Anthropic HH-RLHF row `{chosen, rejected}`: two full transcripts of the same conversation."""
    chosen = get_str(row, "chosen", empty="empty_response")
    rejected = get_str(row, "rejected", empty="empty_response")
    prompt, c, r = split_hh_pair(chosen, rejected)
    return make_pair(prompt, c, r, source)


def parse_alpaca(row: dict, source: str) -> PreferencePair:
    """AlpacaFarm `alpaca_human_preference` row: instruction, input, output_1, output_2, preference in {1, 2}."""
    prompt = alpaca_prompt(get_str(row, "instruction", empty="empty_prompt"), get_str(row, "input", optional=True))
    out_1 = get_str(row, "output_1", empty="empty_response")
    out_2 = get_str(row, "output_2", empty="empty_response")
    pref = get_field(row, "preference")
    if type(pref) is not int or pref not in (1, 2):
        raise RowError("bad_label", f"field 'preference' must be 1 or 2, got {pref!r}")
    chosen, rejected = (out_1, out_2) if pref == 1 else (out_2, out_1)
    return make_pair(prompt, as_response(chosen), as_response(rejected), source)


def parse_webgpt(row: dict, source: str) -> PreferencePair:
    """WebGPT comparisons row: question.full_text, answer_0/1, score_0/1; the higher score wins, ties are dropped."""
    question = row.get("question")
    text = question if isinstance(question, str) else get_str(get_dict(row, "question"), "full_text")
    if not text.strip():
        raise RowError("empty_prompt", "field 'question.full_text' is empty")
    ans_0 = get_str(row, "answer_0", empty="empty_response")
    ans_1 = get_str(row, "answer_1", empty="empty_response")
    s_0, s_1 = get_number(row, "score_0"), get_number(row, "score_1")
    if s_0 == s_1:
        raise RowDropped("tie")
    chosen, rejected = (ans_0, ans_1) if s_0 > s_1 else (ans_1, ans_0)
    prompt = f"{HUMAN} {text.strip()}{ASSISTANT}"
    return make_pair(prompt, as_response(chosen), as_response(rejected), source)


def parse_generic(row: dict, source: str) -> PreferencePair:
    """Generic `{prompt, chosen, rejected}` row (optional `source`, `family`), e.g. one written by `write_jsonl`."""
    prompt = get_str(row, "prompt", empty="empty_prompt")
    chosen = get_str(row, "chosen", empty="empty_response")
    rejected = get_str(row, "rejected", empty="empty_response")
    family = get_str(row, "family", optional=True)
    return make_pair(prompt, chosen, rejected, get_str(row, "source", optional=True) or source, family)


PARSERS: dict[str, Callable[[dict, str], PreferencePair]] = {
    "hh": parse_hh, "alpaca": parse_alpaca, "webgpt": parse_webgpt, "pairs": parse_generic,
}


def detect_format(row: dict) -> str:
    """Tell the preference format from a row's keys (lenient, so a row missing a field still fails as such)."""
    if "prompt" in row:
        return "pairs"
    if "instruction" in row:
        return "alpaca"
    if "question" in row or "answer_0" in row:
        return "webgpt"
    if "chosen" in row or "rejected" in row:
        return "hh"
    raise RowError("unknown_format", f"cannot tell the format from fields {sorted(row)}: expected "
                   "{prompt, chosen, rejected}, {chosen, rejected} (HH), {instruction, output_1, output_2, "
                   "preference} (AlpacaFarm) or {question, answer_0, answer_1, score_0, score_1} (WebGPT)")
