"""The generated world: deterministic by seed, every prompt parses back to its task, responses are well formed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from umm_ray.testbed import lexicon as lx
from umm_ray.testbed.world import (TASK_FAMILIES, Task, make_prompts, parse_prompt, plural, random_responses, render,
                                   sft_responses, target_words)


@pytest.fixture(scope="module")
def prompts():
    return make_prompts(800, seed=3)


def test_deterministic_by_seed(prompts):
    assert make_prompts(800, seed=3) == prompts
    other = make_prompts(800, seed=4)
    assert [p.prompt for p in other] != [p.prompt for p in prompts]
    a = [sft_responses(p, 3, random.Random(7)) for p in prompts[:50]]
    b = [sft_responses(p.prompt, 3, 7) for p in prompts[:50]]  # text and int seed work the same
    assert a == b


def test_prompts_distinct_balanced_and_parse_back(prompts):
    assert len({p.prompt for p in prompts}) == len(prompts)
    assert Counter(p.family for p in prompts) == {f: 200 for f in TASK_FAMILIES}
    for p in prompts:
        assert p.prompt.endswith("\nAnswer:")
        task = parse_prompt(p.prompt)
        assert task.family == p.family and task.topic == p.meta["topic"] and list(task.words) == p.meta["words"]
        assert 4 <= len(p.prompt.split()) <= 25


def test_render_parse_round_trip_every_template():
    tasks = [Task("list", "fruits", n=3), Task("list", "tools", n=1, exclude="saw"),
             Task("describe", "color", subject="owl", n=2), Task("answer", "color", subject="apple"),
             Task("answer", "kind", subject="harp"), Task("answer", "sound", subject="dog"),
             Task("answer", "opposite", subject="hot"),
             Task("answer", "pick", subject="fruit", words=("dog", "fig", "car")),
             Task("rewrite", "opposites", words=("big", "up")), Task("rewrite", "plural", words=("fox", "berry"))]
    for task in tasks:
        for variant in range(12):
            assert parse_prompt(render(task, variant)) == task, render(task, variant)


def test_parse_rejects_foreign_prompts():
    with pytest.raises(ValueError, match="not a testbed prompt"):
        parse_prompt("\n\nHuman: hello\n\nAssistant:")
    with pytest.raises(ValueError, match="unknown words"):
        parse_prompt("List 3 spaceships.\nAnswer:")


def test_world_facts():
    assert [plural(w) for w in ("fox", "berry", "mouse", "tomato", "cat", "brush")] == \
        ["foxes", "berries", "mice", "tomatoes", "cats", "brushes"]
    assert target_words(Task("rewrite", "opposites", words=("big", "up", "dark"))) == ["small", "down", "light"]
    assert all(lx.OPPOSITE[lx.OPPOSITE[w]] == w for w in lx.OPPOSITE)
    assert len(lx.all_words()) >= 300  # "a few hundred words"


def test_sft_responses_vary_and_are_short(prompts):
    rng = random.Random(0)
    for p in prompts[:200]:
        rs = sft_responses(p, 4, rng)
        assert len(rs) == 4 and all(r.startswith(" ") for r in rs)
        assert all(len(r.split()) <= 30 for r in rs)
    distinct = sum(len(set(sft_responses(p, 4, rng))) > 1 for p in prompts[:200])
    assert distinct > 150  # varied quality, not one canned answer


def test_random_responses():
    rs = random_responses(["x"] * 20, 1, max_tokens=10)
    assert len(rs) == 20 and all(1 <= len(r.split()) <= 10 for r in rs)
    assert random_responses(["x"] * 20, 1, max_tokens=10) == rs
