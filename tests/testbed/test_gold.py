"""The gold rubric: hand-computed values, and the properties a/b/c measured on generated data (printed)."""

from __future__ import annotations

import json
import random

import pytest

from umm_ray.testbed.gold import FAMILY_WEIGHTS, TestbedGold, gold_score, load_gold
from umm_ray.testbed.properties import edit, measure_properties, pad_with_repeats
from umm_ray.testbed.world import TASK_FAMILIES, make_prompts, sft_responses


@pytest.mark.parametrize("prompt,response,expected", [
    # list: coverage 1.0*1 + precision 0.5*1 + format 0.2*1
    ("List 2 fruits.\nAnswer:", " apple, pear.", 1.7),
    # a repeat: coverage 1/2, repetition 1/2 -> 0.5 + 0.5 + 0.2 - 1.0*0.5
    ("List 2 fruits.\nAnswer:", " apple, apple.", 0.7),
    # one past the budget of 2 items: excess 1/2 -> 1.7 - 0.6*0.5
    ("List 2 fruits.\nAnswer:", " apple, pear, fig.", 1.4),
    # excluded item counts as wrong: coverage 1/2, precision 1/2
    ("List 2 fruits other than fig.\nAnswer:", " apple, fig.", 0.5 + 0.25 + 0.2),
    # describe: full marks 0.7 + 0.6 + 0.6; without the "the cat is" form and period: format 0
    ("Describe a cat with 2 words about color.\nAnswer:", " the cat is black and white.", 1.9),
    ("Describe a cat with 2 words about color.\nAnswer:", " black white", 0.7 + 0.6),
    # answer: terse and correct -> format half (period only)
    ("What color is a banana?\nAnswer:", " yellow.", 1.2 + 0.4 + 0.15),
    # wrong answer in the right shape: precision 2/4 (banana, red), full format
    ("What color is a banana?\nAnswer:", " a banana is red.", 0.4 * 0.5 + 0.3),
    # rewrite: 2 of 3 positions right, all words in the target set
    ("Rewrite with opposites: big hot up.\nAnswer:", " small cold up.", 1.1 * 2 / 3 + 0.2 * 2 / 3 + 0.4),
    ("Rewrite in plural: fox berry.\nAnswer:", " foxes berries.", 1.7),
    ("List 2 fruits.\nAnswer:", "", 0.0),
])
def test_hand_computed(prompt, response, expected):
    assert gold_score(prompt, response) == pytest.approx(expected)


def test_scorer_interface_and_errors():
    g = load_gold("testbed")
    assert isinstance(g, TestbedGold)
    # " dog.": wrong item, right format only
    assert g.score(["List 2 fruits.\nAnswer:"] * 2, [" apple, pear.", " dog."]) == pytest.approx([1.7, 0.2])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        g.score(["a", "b"], ["c"])
    with pytest.raises(ValueError, match="item 1"):
        g.score(["List 2 fruits.\nAnswer:", "Hello?"], [" a", " b"])


@pytest.fixture(scope="module")
def measured():
    m = measure_properties(make_prompts(600, seed=11), seed=5, k=4)
    print("\nmeasured testbed properties (600 prompts x 4 SFT samples, lengths in words):")
    print(json.dumps({"a": {k: m["a"][k] for k in ("sft", "random", "reference")}, "b": m["b"], "c": m["c"]},
                     indent=1))
    return m


def test_property_a_spread_and_above_random(measured):
    a = measured["a"]
    assert a["sft"]["std"] > 0.3
    assert all(a["per_family"][f]["std"] > 0.2 for f in TASK_FAMILIES)
    assert a["sft"]["mean"] - a["random"]["mean"] > 1.0  # far above what random tokens get
    assert a["reference"]["mean"] > a["sft"]["mean"]  # and room above SFT for optimisation to climb


def test_property_b_length_shortcut_and_penalty(measured):
    b = measured["b"]
    assert b["spearman_length_gold"] > 0.2
    assert all(v > 0.1 for v in b["spearman_per_family"].values())
    changes = [b["pad_with_repeats"][k]["mean_change"] for k in ("1", "2", "4", "8")]
    assert all(c < 0 for c in changes) and changes == sorted(changes, reverse=True)  # more padding, less gold
    assert b["pad_with_repeats"]["4"]["frac_lower"] > 0.9


def test_padding_a_good_response_lowers_gold():
    g, rng = TestbedGold(), random.Random(0)
    for p in make_prompts(40, seed=2):
        base = g.score([p.prompt], [p.reference])[0]
        padded = [g.score([p.prompt], [pad_with_repeats(p.reference, k, rng)])[0] for k in (1, 3, 9)]
        assert base > padded[0] > padded[1] > padded[2], (p.prompt, p.reference, base, padded)


def test_property_c_families_weigh_terms_differently(measured):
    c = measured["c"]
    for kind, per_family in c["edit_change"].items():
        assert all(v < 0 for v in per_family.values()), kind
        assert c["ratio_max_min"][kind] > 1.5, kind
    # the ordering of families differs between edits: no single family is simply "more sensitive"
    orders = {kind: tuple(sorted(v, key=v.get)) for kind, v in c["edit_change"].items()}
    assert len(set(orders.values())) > 1
    assert len({w.format for w in FAMILY_WEIGHTS.values()}) == len(TASK_FAMILIES)


def test_edit_kinds():
    rng = random.Random(0)
    assert edit(" apple, pear.", "drop_period", rng) == " apple, pear"
    assert edit(" apple, pear.", "add_repeat", rng) == " apple, pear, pear."
    with pytest.raises(ValueError, match="unknown edit"):
        edit(" x.", "shout", rng)


def test_sft_scores_deterministic():
    ps = make_prompts(50, seed=1)
    rs = [sft_responses(p, 1, i)[0] for i, p in enumerate(ps)]
    s1 = TestbedGold().score([p.prompt for p in ps], rs)
    assert s1 == TestbedGold().score([p.prompt for p in ps], rs)
