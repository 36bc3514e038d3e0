"""Capability labels from the gold rubric's terms: direction per term, near-ties dropped, noise at the given rate."""

from __future__ import annotations

import random

import pytest

from umm_ray.records import PreferencePair
from umm_ray.testbed.capabilities import CAPABILITIES, capability_margin, gold_capability_pairs
from umm_ray.testbed.gold import rubric_terms
from umm_ray.testbed.world import TASK_FAMILIES, make_prompts, parse_prompt, sft_responses


@pytest.fixture(scope="module")
def pairs() -> list[PreferencePair]:
    rng = random.Random(0)
    out = []
    for i, rec in enumerate(make_prompts(400, seed=0)):
        a, b = sft_responses(rec, 2, rng)
        out.append(PreferencePair(rec.prompt, a, b, source=f"t:{i}", family=rec.family))
    return out


def test_noiseless_labels_follow_each_term_and_drop_near_ties(pairs):
    caps = gold_capability_pairs(pairs, noise=0.0, near_tie=0.05, seed=0)
    assert set(caps) == set(TASK_FAMILIES) and all(tuple(c) == CAPABILITIES for c in caps.values())
    for fam, by_cap in caps.items():
        for cap, cpairs in by_cap.items():
            assert cpairs, (fam, cap)
            for p in cpairs:
                task = parse_prompt(p.prompt)
                assert capability_margin(cap, rubric_terms(task, p.chosen), rubric_terms(task, p.rejected)) > 0.05
                assert p.family == fam and p.source.endswith(f"#{cap}")
    # "less is better" terms: the winner has no more repetition / excess than the loser
    p = caps["list"]["repetition"][0]
    task = parse_prompt(p.prompt)
    assert rubric_terms(task, p.chosen).repetition < rubric_terms(task, p.rejected).repetition
    kept = sum(len(c) for by_cap in caps.values() for c in by_cap.values())
    assert kept < len(pairs) * len(CAPABILITIES)  # some comparisons were near-ties and were dropped
    fewer = gold_capability_pairs(pairs, noise=0.0, near_tie=0.3, seed=0)
    assert sum(len(c) for b in fewer.values() for c in b.values()) < kept


def test_labels_flip_at_the_noise_rate_and_the_overall_label_is_ignored(pairs):
    clean = gold_capability_pairs(pairs, noise=0.0, near_tie=0.05, seed=0)
    noisy = gold_capability_pairs(pairs, noise=0.25, near_tie=0.05, seed=3)
    swapped = gold_capability_pairs([PreferencePair(p.prompt, p.rejected, p.chosen, p.source, p.family)
                                        for p in pairs], noise=0.0, near_tie=0.05, seed=0)
    n = flipped = 0
    for fam in clean:
        for cap in CAPABILITIES:
            c, s, z = clean[fam][cap], swapped[fam][cap], noisy[fam][cap]
            assert [(p.chosen, p.rejected) for p in c] == [(p.chosen, p.rejected) for p in s]
            assert len(c) == len(z)  # flips never change which comparisons are kept
            n += len(c)
            flipped += sum(a.chosen != b.chosen for a, b in zip(c, z))
    se = (0.25 * 0.75 / n) ** 0.5
    assert abs(flipped / n - 0.25) < 4 * se, (flipped, n)


def test_bad_arguments_are_named(pairs):
    with pytest.raises(ValueError, match=r"\['style'\] are not rubric terms"):
        gold_capability_pairs(pairs, 0.1, 0.05, 0, capabilities=("coverage", "style"))
    with pytest.raises(ValueError, match="noise must be in"):
        gold_capability_pairs(pairs, 0.7, 0.05, 0)
    with pytest.raises(ValueError, match="pair 1 \\(x:1\\): not a testbed prompt"):
        gold_capability_pairs([pairs[0], PreferencePair("Hello?", " a", " b", "x:1")], 0.1, 0.05, 0)
