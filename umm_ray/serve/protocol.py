"""Wire format of the reward endpoint: request parsing and validation, with no Ray and no web framework.

Two request shapes are accepted, both answered with `{"rewards": [...], "scores": [...]}` (the same floats twice:
OpenRLHF reads `rewards`, other callers read `scores`):

- OpenRLHF's remote reward-model convention, `{"query": [full texts], "prompts": [...], "labels": [...]}`.
  `query[i]` is the full text prompt + response. When `prompts` is given, `query[i]` must start with `prompts[i]`
  and the rest is the response, scored exactly like the `/v1/score` route would score that pair. When `prompts`
  is absent the whole query is scored as the response to an empty prompt (tokenized in one piece, so its score can
  differ slightly from the split form). Trailing EOS / pad token strings that a decoder left on the query are
  removed first, because the scorer appends its own EOS. `labels` is accepted (OpenRLHF sends it for rule-based
  rewards) but a learned reward model ignores it; it must still be a list of the same length when present. Other
  fields are ignored, so newer OpenRLHF versions that send more keep working.
- The simple form `{"prompts": [...], "responses": [...]}` (strict: an unknown field is an error, catching typos).

Every violation raises `RequestError(status, message)`: 400 for a body that is not JSON, 413 for too large a body,
too many items or too long a text, 422 for a wrong shape, type, length mismatch or an empty list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class RequestError(ValueError):
    """A request the endpoint refuses; `status` is the HTTP status code to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """What one request may contain (from `cfg.serve`)."""

    max_request_bytes: int = 4 * 1024 * 1024
    max_items: int = 256
    max_chars: int = 16384


@dataclass
class ScoreRequest:
    """A validated request: B (prompt, response) pairs to score, both lists of length B."""

    prompts: list[str]
    responses: list[str]


def decode_body(body: bytes, limits: Limits) -> dict:
    """Bytes -> JSON object, or RequestError (413 too large, 400 not JSON / not UTF-8, 422 not an object)."""
    if len(body) > limits.max_request_bytes:
        raise RequestError(413, f"request body is {len(body)} bytes; the limit is {limits.max_request_bytes}")
    if not body.strip():
        raise RequestError(400, "request body is empty; send a JSON object")
    try:
        text = body.decode("utf-8")  # explicit: json.loads(bytes) would also guess UTF-16/32
    except UnicodeDecodeError as e:
        raise RequestError(400, f"request body is not UTF-8: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RequestError(400, f"request body is not valid JSON: {e.msg} at line {e.lineno} "
                                f"column {e.colno}") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"request body must be a JSON object, got {type(data).__name__}")
    return data


def _str_list(data: dict, key: str, limits: Limits, required: bool = True) -> list[str] | None:
    """`data[key]` as a non-empty list of strings within the limits, else RequestError naming the key and index."""
    if key not in data or data[key] is None:
        if required:
            raise RequestError(422, f"missing field '{key}' (a list of strings)")
        return None
    value = data[key]
    if not isinstance(value, list):
        raise RequestError(422, f"'{key}' must be a list of strings, got {type(value).__name__}")
    if not value:
        raise RequestError(422, f"'{key}' is empty; send at least one item")
    if len(value) > limits.max_items:
        raise RequestError(413, f"'{key}' has {len(value)} items; the limit is {limits.max_items} per request")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RequestError(422, f"'{key}[{i}]' must be a string, got {type(item).__name__}")
        if len(item) > limits.max_chars:
            raise RequestError(413, f"'{key}[{i}]' has {len(item)} characters; the limit is {limits.max_chars}")
    return value


def _same_length(named: dict[str, list | None]) -> None:
    present = {k: len(v) for k, v in named.items() if v is not None}
    if len(set(present.values())) > 1:
        sizes = ", ".join(f"{k}={n}" for k, n in present.items())
        raise RequestError(422, f"length mismatch: {sizes}; every list needs one entry per item")


def _check_keys(data: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise RequestError(422, f"unknown field(s) {unknown}; this route accepts {list(allowed)}")


def strip_special(text: str, special: tuple[str, ...]) -> str:
    """Remove trailing special-token strings (EOS / pad, and whitespace between them) that a decoder left."""
    changed = True
    while changed and special:
        changed = False
        stripped = text.rstrip()
        for tok in special:
            if tok and stripped.endswith(tok):
                text, changed = stripped[: -len(tok)], True
    return text


def parse_openrlhf(data: dict, limits: Limits, special: tuple[str, ...] = ()) -> ScoreRequest:
    """`{"query": [...], "prompts": [...]?, "labels": [...]?}` -> ScoreRequest (see the module docstring)."""
    queries = _str_list(data, "query", limits)
    prompts = _str_list(data, "prompts", limits, required=False)
    labels = data.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise RequestError(422, f"'labels' must be a list, got {type(labels).__name__}")
    _same_length({"query": queries, "prompts": prompts, "labels": labels})
    queries = [strip_special(q, special) for q in queries]
    if prompts is None:
        return ScoreRequest(prompts=[""] * len(queries), responses=queries)
    responses = []
    for i, (q, p) in enumerate(zip(queries, prompts)):
        if not q.startswith(p):
            raise RequestError(422, f"'query[{i}]' does not start with 'prompts[{i}]'; query must be the full text "
                                    "prompt + response")
        responses.append(q[len(p):])
    return ScoreRequest(prompts=list(prompts), responses=responses)


def parse_pairs(data: dict, limits: Limits) -> ScoreRequest:
    """`{"prompts": [...], "responses": [...]}` -> ScoreRequest."""
    _check_keys(data, ("prompts", "responses"))
    prompts = _str_list(data, "prompts", limits)
    responses = _str_list(data, "responses", limits)
    _same_length({"prompts": prompts, "responses": responses})
    return ScoreRequest(prompts=prompts, responses=responses)
