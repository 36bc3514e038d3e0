"""Held-out accuracy, parameter count and scoring throughput of trained RMs, side by side on the same pairs.

Sources are those of the compare job: a checkpoint dir (dense, merged UMM, unmerged MoE) or an ensemble manifest with
its aggregate ('manifest.json#wco', '#uwo:0.5'). Ensemble members are scored once and every aggregate reuses them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from umm_ray.algo.bt import pair_outcomes
from umm_ray.algo.ensemble import aggregate
from umm_ray.config import Config
from umm_ray.data import load_preferences_with_report
from umm_ray.models.reward_model import load_scorer, member_rows
from umm_ray.resources import usable_cores
from umm_ray.reward_source import RewardSource


def _pairs(path: Path, limit: int | None = None, notes: list[str] | None = None
           ) -> tuple[list[str], list[str], list[str]]:
    """(prompts, chosen, rejected) of a preference file. With `notes`, bad rows are skipped and counted there."""

    pairs, report = load_preferences_with_report(str(path), on_error="skip" if notes is not None else "raise",
                                                 limit=limit)
    if notes is not None and (report.n_skipped or report.n_dropped):
        notes.append(f"{path}: {report.summary()}")
    if not pairs:
        raise ValueError(f"{path}: no preference pairs to evaluate on")
    return [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs]


def count_params(scorer) -> int:
    """Parameters of the scoring model(s): summed over members for an ensemble."""
    members = getattr(scorer, "members", None)
    if members is not None:
        return sum(count_params(m) for m in members)
    return sum(p.numel() for p in scorer.model.parameters())


def _member_matrix(scorer, prompts: list[str], responses: list[str]) -> tuple[torch.Tensor, float]:
    """Scores [k, B] (k = 1 for a single model) and the seconds it took."""
    t0 = time.perf_counter()
    m = torch.tensor(member_rows(scorer, prompts, responses), dtype=torch.float64)
    return m, time.perf_counter() - t0


def forward_passes(scorer) -> int:
    """Backbone forward passes per scored sequence: 1 for one model, the members' sum for an ensemble, and for a
    DMoERM one router pass plus one per capability adapter (the router runs once per distinct prompt, so this is
    its cost when every prompt is new)."""
    members = getattr(scorer, "members", None)
    if members is not None:
        return sum(forward_passes(m) for m in members)
    spec = getattr(getattr(scorer, "model", None), "spec", None)
    return 1 + len(spec.capabilities) if spec is not None and hasattr(spec, "capabilities") else 1


def gold_labels(gold, prompts: list[str], chosen: list[str], rejected: list[str]
                ) -> tuple[list[int], list[float], torch.Tensor]:
    """Where the gold scorer agrees with itself: (indices of the pairs gold does not tie, the noise ceiling's outcomes
    (gold judged like an RM: [P]), the gold's scores [2P]: the P chosen, then the P rejected)."""
    gc = torch.tensor(gold.score(prompts, chosen), dtype=torch.float64)
    gr = torch.tensor(gold.score(prompts, rejected), dtype=torch.float64)
    keep = torch.nonzero(gc != gr).flatten().tolist()
    return keep, pair_outcomes(gc, gr).tolist(), torch.cat([gc, gr])


def length_corr(scores: torch.Tensor, responses: list[str]) -> float | None:
    """Pearson r between scores [B] and the responses' word counts (None when either does not vary).

    A reward model's taste for length on held-out responses: across 24 tiny testbed worlds, the proxies with the
    higher r were the ones PPO hacked before any gold gain (docs/ppo-sweep.md), length being the shortcut at hand."""
    words = torch.tensor([len(r.split()) for r in responses], dtype=torch.float64)
    x = scores.to(torch.float64)
    if len(responses) < 3 or x.std() == 0 or words.std() == 0:
        return None
    return float(torch.corrcoef(torch.stack([x, words]))[0, 1])


def evaluate_rms(cfg: Config, sources: dict[str, RewardSource], test_pairs: Path, out: Path,
                 hh_pairs: Path | None = None, gold=None) -> dict:
    """`_evaluate_rms` on every core this process may run on (`usable_cores`; its own thread count is restored after):
    the compare job runs eval alone, and a `ray job submit` driver inherits OMP_NUM_THREADS=1 from Ray's job
    supervisor, so its default would time the RMs on one core where a local run uses them all."""
    before = torch.get_num_threads()
    torch.set_num_threads(usable_cores())
    try:
        return _evaluate_rms(cfg, sources, test_pairs, out, hh_pairs, gold)
    finally:
        torch.set_num_threads(before)


def _evaluate_rms(cfg: Config, sources: dict[str, RewardSource], test_pairs: Path, out: Path,
                  hh_pairs: Path | None = None, gold=None) -> dict:
    """Evaluate every source on `test_pairs` (and the val pairs beside it), and on real HH pairs when given (the first
    `compare.hh_eval_pairs`; rows the loader rejects are skipped and counted in eval.json's notes).

    With a `gold` Scorer, each RM is also judged against the gold's own preference on the test pairs (noise-free
    labels; pairs gold ties are left out), and the noise ceiling is how often the test labels agree with gold.

    Returns (and writes to eval.json):
        {name: {acc_test, acc_val, [acc_hh], [acc_gold], params, forward_passes, throughput (sequences/s on the test
        pairs), length_corr (`length_corr` over the test pairs' 2P responses), outcomes: {split: [P] per-pair
        1 / 0 / 0.5}}, "_meta": {"n_pairs": {split: n}, "hh_source", "notes", "threads" (torch threads of the
        throughput), ["noise_ceiling": [P] outcomes of the test labels against gold, "gold_length_corr": the gold's
        own r on the same responses]}}.
    """

    torch.manual_seed(cfg.run.seed)
    splits = {"test": _pairs(test_pairs), "val": _pairs(test_pairs.with_name("pairs_val.jsonl"))}
    notes: list[str] = []
    if hh_pairs is not None:
        splits["hh"] = _pairs(hh_pairs, limit=cfg.compare.hh_eval_pairs or None, notes=notes)
    meta: dict = {}
    if gold is not None:
        keep, meta["noise_ceiling"], gold_scores = gold_labels(gold, *splits["test"])
        meta["gold_length_corr"] = length_corr(gold_scores, splits["test"][1] + splits["test"][2])
    cache: dict[str, dict] = {}
    results = {}
    for name, source in sources.items():
        if source.kind != "path":
            raise ValueError(f"RM {name!r}: {source} is not a checkpoint; accuracy is measured on local RMs only")
    # Every distinct checkpoint scores every split's chosen and rejected responses (135M RMs on 200 HH pairs: minutes)
    n_paths = len({source.location for source in sources.values()})
    bar = tqdm(total=n_paths * sum(2 * len(v[0]) for v in splits.values()), desc="eval", unit="resp", mininterval=5.0)
    for name, source in sources.items():
        path = source.location
        if path not in cache:
            bar.set_postfix_str(name)
            scorer = load_scorer(path, max_len=cfg.rm.max_len, batch_size=cfg.reward.batch_size,
                                 trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.model.chat_template)
            entry = {"params": count_params(scorer), "forward_passes": forward_passes(scorer)}
            p, c, _ = splits["test"]
            _member_matrix(scorer, p[:cfg.reward.batch_size], c[:cfg.reward.batch_size])  # warm-up, not timed
            for split, (p, c, r) in splits.items():
                mc, tc = _member_matrix(scorer, p, c)
                mr, tr = _member_matrix(scorer, p, r)
                bar.update(2 * len(p))
                entry[split] = (mc, mr)
                if split == "test":
                    entry["throughput"] = 2 * len(p) / (tc + tr)
            cache[path] = entry
        entry = cache[path]
        how, lam = source.aggregate or "mean", source.lam or 0.0
        row = {"params": entry["params"], "forward_passes": entry["forward_passes"], "throughput": entry["throughput"],
               "outcomes": {}}
        for split in splits:
            mc, mr = entry[split]
            if mc.shape[0] > 1:
                mc, mr = aggregate(mc, how, lam), aggregate(mr, how, lam)
            else:
                mc, mr = mc[0], mr[0]
            row["outcomes"][split] = pair_outcomes(mc, mr).tolist()
            if split == "test":
                row["length_corr"] = length_corr(torch.cat([mc, mr]), splits["test"][1] + splits["test"][2])
            row[f"acc_{split}"] = sum(row["outcomes"][split]) / len(row["outcomes"][split])
            if split == "test" and gold is not None and keep:
                won, ceiling = row["outcomes"]["test"], meta["noise_ceiling"]
                # right against gold = right against the label where gold agrees with the label, wrong where not
                agree = [won[i] if ceiling[i] == 1 else 1.0 - won[i] for i in keep]
                row["outcomes"]["gold"] = agree
                row["acc_gold"] = sum(agree) / len(agree)
        results[name] = row
    bar.close()
    meta.update({"n_pairs": {k: len(v[0]) for k, v in splits.items()}, "hh_source": str(hh_pairs or ""),
                 "notes": notes, "threads": torch.get_num_threads()})
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps({**results, "_meta": meta}, indent=1))
    return {**results, "_meta": meta}
