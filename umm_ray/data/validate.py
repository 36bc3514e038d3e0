"""Row validation shared by the preference and prompt loaders: field checks, the raise/skip policy, the load report.

Every row a loader reads ends up in exactly one of three places: the returned list, `LoadReport.skipped` (bad rows,
only with on_error="skip"; by reason), or `LoadReport.dropped` (valid rows a format says to leave out, e.g. WebGPT
ties). So nothing is dropped without a count, and skip mode also logs one warning line per file.

A text longer than `MAX_TEXT_CHARS` characters is a bad row too (reason "too_long"); see `check_text_lengths`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from umm_ray.data.jsonl import DataError

log = logging.getLogger(__name__)

ON_ERROR = ("raise", "skip")

# The longest prompt, chosen, rejected or reference text a loader accepts, in characters (loaders take `max_chars` to
# change it). Real rows are far shorter (the longest HH-RLHF harmless-base test transcript is ~4,300 characters,
# AlpacaFarm fields under 2,000); a text of 100,000+ characters is a broken export or a concatenation gone wrong. It
# would cost memory and tokenizer time on every pass only to be truncated to rm.max_len / model.max_seq_len tokens.
MAX_TEXT_CHARS = 100_000
TEXT_FIELDS = ("prompt", "chosen", "rejected", "reference")  # the record fields the limit applies to


class RowError(ValueError):
    """A problem with one row's content; the loader adds file and line and turns it into a `DataError`."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class RowDropped(Exception):
    """A valid row that its format says to leave out (e.g. a WebGPT tie); counted in `LoadReport.dropped`."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass
class LoadReport:
    """What a load did with every row of its source.

    Attributes:
        source: the file path or hub dataset label.
        rows: rows read (records in the file, or hub rows), up to the point where `limit` stopped reading.
        loaded: records returned.
        skipped: bad rows skipped by reason (only non-empty with on_error="skip").
        dropped: valid rows left out on purpose, by reason (e.g. {"tie": 12} for WebGPT).
        examples: the first few skip messages, each naming file and line.
    """

    source: str
    rows: int = 0
    loaded: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    def summary(self) -> str:
        return (f"{self.source}: {self.rows} rows, {self.loaded} loaded, skipped {self.n_skipped} {self.skipped}, "
                f"dropped {self.n_dropped} {self.dropped}")


class RowSink:
    """Applies the on_error policy to row problems and keeps the counts of a `LoadReport`."""

    MAX_EXAMPLES = 5

    def __init__(self, source: str, on_error: str):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.on_error = on_error
        self.report = LoadReport(source=source)

    def error(self, err: DataError) -> None:
        """Raise `err` (on_error="raise") or count it under its reason (on_error="skip")."""
        if self.on_error == "raise":
            raise err
        self.report.skipped[err.reason] = self.report.skipped.get(err.reason, 0) + 1
        if len(self.report.examples) < self.MAX_EXAMPLES:
            self.report.examples.append(str(err))

    def drop(self, reason: str) -> None:
        self.report.dropped[reason] = self.report.dropped.get(reason, 0) + 1

    def finish(self) -> LoadReport:
        """Log what was skipped or dropped (one warning line each) and return the report."""
        r = self.report
        if r.skipped:
            log.warning("skipped %d rows: %s (source %s; e.g. %s)", r.n_skipped, r.skipped, r.source, r.examples[0])
        if r.dropped:
            log.warning("dropped %d rows: %s (source %s)", r.n_dropped, r.dropped, r.source)
        return r


def check_text_lengths(record: Any, max_chars: int = MAX_TEXT_CHARS) -> None:
    """Raise RowError("too_long") naming the first of `TEXT_FIELDS` of `record` longer than `max_chars` characters.

    Applied to the parsed record, so an HH transcript is measured as the prompt and response it is split into.
    """
    for name in TEXT_FIELDS:
        text = getattr(record, name, None)
        if isinstance(text, str) and len(text) > max_chars:
            raise RowError("too_long", f"{name} has {len(text):,} characters, over the limit of {max_chars:,} "
                                       f"(umm_ray.data.validate.MAX_TEXT_CHARS)")


def get_field(row: dict, key: str) -> Any:
    if key not in row:
        raise RowError("missing_field", f"missing field {key!r} (row has {sorted(row)})")
    return row[key]


def get_str(row: dict, key: str, empty: str | None = None, optional: bool = False) -> str:
    """Return `row[key]` as a string.

    Args:
        empty: the error reason when the value is empty or whitespace (e.g. "empty_response"); None allows it.
        optional: a missing key or a null value reads as "" instead of an error.
    """
    if optional and row.get(key) is None:
        value = ""
    else:
        value = get_field(row, key)
    if not isinstance(value, str):
        raise RowError("wrong_type", f"field {key!r} must be a string, got {type(value).__name__}: {value!r:.60}")
    if empty is not None and not value.strip():
        raise RowError(empty, f"field {key!r} is empty")
    return value


def get_number(row: dict, key: str) -> float:
    """Return `row[key]` as a finite float (ints accepted; bools, strings, NaN rejected)."""
    value = get_field(row, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RowError("wrong_type", f"field {key!r} must be a number, got {type(value).__name__}: {value!r:.60}")
    if not math.isfinite(value):
        raise RowError("bad_label", f"field {key!r} is not finite: {value!r}")
    return float(value)


def get_dict(row: dict, key: str) -> dict:
    value = get_field(row, key)
    if not isinstance(value, dict):
        raise RowError("wrong_type", f"field {key!r} must be an object, got {type(value).__name__}")
    return value
