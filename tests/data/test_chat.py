"""umm_ray.data.chat: model.chat_template auto | none on a ChatML tokenizer and on the testbed's template-less one."""

from __future__ import annotations

import pytest

from tests.fixtures import tiny_corpus, tiny_tokenizer
from umm_ray.config import ConfigError, load_config
from umm_ray.data.chat import (check_mode, generation_header, prompt_ids, prompts_ids, render_prompt, response_ids,
                               uses_template)
from umm_ray.data.tokenize import encode_prompt_response, encode_texts
from umm_ray.testbed.tokenizer import IM_END, IM_START, with_chat_template

RESPONSE = " the answer is 42"
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"


@pytest.fixture(scope="module")
def toks():
    """(testbed tokenizer without a template, the same with SmolLM2's ChatML template), and a testbed prompt."""
    records, texts = tiny_corpus(20)
    plain = tiny_tokenizer(texts, vocab_size=300)
    return plain, with_chat_template(plain), records[0].prompt


def _raw(tok, prompt: str, response: str) -> list[int]:
    """The pre-template encoding: prompt and response tokenized apart, concatenated, then EOS."""
    return (tok(prompt, add_special_tokens=False)["input_ids"] + tok(response, add_special_tokens=False)["input_ids"]
            + [tok.eos_token_id])


def test_with_chat_template_has_the_real_models_quirks(toks):
    plain, chat, _ = toks
    assert chat.eos_token == chat.pad_token == IM_END and chat.eos_token_id == chat.pad_token_id
    assert chat.convert_tokens_to_ids([IM_START, IM_END]) == [len(plain), len(plain) + 1]
    assert not plain.chat_template and plain.eos_token != IM_END  # the original is left as it was


def test_auto_renders_one_user_turn_and_the_assistant_header(toks):
    _, chat, prompt = toks
    text = render_prompt(chat, prompt, "auto")
    assert text == f"{SYSTEM}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    assert generation_header(chat) == "<|im_start|>assistant\n"
    ids = prompt_ids(chat, prompt, "auto")
    assert ids[0] == chat.convert_tokens_to_ids(IM_START)  # the template's markers are single special tokens
    assert ids == chat(text, add_special_tokens=False)["input_ids"]
    assert uses_template(chat, "auto") and not uses_template(chat, "none")


def test_rendering_is_idempotent_and_leaves_empty_prompts_alone(toks):
    _, chat, prompt = toks
    once = render_prompt(chat, prompt, "auto")
    assert render_prompt(chat, once, "auto") == once  # OpenRLHF sends prompts its own template already rendered
    assert render_prompt(chat, "", "auto") == ""  # the serve endpoint's whole-query form: no prompt at all


def test_none_is_raw_concatenation(toks):
    _, chat, prompt = toks
    assert render_prompt(chat, prompt, "none") == prompt
    ids, n_prompt = encode_prompt_response(chat, prompt, RESPONSE, 256, chat_template="none")
    assert ids == _raw(chat, prompt, RESPONSE) and n_prompt == len(chat(prompt, add_special_tokens=False)["input_ids"])


def test_auto_without_a_template_equals_none_and_the_old_encoding(toks):
    plain, _, prompt = toks
    auto = encode_prompt_response(plain, prompt, RESPONSE, 256, chat_template="auto")
    assert auto == encode_prompt_response(plain, prompt, RESPONSE, 256, chat_template="none")
    assert auto[0] == _raw(plain, prompt, RESPONSE)
    a_ids, a_mask = encode_texts(plain, [prompt, prompt], [RESPONSE, " no"], 256, "auto")
    n_ids, n_mask = encode_texts(plain, [prompt, prompt], [RESPONSE, " no"], 256, "none")
    assert a_ids.equal(n_ids) and a_mask.equal(n_mask)
    assert prompts_ids(plain, [prompt], "auto") == [plain(prompt, add_special_tokens=False)["input_ids"]]


def test_encode_splits_rendered_prompt_from_response_and_truncates_the_prompt_start(toks):
    _, chat, prompt = toks
    ids, n_prompt = encode_prompt_response(chat, prompt, RESPONSE, 256, chat_template="auto")
    assert ids[:n_prompt] == prompt_ids(chat, prompt, "auto") and ids[n_prompt:] == response_ids(chat, RESPONSE)
    assert ids[-1] == chat.eos_token_id  # <|im_end|>: where a chat policy stops generating
    short, n_short = encode_prompt_response(chat, prompt, RESPONSE, 24, chat_template="auto")
    assert len(short) == 24 and short[n_short:] == ids[n_prompt:]  # the response is kept whole, the prompt's start goes
    assert short[:n_short] == ids[n_prompt - n_short:n_prompt]  # ... and the assistant header stays


def test_bad_mode_is_a_clear_error(toks):
    _, chat, prompt = toks
    with pytest.raises(ValueError, match=r"model.chat_template: 'chatml' is not one of \['auto', 'none'\]"):
        check_mode("chatml")
    with pytest.raises(ValueError, match="model.chat_template"):
        render_prompt(chat, prompt, "ChatML")
    with pytest.raises(ConfigError, match=r"model.chat_template: 'yes' is not one of \['auto', 'none'\]"):
        load_config(None, ["--model.chat_template", "yes"])
    assert load_config(None, []).model.chat_template == "auto"  # the default: the template when there is one


def test_reward_spec_refuses_a_bad_mode_at_the_driver():
    from umm_ray.actors.reward import RewardSpec

    with pytest.raises(ValueError, match="model.chat_template"):
        RewardSpec.load("testbed", "gold", chat_template="raw")
    assert RewardSpec.load("testbed", "gold", chat_template="none").chat_template == "none"
