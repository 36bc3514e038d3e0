"""Held-out evaluation of reward models: Bradley–Terry loss, preference accuracy (overall and per family), and for a
MoE the expert load per layer. Pure torch; the reward stages run these inside Ray tasks.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import torch

from umm_ray.algo.bt import bt_loss, pair_outcomes, pref_accuracy
from umm_ray.models.moe import expert_load, moe_layers, reset_expert_load
from umm_ray.models.reward_model import RewardModelScorer, load_reward_model
from umm_ray.records import PreferencePair

PER_PAIR = ("outcomes", "rewards")  # pair_metrics' keys with one entry per pair: kept in eval.json, not printed


@torch.no_grad()
def pair_rewards(model, tok, pairs: list[PreferencePair], max_len: int, batch_size: int = 64,
                 chat_template: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen and the rejected response of every pair: (r_chosen [N], r_rejected [N])."""
    scorer = RewardModelScorer(model, tok, max_len=max_len, batch_size=batch_size, chat_template=chat_template)
    prompts = [p.prompt for p in pairs]
    scores = scorer.score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    r = torch.tensor(scores, dtype=torch.float64)
    return r[:len(pairs)], r[len(pairs):]


def pair_metrics(r_chosen: torch.Tensor, r_rejected: torch.Tensor, families: list[str]) -> dict:
    """{n, bt_loss, accuracy, accuracy_by_family, outcomes, rewards} for rewards [N] of chosen/rejected responses;
    `outcomes` [N] (1 / 0 / 0.5 per pair, in the split's order) lets two RMs tested on the same pairs be compared pair
    by pair; `rewards` {"chosen": [N], "rejected": [N]} keeps the scores themselves (an ensemble aggregates its
    members' from them instead of scoring the pairs again)."""
    by_family = defaultdict(list)
    for i, fam in enumerate(families):
        by_family[fam or "unknown"].append(i)
    return {
        "n": int(r_chosen.numel()),
        "bt_loss": float(bt_loss(r_chosen, r_rejected)),
        "accuracy": pref_accuracy(r_chosen, r_rejected),
        "accuracy_by_family": {f: pref_accuracy(r_chosen[idx], r_rejected[idx])
                               for f, idx in sorted(by_family.items())},
        "outcomes": pair_outcomes(r_chosen, r_rejected).tolist(),
        "rewards": {"chosen": r_chosen.tolist(), "rejected": r_rejected.tolist()},
    }


def evaluate_model(model, tok, splits: dict[str, list[PreferencePair]], max_len: int, batch_size: int = 64,
                   chat_template: str = "auto", threads: int = 1) -> dict:
    """Metrics per split name; for a MoE model also `expert_load` [layers][experts] over each split's tokens.
    `chat_template` is the model.chat_template mode the pairs are rendered with; `threads`: torch threads (the
    task's CPU claim)."""
    torch.set_num_threads(threads)
    model.eval()
    out = {}
    for name, pairs in splits.items():
        if not pairs:
            continue
        reset_expert_load(model)
        rc, rr = pair_rewards(model, tok, pairs, max_len, batch_size, chat_template)
        out[name] = pair_metrics(rc, rr, [p.family for p in pairs])
        if moe_layers(model):
            out[name]["expert_load"] = expert_load(model)
    return out


def evaluate_dir(model_dir: str | Path, splits: dict[str, list[PreferencePair]], max_len: int,
                 batch_size: int = 64, trust_remote_code: bool = False, chat_template: str = "auto",
                 threads: int = 1) -> dict:
    """Load a dense/merged HF or MoE reward-model directory (validated) and evaluate it on `splits`."""
    model, tok = load_reward_model(model_dir, trust_remote_code=trust_remote_code)
    metrics = evaluate_model(model, tok, splits, max_len, batch_size, chat_template, threads)
    metrics["params"] = sum(p.numel() for p in model.parameters())
    return metrics


def evaluate_initial(task, seed: int, splits: dict[str, list[PreferencePair]], max_len: int,
                     batch_size: int = 64) -> dict:
    """Evaluate the model a training task starts from (built under the same seed as the workers build it)."""
    torch.manual_seed(seed)
    net = task.build()
    return evaluate_model(net.rm, task.tokenizer, splits, max_len, batch_size, task.chat_template)
