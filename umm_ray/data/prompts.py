"""Prompts for PPO and Best-of-N from local files or hub datasets, validated row by row.

Row formats (detected from the first row's fields):
- AlpacaFarm instruction json/jsonl (e.g. eval_gpt-3.5-turbo-0301.json): `instruction, input[, output, generator,
  dataset, datasplit]` -> prompt in the HH-style template (`formats.alpaca_prompt`), reference = output as a
  response (leading space), family = `dataset` (the instruction source, e.g. "helpful_base", "koala"), the other
  fields in `meta`. An `output` list (several samples) gives reference = the first, meta["outputs"] = all.
- `{prompt[, family, reference, source, meta]}` jsonl, which includes files written by `write_jsonl` of
  `PromptRecord` (a testbed prompt file reads back to equal records).
- Anthropic HH `{chosen[, rejected]}` transcripts -> the conversation up to the last "\\n\\nAssistant:",
  reference = the chosen last turn.
Hub: "tatsu-lab/alpaca_farm" (config alpaca_farm_evaluation, split eval), "Anthropic/hh-rlhf[:data_dir]" (split test).
A prompt or reference longer than `max_chars` (default `validate.MAX_TEXT_CHARS`) characters is a bad row ("too_long").
"""

from __future__ import annotations

import os

from umm_ray.data.formats import alpaca_prompt, as_response, split_hh_pair, split_transcript
from umm_ray.data.hub import PROMPT_DATASETS
from umm_ray.data.preferences import open_rows, parse_rows
from umm_ray.data.validate import MAX_TEXT_CHARS, LoadReport, RowError, get_str
from umm_ray.records import PromptRecord

ALPACA_META = ("instruction", "input", "generator", "dataset", "datasplit")


def _reference(row: dict) -> tuple[str, dict]:
    """AlpacaFarm `output`: a string, a list of strings (multi-sample files), or absent."""
    out = row.get("output")
    if out is None:
        return "", {}
    if isinstance(out, str):
        return (as_response(out) if out.strip() else ""), {}
    if isinstance(out, list) and out and all(isinstance(o, str) for o in out):
        return as_response(out[0]), {"outputs": out}
    raise RowError("wrong_type", f"field 'output' must be a string or a non-empty list of strings, got {out!r:.60}")


def parse_alpaca_prompt(row: dict, source: str) -> PromptRecord:
    """AlpacaFarm instruction row -> `PromptRecord` (family = the `dataset` field when present)."""
    prompt = alpaca_prompt(get_str(row, "instruction", empty="empty_prompt"), get_str(row, "input", optional=True))
    reference, extra = _reference(row)
    meta = {k: row[k] for k in ALPACA_META if k in row} | extra
    family = get_str(row, "dataset", optional=True)
    return PromptRecord(prompt=prompt, family=family, reference=reference, source=source, meta=meta)


def parse_prompt_row(row: dict, source: str) -> PromptRecord:
    """`{prompt[, family, reference, source, meta]}` -> `PromptRecord`; a stored `source` is kept (provenance)."""
    meta = row.get("meta") or {}
    if not isinstance(meta, dict):
        raise RowError("wrong_type", f"field 'meta' must be an object, got {type(meta).__name__}")
    return PromptRecord(prompt=get_str(row, "prompt", empty="empty_prompt"),
                        family=get_str(row, "family", optional=True),
                        reference=get_str(row, "reference", optional=True),
                        source=get_str(row, "source", optional=True) or source, meta=meta)


def parse_hh_prompt(row: dict, source: str) -> PromptRecord:
    """HH transcript row -> the conversation through the last "\\n\\nAssistant:"; reference = chosen last turn."""
    chosen = get_str(row, "chosen", empty="empty_response")
    if "rejected" in row:
        prompt, reference, _ = split_hh_pair(chosen, get_str(row, "rejected", empty="empty_response"))
    else:
        prompt, reference = split_transcript(chosen)
    return PromptRecord(prompt=prompt, reference=reference if reference.strip() else "", source=source)


PROMPT_PARSERS = {"alpaca": parse_alpaca_prompt, "prompt": parse_prompt_row, "hh": parse_hh_prompt}


def detect_prompt_format(row: dict) -> str:
    if "prompt" in row:
        return "prompt"
    if "instruction" in row:
        return "alpaca"
    if "chosen" in row:
        return "hh"
    raise RowError("unknown_format", f"cannot tell the prompt format from fields {sorted(row)}: expected "
                   "{prompt}, {instruction[, input, output]} (AlpacaFarm) or {chosen[, rejected]} (HH)")


class _PromptParser:
    def __init__(self, fmt: str | None):
        if fmt is not None and fmt not in PROMPT_PARSERS:
            raise ValueError(f"fmt must be one of {sorted(PROMPT_PARSERS)} or None, got {fmt!r}")
        self.fmt = fmt

    def __call__(self, row: dict, source: str) -> PromptRecord:
        if self.fmt is None:
            self.fmt = detect_prompt_format(row)
        return PROMPT_PARSERS[self.fmt](row, source)


def load_prompts_with_report(spec: str | os.PathLike, on_error: str = "raise", limit: int | None = None,
                             split: str | None = None, fmt: str | None = None, max_chars: int = MAX_TEXT_CHARS
                             ) -> tuple[list[PromptRecord], LoadReport]:
    """Load prompts and report what happened to every row.

    Args:
        spec: local file (.json array, .jsonl, .jsonl.gz) or hub dataset name (see the module docstring).
        on_error: "raise" (a `DataError` naming file and line) or "skip" (count by reason, log one warning).
        limit: stop after this many prompts (None: all).
        split: hub split; ignored for a local file.
        fmt: force "alpaca", "prompt" or "hh"; None detects it from the first row.
        max_chars: a prompt or reference longer than this many characters is a bad row ("too_long").

    Returns:
        (prompts, report). A record's `source` is "file-name:line" unless the row stored its own.
    """
    rows, label, short, hub_fmt = open_rows(spec, split, PROMPT_DATASETS)
    return parse_rows(rows, label, short, _PromptParser(fmt or hub_fmt), on_error, limit, max_chars)


def load_prompts(spec: str | os.PathLike, on_error: str = "raise", limit: int | None = None,
                 split: str | None = None, fmt: str | None = None, max_chars: int = MAX_TEXT_CHARS
                 ) -> list[PromptRecord]:
    """Load prompts; same arguments as `load_prompts_with_report`, without the report."""
    return load_prompts_with_report(spec, on_error, limit, split, fmt, max_chars)[0]
