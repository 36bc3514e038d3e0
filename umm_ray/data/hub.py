"""Hugging Face hub datasets by name: `owner/name[:suffix]`, loaded with `datasets.load_dataset`.

Kept small on purpose: the hub only supplies rows, and the same row parsers as for local files turn them into records
(`formats.py`), so the tests on real local rows cover the parsing. On a machine without internet the load fails with a
`DataError` that says so and how to use a local file instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from umm_ray.data.jsonl import DataError


@dataclass(frozen=True)
class HubDataset:
    """How to load one known dataset: the spec suffix after ':' is a `config` name or a `data_dir`."""

    name: str
    fmt: str
    suffix_is: str = "config"
    default_suffix: str | None = None
    default_split: str = "train"


PREFERENCE_DATASETS = {
    "anthropic/hh-rlhf": HubDataset("Anthropic/hh-rlhf", "hh", suffix_is="data_dir"),
    "tatsu-lab/alpaca_farm": HubDataset("tatsu-lab/alpaca_farm", "alpaca", default_suffix="alpaca_human_preference",
                                        default_split="preference"),
    "openai/webgpt_comparisons": HubDataset("openai/webgpt_comparisons", "webgpt"),
}

PROMPT_DATASETS = {
    "anthropic/hh-rlhf": HubDataset("Anthropic/hh-rlhf", "hh", suffix_is="data_dir", default_split="test"),
    "tatsu-lab/alpaca_farm": HubDataset("tatsu-lab/alpaca_farm", "alpaca", default_suffix="alpaca_farm_evaluation",
                                        default_split="eval"),
}

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w./-]+)?$")


def looks_like_hub_name(spec: str) -> bool:
    """True for `owner/name` or `owner/name:suffix` that is not a data file name."""
    return bool(_HUB_NAME.match(spec)) and not spec.endswith((".json", ".jsonl", ".gz"))


def resolve(spec: str, split: str | None, table: dict[str, HubDataset]) -> tuple[dict, str, str | None]:
    """Turn a spec into `load_dataset` keyword arguments, a label for messages, and the row format (None: detect)."""
    name, _, suffix = spec.partition(":")
    known = table.get(name.lower())
    suffix = suffix or (known.default_suffix if known else None)
    split = split or (known.default_split if known else "train")
    kwargs: dict[str, Any] = {"path": known.name if known else name, "split": split}
    if known and known.suffix_is == "data_dir":
        kwargs["data_dir"] = suffix
    else:
        kwargs["name"] = suffix
    label = f"{kwargs['path']}{':' + suffix if suffix else ''}[{split}]"
    return kwargs, label, known.fmt if known else None


def hub_rows(spec: str, split: str | None, table: dict[str, HubDataset]) -> tuple[Iterator[tuple[int, Any]], str,
                                                                                 str | None]:
    """Load a hub dataset split; return `((row_index, row) iterator, label, format or None)`.

    Row indices are 0-based (`dataset[i]`), so a `DataError` "label:i" points at the row directly.

    Raises:
        DataError: when the dataset cannot be loaded (offline, unknown name, unknown split or config).
    """
    kwargs, label, fmt = resolve(spec, split, table)
    try:
        import datasets  # heavy: ~0.6 s plus its own deps; only hub specs need it

        ds = datasets.load_dataset(**kwargs)
    except Exception as e:  # offline, missing dataset, bad split: all end here with one clear message
        raise DataError(label, None, "hub_unavailable",
                        f"could not load hub dataset ({type(e).__name__}: {str(e)[:300]}). Without internet "
                        "access, save the rows as a local .jsonl (or .jsonl.gz) elsewhere and pass that path") from e
    return enumerate(ds), label, fmt
