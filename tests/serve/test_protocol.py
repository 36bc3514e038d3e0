"""Request parsing and validation of the reward endpoint (no Ray): every refusal has the right status and says why."""

from __future__ import annotations

import json

import pytest

from umm_ray.serve.protocol import (Limits, RequestError, decode_body, parse_openrlhf, parse_pairs,
                                    strip_special)

LIM = Limits(max_request_bytes=1000, max_items=3, max_chars=20)


def _refused(fn, *args) -> RequestError:
    with pytest.raises(RequestError) as e:
        fn(*args)
    return e.value


def test_openrlhf_splits_response_off_by_prompt_prefix():
    req = parse_openrlhf({"query": ["Q: 1+1?\nA: 2", "Hi there"], "prompts": ["Q: 1+1?\nA:", "Hi"],
                          "labels": [None, "x"]}, LIM)
    assert req.prompts == ["Q: 1+1?\nA:", "Hi"]
    assert req.responses == [" 2", " there"]


def test_openrlhf_without_prompts_scores_whole_query_after_an_empty_prompt():
    req = parse_openrlhf({"query": ["a b c"]}, LIM)
    assert (req.prompts, req.responses) == ([""], ["a b c"])


def test_openrlhf_strips_trailing_special_tokens_and_ignores_extra_fields():
    req = parse_openrlhf({"query": ["P: x</s><pad><pad>"], "prompts": ["P:"], "extra": 1}, LIM,
                         ("</s>", "<pad>"))
    assert req.responses == [" x"]
    assert strip_special("ab</s> </s>", ("</s>",)) == "ab"
    assert strip_special("a</s>b", ("</s>",)) == "a</s>b"  # only trailing ones


def test_pairs_route_accepts_equal_lists():
    req = parse_pairs({"prompts": ["p1", "p2"], "responses": ["r1", "r2"]}, LIM)
    assert (req.prompts, req.responses) == (["p1", "p2"], ["r1", "r2"])


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "empty"),
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b"[1, 2]", 422, "JSON object"),
    (b"x" * 1001, 413, "limit is 1000"),
])
def test_decode_body_refusals(body, status, words):
    err = _refused(decode_body, body, LIM)
    assert err.status == status and words in err.message


@pytest.mark.parametrize("data, status, words", [
    ({"responses": ["r"]}, 422, "missing field 'prompts'"),
    ({"prompts": "p", "responses": ["r"]}, 422, "'prompts' must be a list"),
    ({"prompts": ["p", 3], "responses": ["r", "s"]}, 422, "'prompts[1]' must be a string, got int"),
    ({"prompts": [], "responses": []}, 422, "'prompts' is empty"),
    ({"prompts": ["p", "q"], "responses": ["r"]}, 422, "length mismatch: prompts=2, responses=1"),
    ({"prompts": ["p"] * 4, "responses": ["r"] * 4}, 413, "4 items; the limit is 3"),
    ({"prompts": ["p"], "responses": ["r" * 21]}, 413, "'responses[0]' has 21 characters; the limit is 20"),
    ({"prompts": ["p"], "responses": ["r"], "labels": [1]}, 422, "unknown field(s) ['labels']"),
])
def test_pairs_refusals(data, status, words):
    err = _refused(parse_pairs, data, LIM)
    assert err.status == status and words in err.message, err.message


@pytest.mark.parametrize("data, status, words", [
    ({"prompts": ["p"]}, 422, "missing field 'query'"),
    ({"query": ["ab"], "prompts": ["x"]}, 422, "'query[0]' does not start with 'prompts[0]'"),
    ({"query": ["ab"], "prompts": ["a", "b"]}, 422, "length mismatch: query=1, prompts=2"),
    ({"query": ["ab"], "labels": "gold"}, 422, "'labels' must be a list"),
    ({"query": ["ab"], "labels": [1, 2]}, 422, "length mismatch: query=1, labels=2"),
    ({"query": [None]}, 422, "'query[0]' must be a string, got NoneType"),
])
def test_openrlhf_refusals(data, status, words):
    err = _refused(parse_openrlhf, json.loads(json.dumps(data)), LIM)
    assert err.status == status and words in err.message, err.message
