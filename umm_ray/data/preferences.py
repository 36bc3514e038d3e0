"""Preference pairs from local files or hub datasets, validated row by row.

Specs:
- a local `.jsonl` / `.jsonl.gz` / `.json` (JSON lines or a JSON array) in any supported format, detected from the
  first row's fields or forced with `fmt`: "hh" (Anthropic `{chosen, rejected}` transcripts), "alpaca" (AlpacaFarm
  `alpaca_human_preference`), "webgpt" (WebGPT comparisons), "pairs" (generic `{prompt, chosen, rejected}`);
- a hub name: "Anthropic/hh-rlhf" (train split by default; "Anthropic/hh-rlhf:harmless-base" picks a data_dir),
  "tatsu-lab/alpaca_farm" (config alpaca_human_preference, split preference), "openai/webgpt_comparisons", or any
  other `owner/name[:config]` whose rows are in a supported format; a local folder of data files works the same way
  (`datasets.load_dataset` resolves a local folder before the hub).

Bad rows raise `DataError` naming file and line (on_error="raise", the default) or are skipped and counted by reason
(on_error="skip"); see `validate.py`. A prompt or response longer than `max_chars` (default
`validate.MAX_TEXT_CHARS`) characters is such a bad row ("too_long"). Text layout: see `formats.py`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from umm_ray.data.formats import PARSERS, detect_format
from umm_ray.data.hub import PREFERENCE_DATASETS, hub_rows, looks_like_hub_name
from umm_ray.data.jsonl import DataError, iter_records
from umm_ray.data.validate import MAX_TEXT_CHARS, LoadReport, RowDropped, RowError, RowSink, check_text_lengths
from umm_ray.records import PreferencePair

T = TypeVar("T")


def open_rows(spec: str | os.PathLike, split: str | None, table: dict) -> tuple[Iterable[tuple[int, Any]], str,
                                                                                str, str | None]:
    """Rows of a local file or hub dataset: `(rows, label for errors, short name for record sources, format)`.

    For a local file `split` is ignored: the file is the split. A hub name or a local dataset folder goes through
    `datasets.load_dataset`, which looks for a local folder of that name first.
    """
    spec_s = str(spec)
    path = Path(spec_s).expanduser()
    if path.is_file():
        return iter_records(path), str(path), path.name, None
    if path.is_dir() or (looks_like_hub_name(spec_s) and not path.exists()):
        rows, label, fmt = hub_rows(spec_s, split, table)
        return rows, label, label, fmt
    raise DataError(spec_s, None, "no_file", "no such file, and not a hub dataset name (owner/name[:config])")


def parse_rows(rows: Iterable[tuple[int, Any]], label: str, short: str, parse: Callable[[dict, str], T],
               on_error: str, limit: int | None, max_chars: int = MAX_TEXT_CHARS) -> tuple[list[T], LoadReport]:
    """Run `parse(row, source)` over rows (source = "short:line"), applying the on_error policy.

    Every row ends up returned, skipped (counted by reason; `RowError`/`DataError`) or dropped (`RowDropped`).
    A record with a text over `max_chars` characters is a bad row ("too_long"). Reading stops once `limit`
    records were returned.

    Raises:
        DataError: for a bad row with on_error="raise"; and in both modes when no record at all could be loaded.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    sink, out = RowSink(label, on_error), []
    for line, row in rows:
        if limit is not None and len(out) >= limit:
            break
        sink.report.rows += 1
        try:
            if isinstance(row, DataError):
                raise row
            if not isinstance(row, dict):
                raise RowError("not_an_object", f"expected a JSON object, got {type(row).__name__}")
            record = parse(row, f"{short}:{line}")
            check_text_lengths(record, max_chars)
            out.append(record)
        except RowError as e:
            sink.error(DataError(label, line, e.reason, str(e)))
        except DataError as e:
            sink.error(e)
        except RowDropped as e:
            sink.drop(e.reason)
    sink.report.loaded = len(out)
    report = sink.finish()
    if not out and limit != 0:  # an empty dataset is always a mistake upstream; say so before training starts
        raise DataError(label, None, "no_records", f"no usable records: {report.summary()}"
                        + (f"; e.g. {report.examples[0]}" if report.examples else ""))
    return out, report


class _FormatParser:
    """Parses rows in one format; the format is fixed by the caller or by the first row that can be detected."""

    def __init__(self, fmt: str | None):
        if fmt is not None and fmt not in PARSERS:
            raise ValueError(f"fmt must be one of {sorted(PARSERS)} or None, got {fmt!r}")
        self.fmt = fmt

    def __call__(self, row: dict, source: str) -> PreferencePair:
        if self.fmt is None:
            self.fmt = detect_format(row)
        return PARSERS[self.fmt](row, source)


def load_preferences_with_report(spec: str | os.PathLike, split: str | None = None, on_error: str = "raise",
                                 limit: int | None = None, fmt: str | None = None, max_chars: int = MAX_TEXT_CHARS
                                 ) -> tuple[list[PreferencePair], LoadReport]:
    """Load preference pairs and report what happened to every row.

    Args:
        spec: local file path or hub dataset name (see the module docstring).
        split: hub split (default per dataset, e.g. "train"); ignored for a local file.
        on_error: "raise" stops at the first bad row with a `DataError` naming file and line; "skip" skips bad
            rows, counts them by reason in the report and logs "skipped N rows: {reason: count}".
        limit: stop after this many pairs (None: all).
        fmt: force the row format ("hh", "alpaca", "webgpt", "pairs"); None detects it from the first row.
        max_chars: a prompt, chosen or rejected text longer than this many characters is a bad row ("too_long").

    Returns:
        (pairs, report). Each pair's `source` is "file-name:line" (hub: "dataset[split]:row").
    """
    rows, label, short, hub_fmt = open_rows(spec, split, PREFERENCE_DATASETS)
    return parse_rows(rows, label, short, _FormatParser(fmt or hub_fmt), on_error, limit, max_chars)


def load_preferences(spec: str | os.PathLike, split: str | None = None, on_error: str = "raise",
                     limit: int | None = None, fmt: str | None = None, max_chars: int = MAX_TEXT_CHARS
                     ) -> list[PreferencePair]:
    """Load preference pairs; same arguments as `load_preferences_with_report`, without the report."""
    return load_preferences_with_report(spec, split, on_error, limit, fmt, max_chars)[0]
