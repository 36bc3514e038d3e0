"""The prepare stage: build the embedded world on disk, and label preference pairs with gold.

    layout = prepare_world(cfg)    # idempotent: a second call with the same config returns at once
    layout.prompts_ppo, layout.base, layout.tokenizer, ...   (a `umm_ray.layout.RunLayout`)

Layout under `<run.output_dir>/prepare/` (paths spelled by `RunLayout`):
    tokenizer/            byte-level BPE (AutoTokenizer.from_pretrained)
    base/                 the untrained tiny causal LM of cfg.model.family (+ tokenizer), safetensors
    prompts_sft.jsonl     PromptRecord rows; SFT and preference-pair prompts
    prompts_ppo.jsonl     PromptRecord rows; PPO prompts        (the three prompt splits are disjoint)
    prompts_bon.jsonl     PromptRecord rows; Best-of-N prompts
    sft.jsonl             {prompt, response, family, gold}: SFT_SAMPLES programmatic responses per SFT prompt
    world.json            counts, tokenizer stats, measured properties a/b/c, and the config fingerprint (written
                          last: its presence marks the stage complete)
The preference pairs live in `<run.output_dir>/pairs/pairs_{train,val,test}.jsonl` (written by the pairs stage with
`label_pairs`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict

from umm_ray.config import Config
from umm_ray.data import write_jsonl
from umm_ray.layout import RunLayout
from umm_ray.records import PreferencePair, PromptRecord, Scorer
from umm_ray.testbed.gold import FAMILY_WEIGHTS, TestbedGold, words_of
from umm_ray.testbed.models import make_causal_lm, save_model
from umm_ray.testbed.properties import measure_properties
from umm_ray.testbed.tokenizer import tokenizer_stats, train_tokenizer
from umm_ray.testbed.world import TASK_FAMILIES, make_prompts, parse_prompt, sft_responses

log = logging.getLogger(__name__)

SPLIT_FRACS = {"sft": 0.5, "ppo": 0.35, "bon": 0.15}  # of cfg.testbed.n_prompts, stratified by family
SFT_SAMPLES = 4  # programmatic responses per SFT prompt
PROPERTY_PROMPTS = 1000  # prompts (SFT split first) used to measure properties a/b/c for world.json


# The config keys the world is built from: its fingerprint, and what the prepare stage declares it reads (a key
# outside this list, e.g. testbed.label_noise, must not rebuild the world and everything downstream of it).
WORLD_KEYS = ("run.seed", "testbed.n_prompts", "testbed.vocab_size", "model.family", "model.hidden_size",
              "model.num_layers", "model.intermediate_size", "model.max_seq_len")


def fingerprint(cfg: Config) -> dict:
    """The config values the world depends on (WORLD_KEYS); a change in any of them rebuilds the world."""
    return {key: getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) for key in WORLD_KEYS}


def is_prepared(cfg: Config) -> bool:
    """True when world.json exists, matches the config fingerprint, and every output is present."""
    paths = RunLayout(cfg.run.output_dir)
    if not paths.world_json.is_file():
        return False
    try:
        done = json.loads(paths.world_json.read_text()).get("fingerprint")
    except json.JSONDecodeError:
        return False
    outputs = (paths.prompts_sft, paths.prompts_ppo, paths.prompts_bon, paths.sft_data,
               paths.tokenizer / "tokenizer.json", paths.base / "config.json")
    return done == json.loads(json.dumps(fingerprint(cfg))) and all(p.exists() for p in outputs)


def split_prompts(prompts: list[PromptRecord], seed: int) -> dict[str, list[PromptRecord]]:
    """Disjoint sft/ppo/bon splits with SPLIT_FRACS of every family (deterministic in `seed`)."""
    rng = random.Random(seed)
    out: dict[str, list[PromptRecord]] = {name: [] for name in SPLIT_FRACS}
    for fam in TASK_FAMILIES:
        group = [p for p in prompts if p.family == fam]
        rng.shuffle(group)
        n_sft, n_ppo = round(len(group) * SPLIT_FRACS["sft"]), round(len(group) * SPLIT_FRACS["ppo"])
        out["sft"] += group[:n_sft]
        out["ppo"] += group[n_sft:n_sft + n_ppo]
        out["bon"] += group[n_sft + n_ppo:]
    for part in out.values():
        rng.shuffle(part)  # interleave the families
    return out


def sft_records(prompts: list[PromptRecord], seed: int, gold: Scorer) -> list[dict]:
    """SFT_SAMPLES programmatic responses per prompt, with their gold score (for statistics only)."""
    rng = random.Random(seed)
    rows = [(p, r) for p in prompts for r in sft_responses(p, SFT_SAMPLES, rng)]
    scores = gold.score([p.prompt for p, _ in rows], [r for _, r in rows])
    return [{"prompt": p.prompt, "response": r, "family": p.family, "gold": s} for (p, r), s in zip(rows, scores)]


def prepare_world(cfg: Config, force: bool = False) -> RunLayout:
    """Generate prompts, SFT data, tokenizer and base model under `<run.output_dir>/prepare/`; skip if done.

    Args:
        cfg: uses run.seed/output_dir, testbed.* and model.* (family and sizes).
        force: rebuild even when the outputs match the config.

    Returns:
        The paths written (also when skipped).
    """
    paths = RunLayout(cfg.run.output_dir)
    if not force and is_prepared(cfg):
        log.info("prepare: %s is up to date with the config; skipping", paths.prepare)
        return paths
    t0 = time.time()
    paths.prepare.mkdir(parents=True, exist_ok=True)
    paths.world_json.unlink(missing_ok=True)  # the completion marker goes last
    seed, gold = cfg.run.seed, TestbedGold()
    prompts = make_prompts(cfg.testbed.n_prompts, seed)
    splits = split_prompts(prompts, seed)
    for name, part in splits.items():
        write_jsonl(paths.prompts(name), part)
    sft = sft_records(splits["sft"], seed + 1, gold)
    write_jsonl(paths.sft_data, sft)
    texts = [p.prompt for p in prompts] + [p.reference for p in prompts] + [r["response"] for r in sft]
    tok = train_tokenizer(texts, cfg.testbed.vocab_size, paths.tokenizer)
    m = cfg.model
    base = make_causal_lm(m.family, tok, seed=seed, hidden_size=m.hidden_size, num_layers=m.num_layers,
                          intermediate_size=m.intermediate_size, max_seq_len=m.max_seq_len)
    save_model(base, tok, paths.base)
    measured = splits["sft"] + splits["ppo"]
    summary = {
        "fingerprint": fingerprint(cfg),
        "counts": {name: {f: sum(p.family == f for p in part) for f in TASK_FAMILIES} for name, part in splits.items()},
        "n_sft_records": len(sft),
        "tokenizer": {"vocab_size": len(tok), "prompts": tokenizer_stats(tok, [p.prompt for p in prompts]),
                      "sft_responses": tokenizer_stats(tok, [r["response"] for r in sft])},
        "base": {"family": m.family, "params": sum(p.numel() for p in base.parameters())},
        "family_weights": {f: asdict(w) for f, w in FAMILY_WEIGHTS.items()},
        "properties": measure_properties(measured[:PROPERTY_PROMPTS], seed + 2, SFT_SAMPLES, tokenizer=tok, gold=gold),
        "seconds": round(time.time() - t0, 1),
    }
    paths.world_json.write_text(json.dumps(summary, indent=1))
    return paths


def label_pairs(prompts: list[str | PromptRecord], responses_a: list[str], responses_b: list[str], gold: Scorer,
                noise: float, seed: int, length_bias: float = 0.0) -> tuple[list[PreferencePair], dict]:
    """Preference pairs labelled by `gold`: chosen = the higher-gold response, then flipped with probability `noise`.

    A labeller with a length bias (probability `length_bias`) instead picks the response with more words, whatever
    gold says, as human raters favour longer answers: the shortcut a proxy learns and a policy exploits past the
    length budget gold allows. Ties (equal gold, which includes identical responses) are dropped and counted, never
    silently; a biased pick between responses of equal length falls back to gold.

    Args:
        prompts: prompt texts or PromptRecords (family from the record, else parsed from a testbed prompt, else "").
        responses_a, responses_b: two responses per prompt.
        gold: any Scorer.
        noise: label-flip probability in [0, 0.5].
        seed: seeds the flips (and, separately, the biased picks).
        length_bias: probability in [0, 1] that the longer response is chosen regardless of gold (then no flip).

    Returns:
        (pairs, stats) with stats = {n_in, n_ties, n_flipped, n_length_biased, n_pairs, noise, length_bias,
        mean_abs_margin}; n_length_biased counts the biased picks that went against gold.
    """
    if not (len(prompts) == len(responses_a) == len(responses_b)):
        raise ValueError(f"label_pairs: {len(prompts)} prompts, {len(responses_a)} a, {len(responses_b)} b responses")
    if not 0.0 <= noise <= 0.5:
        raise ValueError(f"label_pairs: noise must be in [0, 0.5], got {noise}")
    if not 0.0 <= length_bias <= 1.0:
        raise ValueError(f"label_pairs: length_bias must be in [0, 1], got {length_bias}")
    texts = [p.prompt if isinstance(p, PromptRecord) else p for p in prompts]
    scores = gold.score(texts + texts, list(responses_a) + list(responses_b))
    sa, sb = scores[:len(texts)], scores[len(texts):]
    rng, bias_rng = random.Random(seed), random.Random(seed + 7919)
    pairs, ties, flipped, biased, margins = [], 0, 0, 0, []
    for i, (p, a, b) in enumerate(zip(prompts, responses_a, responses_b)):
        flip = rng.random() < noise  # drawn for every item so the flips do not depend on which items tie
        by_length = bias_rng.random() < length_bias
        if sa[i] == sb[i] or a == b:
            ties += 1
            continue
        chosen, rejected = (a, b) if sa[i] > sb[i] else (b, a)
        n_chosen, n_rejected = len(words_of(chosen)), len(words_of(rejected))
        if by_length and n_chosen != n_rejected:
            if n_chosen < n_rejected:
                chosen, rejected = rejected, chosen
                biased += 1
        elif flip:
            chosen, rejected = rejected, chosen
            flipped += 1
        margins.append(abs(sa[i] - sb[i]))
        pairs.append(PreferencePair(prompt=texts[i], chosen=chosen, rejected=rejected, source=f"gold-labelled:{i}",
                                    family=_family(p)))
    stats = {"n_in": len(texts), "n_ties": ties, "n_flipped": flipped, "n_length_biased": biased,
             "n_pairs": len(pairs), "noise": noise, "length_bias": length_bias,
             "mean_abs_margin": sum(margins) / len(margins) if margins else 0.0}
    if ties:
        log.info("label_pairs: dropped %d of %d pairs with equal gold (ties)", ties, len(texts))
    return pairs, stats


def _family(prompt: str | PromptRecord) -> str:
    if isinstance(prompt, PromptRecord) and prompt.family:
        return prompt.family
    try:
        return parse_prompt(prompt.prompt if isinstance(prompt, PromptRecord) else prompt).family
    except ValueError:
        return ""
