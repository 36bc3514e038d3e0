"""Deterministic splits of preference pairs for "train on part, test on the rest"."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def _targets(n: int, fracs: Sequence[float]) -> list[int]:
    """Split n into len(fracs) integer sizes proportional to fracs (largest remainder)."""
    raw = [f * n for f in fracs]
    sizes = [int(r) for r in raw]
    order = sorted(range(len(fracs)), key=lambda i: raw[i] - sizes[i], reverse=True)
    for i in order[:n - sum(sizes)]:
        sizes[i] += 1
    return sizes


def split_pairs(pairs: Sequence[T], fracs: Sequence[float], seed: int = 0,
                key: Callable[[T], str] | None = lambda p: p.prompt) -> list[list[T]]:
    """Split items into len(fracs) disjoint parts, deterministic given `seed`.

    Items sharing `key(item)` (by default the prompt) land in the same part, so no prompt is seen in training and
    then tested on; part sizes then match `fracs` up to the size of one group. `key=None` splits item by item.
    Within a part, items keep their input order.

    Args:
        pairs: the items (usually `PreferencePair`s).
        fracs: non-negative fractions summing to 1, e.g. (0.8, 0.1, 0.1).
        seed: shuffling seed.

    Returns:
        One list per fraction.
    """
    if not fracs or any(f < 0 for f in fracs) or abs(sum(fracs) - 1.0) > 1e-6:
        raise ValueError(f"fracs must be non-negative and sum to 1, got {list(fracs)}")
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(pairs):
        groups.setdefault(key(item) if key else str(i), []).append(i)
    order = list(groups.values())
    random.Random(seed).shuffle(order)
    targets, part, parts = _targets(len(pairs), fracs), 0, [[] for _ in fracs]
    for idx in order:
        while part < len(fracs) - 1 and len(parts[part]) >= targets[part]:
            part += 1
        parts[part].extend(idx)
    return [[pairs[i] for i in sorted(p)] for p in parts]
