"""Seed ensembles (Coste et al. 2023): k dense reward models differing only in seed, plus a manifest and the
aggregate's held-out evaluation. `ensemble.worker_group per_member` trains them as k concurrent Ray Train runs
(placement cfg.ensemble.placement, SPREAD by default; concurrency is shown from the members' own clocks,
`overlap_seconds` in eval.json); `shared` trains them one after another in one worker group (`umm_ray.train.group`),
paying the worker-group start-up once. The manifest keeps each member's mean and std on calibration responses, the
common scale every aggregate combines them on (`umm_ray.algo.ensemble`).
"""

from __future__ import annotations

import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import ray
import torch

from umm_ray.algo.ensemble import aggregate, member_scale, standardise
from umm_ray.config import Config
from umm_ray.layout import RunLayout
from umm_ray.models.reward_model import load_scorer
from umm_ray.plan import check_fits
from umm_ray.actors.placement import on_single_cpu_node
from umm_ray.plan_cluster import resolve_worker_group
from umm_ray.records import PreferencePair
from umm_ray.resources import role_resources
from umm_ray.train.bt_stage import (RMData, TrainedRM, bt_spec, finish_bt_stage, prepare_inputs, run_bt_stage,
                                    stage_dir_for)
from umm_ray.train.bt_task import BTTask
from umm_ray.train.evaluate import pair_metrics
from umm_ray.train.group import fit_group
from umm_ray.train.loop import TrainSpec
from umm_ray.train.levers import worker_threads


def train_ensemble(cfg: Config, layout: RunLayout | None = None, stage_dir: Path | None = None,
                data: RMData | None = None,    source: Path | None = None) -> TrainedRM:
    """k dense members differing only in seed, trained as concurrent Ray Train runs (placement cfg.ensemble.placement)
    or in one shared worker group (cfg.ensemble.worker_group); writes `<stage_dir>/member_<i>/model`, `manifest.json`
    (with each member's scale on ensemble.calibration_pairs training pairs) and the aggregate's held-out eval."""
    data, source = prepare_inputs(cfg, layout, data, source)
    out = stage_dir_for(cfg, stage_dir, "ensemble")
    runs = ensemble_runs(cfg, out, data, source)
    task, specs, k = runs[0][0], [spec for _, _, spec in runs], len(runs)
    mode = worker_group_mode(cfg)
    if mode == "shared":  # one TorchTrainer.fit() training the members in turn
        t0 = time.time()
        results = fit_group(runs, out, name="members")
        with ThreadPoolExecutor(max_workers=k) as pool:  # the members' held-out evals run as concurrent Ray tasks
            reports = list(pool.map(lambda sr: finish_bt_stage(task, data, *sr, t0), zip(specs, results)))
    else:
        with ThreadPoolExecutor(max_workers=k) as pool:  # k TorchTrainer.fit() calls in flight at once
            reports = list(pool.map(lambda s: run_bt_stage(task, data, s, init_eval=False), specs))
    members = [f"member_{i}/model" for i in range(k)]
    report = _ensemble_report(cfg, out, data, reports, mode, members)
    manifest = {"members": members, "aggregate": cfg.ensemble.aggregate, "lambda": cfg.ensemble.uwo_lambda,
                "scale": report["scale"], "calibration_pairs": report["calibration_pairs"],
                "seeds": [s.seed for s in specs]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    return TrainedRM("ensemble", out, out / "manifest.json", report)


def ensemble_runs(cfg: Config, out: Path, data: RMData, source: Path) -> list[tuple[BTTask, list, TrainSpec]]:
    """The members' Ray Train runs (one dense task; seeds run.seed + i, `<out>/member_<i>`), checked to fit first."""
    check_fits(cfg, "rm_ensemble", source=source, pairs=data.train)  # per_member: all k groups at once; shared: one
    task = BTTask("dense", source, cfg.rm.max_len, trust_remote_code=cfg.model.trust_remote_code,
                  chat_template=cfg.model.chat_template, share_prompt=cfg.rm.share_prompt)
    return [(task, data.train, bt_spec(cfg, f"member_{i}", out / f"member_{i}", seed=cfg.run.seed + i,
                                       placement=cfg.ensemble.placement)) for i in range(cfg.ensemble.members)]


def worker_group_mode(cfg: Config) -> str:
    """cfg.ensemble.worker_group with 'auto' resolved against the running cluster (`resolve_worker_group`: shared on a
    single alive node with CPUs and no GPUs, else per member)."""
    return resolve_worker_group(cfg.ensemble.worker_group, on_single_cpu_node())


def _ensemble_report(cfg: Config, out: Path, data: RMData, reports: list[dict], mode: str,
                     member_dirs: list[str]) -> dict:
    keys = ("name", *data.held_out(), "steps", "entered_at", "started_at", "ended_at", "train_seconds")
    members = [{k: r.get(k) for k in keys} for r in reports]
    calibration = calibration_pairs(data.train, cfg.ensemble.calibration_pairs, cfg.run.seed)
    # The members' own evals (`finish_bt_stage`) scored every held-out pair: the aggregate reuses those rewards, so
    # only the calibration responses are scored here. Training is over: like a member's own eval, this takes one
    # training worker's CPU claim and as many torch threads
    held_out = {name: (pairs, member_rewards(reports, name)) for name, pairs in data.held_out().items() if pairs}
    cpus = max(1.0, role_resources(cfg, "train").cpus)
    agg = ray.get(ray.remote(num_cpus=cpus)(calibrate_and_evaluate).remote(
        [str(out / m) for m in member_dirs], calibration, held_out, cfg.ensemble.aggregate,
        cfg.ensemble.uwo_lambda, cfg.rm.max_len, cfg.model.trust_remote_code, cfg.model.chat_template,
        threads=worker_threads(cpus)))
    return {"stage": "ensemble", "data": data.source, "data_notes": data.notes, "aggregate": cfg.ensemble.aggregate,
            **agg, "members": members, "levers": reports[0].get("levers"),
            "overlap_seconds": _overlap(members, "entered_at"),
            "training_overlap_seconds": _overlap(members, "started_at"), "worker_group": mode}


def member_rewards(reports: list[dict], split: str) -> torch.Tensor:
    """[k, 2N] the k members' own held-out rewards on `split` (their eval reports' pair_metrics): chosen then
    rejected, in the split's pair order."""
    try:
        rows = [r[split]["rewards"]["chosen"] + r[split]["rewards"]["rejected"] for r in reports]
    except KeyError as e:
        raise ValueError(f"ensemble: a member's eval report has no {split!r} rewards ({e}): cannot aggregate") from e
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"ensemble: the members scored different numbers of {split!r} pairs: "
                         f"{[len(r) // 2 for r in rows]}")
    return torch.tensor(rows, dtype=torch.float64)


def _overlap(members: list[dict], start: str) -> float:
    """Seconds during which every member's run was up at once, from its workers' own clocks: from `start`
    ('entered_at': worker group running; 'started_at': first training step) to its last step. > 0 proves the
    runs were concurrent, not one after another."""
    return max(0.0, min(m["ended_at"] for m in members) - max(m[start] for m in members))


def calibration_pairs(pairs: list[PreferencePair], n: int, seed: int) -> list[PreferencePair]:
    """The first `n` of a seeded shuffle of `pairs` (all of them when fewer): whose responses set the members' scale."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    return [pairs[i] for i in order[:n]]


def calibrate_and_evaluate(members: list[str], calibration: list[PreferencePair],
                           held_out: dict[str, tuple[list[PreferencePair], torch.Tensor]], how: str, lam: float,
                           max_len: int, trust_remote_code: bool = False, chat_template: str = "auto",
                           threads: int = 1) -> dict:
    """Put the members on a common scale, then measure the ensemble (runs as a Ray task).

    Each member's (mean, std) comes from its scores on the 2N calibration responses (chosen and rejected,
    `algo.ensemble.member_scale`); the held-out metrics are those of the `how` aggregate over the standardised scores,
    what the manifest's `EnsembleScorer` gives (to float rounding), computed from the members' held-out rewards.

    Args:
        held_out: split -> (its M pairs, the members' rewards on them [k, 2M]: chosen then rejected).
        threads: torch threads (the task's CPU claim).

    Returns:
        {"scale": [[mean, std]] * k, "calibration_pairs": N, <split>: pair metrics of the aggregate}.
    """
    torch.set_num_threads(threads)
    raw = [load_scorer(m, max_len=max_len, trust_remote_code=trust_remote_code, chat_template=chat_template)
           for m in members]
    prompts = [p.prompt for p in calibration]
    responses = [p.chosen for p in calibration] + [p.rejected for p in calibration]
    scale = member_scale(torch.tensor([m.score(prompts + prompts, responses) for m in raw], dtype=torch.float64))
    out = {"scale": [list(ms) for ms in scale], "calibration_pairs": len(calibration)}
    for name, (pairs, rewards) in held_out.items():
        if rewards.shape != (len(members), 2 * len(pairs)):
            raise ValueError(f"ensemble {name!r} rewards: expected [{len(members)}, {2 * len(pairs)}] (members x "
                             f"chosen + rejected), got {list(rewards.shape)}")
        s = aggregate(standardise(rewards, scale), how, lam)
        out[name] = pair_metrics(s[:len(pairs)], s[len(pairs):], [p.family for p in pairs])
    return out
