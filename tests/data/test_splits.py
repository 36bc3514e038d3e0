"""umm_ray/data/splits.py: deterministic, prompt-disjoint splits."""

from __future__ import annotations

import pytest

from umm_ray.data.splits import split_pairs
from umm_ray.records import PreferencePair


def _pairs(n_prompts: int, per_prompt: int) -> list[PreferencePair]:
    return [PreferencePair(f"p{i}", f" a{j}", f" b{j}") for i in range(n_prompts) for j in range(per_prompt)]


def test_parts_cover_everything_once_and_keep_order():
    pairs = _pairs(100, 1)
    parts = split_pairs(pairs, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [80, 10, 10]
    assert sorted(x.prompt for part in parts for x in part) == sorted(x.prompt for x in pairs)
    for part in parts:
        assert part == sorted(part, key=pairs.index)


def test_deterministic_by_seed():
    pairs = _pairs(50, 1)
    assert split_pairs(pairs, (0.5, 0.5), seed=1) == split_pairs(pairs, (0.5, 0.5), seed=1)
    assert split_pairs(pairs, (0.5, 0.5), seed=1) != split_pairs(pairs, (0.5, 0.5), seed=2)


def test_same_prompt_never_crosses_parts():
    pairs = _pairs(30, 3)
    train, test = split_pairs(pairs, (0.7, 0.3), seed=0)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    assert len(train) == 63 and len(test) == 27  # 21 and 9 whole prompt groups of 3
    per_item = split_pairs(pairs, (0.7, 0.3), seed=0, key=None)
    assert [len(p) for p in per_item] == [63, 27]


def test_rounding_and_bad_fractions():
    assert [len(p) for p in split_pairs(_pairs(10, 1), (1 / 3, 1 / 3, 1 / 3))] == [4, 3, 3]
    assert [len(p) for p in split_pairs(_pairs(5, 1), (1.0, 0.0))] == [5, 0]
    for bad in [(0.5, 0.4), (1.2, -0.2), ()]:
        with pytest.raises(ValueError, match="fracs"):
            split_pairs(_pairs(4, 1), bad)
