"""The pairs stage: gold-labelled preference pairs from the SFT policy, two samples per prompt, with label noise.

    stats = run_pairs(cfg, layout.prompts_sft, layout.sft_model, layout.pairs)

Writes `pairs_{train,val,test}.jsonl` and `stats.json` into the output directory (`RunLayout.pairs` in the stage
graph). Labels come from `reward.gold` through `label_pairs`, with the testbed's label noise and length bias.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import ray

from umm_ray.actors.rollout import RolloutActor
from umm_ray.config import Config
from umm_ray.data import read_jsonl, write_jsonl
from umm_ray.data.splits import split_pairs
from umm_ray.resources import role_resources
from umm_ray.testbed.gold import load_gold
from umm_ray.testbed.prepare import label_pairs


def sample_two(cfg: Config, policy_path: str, prompts: list[str]) -> tuple[list[str], list[str]]:
    """Two independent samples per prompt from `policy_path` through one RolloutActor."""
    r = cfg.rollout
    actor = ray.remote(RolloutActor).options(**role_resources(cfg, "rollout").options()).remote(
        policy_path, backend=r.backend, max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p,
        gpu_memory_utilization=r.gpu_memory_utilization, seed=cfg.run.seed,
        trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.model.chat_template)
    try:
        doubled = [p for p in prompts for _ in range(2)]
        rollout = ray.get(actor.generate.remote(doubled, n=1, seed=cfg.run.seed))
    finally:
        ray.kill(actor)
    return rollout.responses[0::2], rollout.responses[1::2]


def run_pairs(cfg: Config, prompts_path: str | Path, policy_path: str | Path, out_dir: str | Path) -> dict:
    """Sample, label and split; returns the stats written to `out_dir/stats.json`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prompts = [row["prompt"] for _, row in read_jsonl(prompts_path)]
    if not prompts:
        raise ValueError(f"{prompts_path}: no prompts to sample pairs from")
    rng = random.Random(cfg.run.seed)
    chosen = [prompts[i % len(prompts)] for i in rng.sample(range(max(len(prompts), cfg.testbed.n_pairs)),
                                                             cfg.testbed.n_pairs)]
    a, b = sample_two(cfg, str(policy_path), chosen)
    # A sample that is only EOS decodes to an empty response; preference files forbid those, so such prompts are
    # left out here and counted in the stats (never silently).
    keep = [i for i in range(len(chosen)) if a[i].strip() and b[i].strip()]
    n_empty = len(chosen) - len(keep)
    chosen, a, b = [chosen[i] for i in keep], [a[i] for i in keep], [b[i] for i in keep]
    gold = load_gold(cfg.reward.gold, trust_remote_code=cfg.model.trust_remote_code,
                     chat_template=cfg.model.chat_template)
    pairs, stats = label_pairs(chosen, a, b, gold, cfg.testbed.label_noise, cfg.run.seed,
                               cfg.testbed.label_length_bias)
    v, t = cfg.rm.val_frac, cfg.rm.test_frac
    parts = split_pairs(pairs, (1 - v - t, v, t), seed=cfg.run.seed)
    splits = dict(zip(("train", "val", "test"), parts))
    for name, rows in splits.items():
        write_jsonl(out / f"pairs_{name}.jsonl", rows)
    stats = {**stats, "n_empty_dropped": n_empty, **{f"n_{k}": len(v) for k, v in splits.items()}}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats
