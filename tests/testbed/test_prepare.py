"""The prepare stage on a tiny config: outputs, disjoint splits, idempotence; gold labelling of preference pairs."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from umm_ray.config import load_config
from umm_ray.data import load_prompts, read_jsonl
from umm_ray.records import PromptRecord
from umm_ray.testbed.gold import TestbedGold
from umm_ray.layout import RunLayout
from umm_ray.testbed.prepare import SFT_SAMPLES, is_prepared, label_pairs, prepare_world
from umm_ray.testbed.world import TASK_FAMILIES, make_prompts


def _cfg(out, *extra):
    return load_config(None, ["--run.output_dir", str(out), "--testbed.n_prompts", "64", "--testbed.vocab_size", "300",
                              *extra])


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_prepare_world_outputs_and_idempotence(tmp_path, capsys):
    cfg = _cfg(tmp_path)
    assert not is_prepared(cfg)
    paths = prepare_world(cfg)
    assert paths == RunLayout(tmp_path) and is_prepared(cfg)
    splits = {s: load_prompts(str(paths.prompts(s))) for s in ("sft", "ppo", "bon")}
    texts = {s: {p.prompt for p in v} for s, v in splits.items()}
    assert not (texts["sft"] & texts["ppo"] or texts["sft"] & texts["bon"] or texts["ppo"] & texts["bon"])
    assert set().union(*texts.values()) == {p.prompt for p in make_prompts(64, cfg.run.seed)}
    assert all({p.family for p in v} == set(TASK_FAMILIES) for v in splits.values())  # stratified
    sft = [row for _, row in read_jsonl(paths.sft_data)]
    assert len(sft) == SFT_SAMPLES * len(splits["sft"]) and {r["prompt"] for r in sft} == texts["sft"]
    assert all(r["response"].startswith(" ") and isinstance(r["gold"], float) for r in sft)
    tok = AutoTokenizer.from_pretrained(paths.tokenizer)
    base = AutoModelForCausalLM.from_pretrained(paths.base)
    assert base.config.model_type == "llama" and base.config.vocab_size == len(tok) <= 300
    world = json.loads(paths.world_json.read_text())
    assert set(world["properties"]) == {"a", "b", "c"} and world["properties"]["a"]["sft"]["std"] > 0

    before = _mtimes(paths.prepare)
    assert prepare_world(cfg) == paths and _mtimes(paths.prepare) == before  # second run: nothing rewritten

    from jobs.prepare import main  # the job on the same directory skips too, and prints the figures
    main(["--run.output_dir", str(tmp_path), "--testbed.n_prompts", "64", "--testbed.vocab_size", "300"])
    out = capsys.readouterr().out
    assert "a) gold of SFT responses" in out and "b) Spearman(tokens, gold)" in out and "c) add_repeat" in out
    # nothing rewritten; the stage graph adds its marker (_done.json) and the job its config.yaml
    assert {p: t for p, t in _mtimes(paths.prepare).items() if p.name not in ("config.yaml", "_done.json")} == before

    changed = _cfg(tmp_path, "--run.seed", "1")
    assert not is_prepared(changed)
    prepare_world(changed)
    assert is_prepared(changed) and not is_prepared(cfg)
    assert {p.prompt for p in load_prompts(str(paths.prompts_sft))} != texts["sft"]


P = "List 2 fruits.\nAnswer:"


def test_label_pairs_orders_by_gold_and_counts_ties():
    prompts = [P, PromptRecord(P, family="list"), P, "What color is a fig?\nAnswer:"]
    a = [" apple, pear.", " dog.", " fig, fig.", " a fig is purple."]
    b = [" dog.", " apple, pear.", " fig, fig.", " a fig is red"]  # item 2 is identical: a tie
    pairs, stats = label_pairs(prompts, a, b, TestbedGold(), noise=0.0, seed=0)
    assert stats["n_in"] == 4 and stats["n_ties"] == 1 and stats["n_pairs"] == 3 and stats["n_flipped"] == 0
    assert [p.chosen for p in pairs] == [" apple, pear.", " apple, pear.", " a fig is purple."]
    assert [p.family for p in pairs] == ["list", "list", "answer"]
    assert all(p.prompt in (P, prompts[3]) and p.source.startswith("gold-labelled:") for p in pairs)


def test_label_pairs_noise_flips_at_the_given_rate():
    n = 2000
    prompts, a, b = [P] * n, [" apple, pear."] * n, [" dog."] * n
    pairs, stats = label_pairs(prompts, a, b, TestbedGold(), noise=0.25, seed=3)
    flipped = sum(p.chosen == " dog." for p in pairs)
    assert flipped == stats["n_flipped"] and 0.21 < flipped / n < 0.29
    assert label_pairs(prompts, a, b, TestbedGold(), noise=0.25, seed=3) == (pairs, stats)  # deterministic


def test_label_pairs_length_bias_picks_the_longer_response_at_the_given_rate():
    n = 2000
    # Gold prefers the short correct answer; a biased labeller picks the padded one. Equal lengths fall back to gold.
    prompts, a, b = [P] * n, [" apple, pear."] * n, [" apple, pear, dog, dog, dog."] * n
    pairs, stats = label_pairs(prompts, a, b, TestbedGold(), noise=0.0, seed=3, length_bias=0.3)
    biased = sum(p.chosen == b[0] for p in pairs)
    assert biased == stats["n_length_biased"] and 0.26 < biased / n < 0.34 and stats["n_flipped"] == 0
    everyone, stats = label_pairs(prompts, a, b, TestbedGold(), noise=0.25, seed=3, length_bias=1.0)
    assert all(p.chosen == b[0] for p in everyone) and stats["n_flipped"] == 0
    same_len, stats = label_pairs([P] * 4, [" apple, pear."] * 4, [" dog, cat."] * 4, TestbedGold(), 0.0, 0, 1.0)
    assert all(p.chosen == " apple, pear." for p in same_len) and stats["n_length_biased"] == 0
    # With no bias the labels are exactly those of the unbiased labeller (the bias draws use their own stream).
    assert label_pairs(prompts, a, b, TestbedGold(), 0.25, 3, 0.0)[0] == label_pairs(prompts, a, b, TestbedGold(),
                                                                                         0.25, 3)[0]


def test_label_pairs_validates():
    with pytest.raises(ValueError, match="2 prompts, 1 a"):
        label_pairs([P, P], [" a"], [" b", " c"], TestbedGold(), 0.1, 0)
    with pytest.raises(ValueError, match="noise"):
        label_pairs([P], [" a"], [" b"], TestbedGold(), 0.7, 0)
    with pytest.raises(ValueError, match="length_bias must be in"):
        label_pairs([P], [" a"], [" b"], TestbedGold(), 0.1, 0, length_bias=1.5)
