"""Held-out evaluation: per-pair outcomes, accuracy against gold's own preference, the noise ceiling, forward passes."""

import random

import pytest

from tests.fixtures import SMALL, save_tiny_rm, tiny_corpus, tiny_tokenizer, write_manifest
from umm_ray.config import Config
from umm_ray.data import write_jsonl
from umm_ray.eval.rm_metrics import evaluate_rms, gold_labels
from umm_ray.reward_source import RewardSource
from umm_ray.testbed.gold import TestbedGold
from umm_ray.testbed.prepare import label_pairs
from umm_ray.testbed.world import sft_responses


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Gold-labelled pairs with 30% label noise (test and val files) and two tiny RMs with random heads."""
    root = tmp_path_factory.mktemp("rm_metrics")
    records, texts = tiny_corpus(120, seed=3)
    tok = tiny_tokenizer(texts)
    rng = random.Random(0)
    a, b = zip(*(sft_responses(r, 2, rng) for r in records))
    pairs, stats = label_pairs(records, list(a), list(b), TestbedGold(), noise=0.3, seed=1)
    write_jsonl(root / "pairs_test.jsonl", pairs)
    write_jsonl(root / "pairs_val.jsonl", pairs[:20])
    rms = [save_tiny_rm(root / f"rm{i}", tok, seed=i, head_std=1.0, **SMALL) for i in range(2)]
    return {"root": root, "pairs": pairs, "stats": stats, "rms": rms,
            "manifest": write_manifest(root / "ens.json", rms)}


def test_gold_judged_accuracy_and_noise_ceiling(world, tmp_path):
    pairs = world["pairs"]
    cfg = Config()
    sources = {"rm0": RewardSource(world["rms"][0]), "ens": RewardSource(world["manifest"]).with_aggregate("mean")}
    res = evaluate_rms(cfg, sources, world["root"] / "pairs_test.jsonl", tmp_path, gold=TestbedGold())
    gold = TestbedGold()
    p, c, r = [x.prompt for x in pairs], [x.chosen for x in pairs], [x.rejected for x in pairs]
    keep, ceiling, _ = gold_labels(gold, p, c, r)
    # The ceiling is how often the noisy labels agree with gold: 1 - (flips that survived), here about 0.7.
    assert sum(ceiling) / len(ceiling) == pytest.approx(1 - world["stats"]["n_flipped"] / len(pairs), abs=1e-9)
    gc, gr = gold.score(p, c), gold.score(p, r)
    for name in sources:
        row = res[name]
        won = row["outcomes"]["test"]
        assert len(won) == len(pairs) and row["acc_test"] == pytest.approx(sum(won) / len(won))
        # Right against gold: the RM prefers the response gold prefers (brute force, pair by pair).
        brute = [won[i] if gc[i] > gr[i] else 1 - won[i] for i in keep]
        assert row["outcomes"]["gold"] == brute and row["acc_gold"] == pytest.approx(sum(brute) / len(brute))
    assert res["rm0"]["forward_passes"] == 1 and res["ens"]["forward_passes"] == 2
    assert res["rm0"]["acc_gold"] != res["rm0"]["acc_test"]  # 30% noise: the two judgements differ


def test_length_corr_of_each_rm_and_of_the_gold_on_the_test_responses(world, tmp_path):
    import numpy as np
    import torch

    from umm_ray.eval.rm_metrics import length_corr
    from umm_ray.models.reward_model import load_scorer

    pairs = world["pairs"]
    p, c, r = [x.prompt for x in pairs], [x.chosen for x in pairs], [x.rejected for x in pairs]
    res = evaluate_rms(Config(), {"rm0": RewardSource(world["rms"][0])}, world["root"] / "pairs_test.jsonl", tmp_path,
                       gold=TestbedGold())
    words = [len(t.split()) for t in c + r]
    scorer = load_scorer(str(world["rms"][0]))
    by_hand = np.corrcoef(scorer.score(p, c) + scorer.score(p, r), words)[0, 1]
    assert res["rm0"]["length_corr"] == pytest.approx(by_hand, abs=1e-6)
    gold = TestbedGold()
    assert res["_meta"]["gold_length_corr"] == pytest.approx(
        np.corrcoef(gold.score(p, c) + gold.score(p, r), words)[0, 1], abs=1e-9)
    assert length_corr(torch.ones(4), [" a", " a b", " a b c", " a"]) is None  # a score that never varies
    assert length_corr(torch.arange(4.0), [" a b"] * 4) is None  # responses of one length
    assert length_corr(torch.arange(3.0), [" a", " a b", " a b c"]) == pytest.approx(1.0)


def test_eval_scores_on_every_core_of_the_process_and_gives_the_threads_back(world, tmp_path):
    """A `ray job submit` driver starts with OMP_NUM_THREADS=1; the eval (which times the RMs) uses every core it may
    run on whatever the process had, says so in eval.json, and leaves the process's own count as it was."""
    import os

    import torch

    from umm_ray.resources import usable_cores

    assert usable_cores() == len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = evaluate_rms(Config(), {"rm0": RewardSource(world["rms"][0])}, world["root"] / "pairs_test.jsonl",
                           tmp_path)
        assert res["_meta"]["threads"] == usable_cores() and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
