"""DMoERM training on Ray Train: router (concurrently with phase 1) -> phase 1 -> phase 2 -> phase 3 -> evaluation.

    model_dir, ev = train_dmoe(cfg, data, stage_dir)    # data: RMData (train/val/test pairs with a task each)
    scorer = umm_ray.models.dmoe.load_scorer(model_dir)  # no Ray needed

Layout of `stage_dir` (default <run.output_dir>/rm_dmoe):
    router/model/     the trained TaskRouter (router.safetensors, tasks.txt)
    phase1/model/     DMoERM dir, stage 'phase1';   phase2/model/: stage 'phase2'
    model/            the final DMoERM dir (router + K LoRA experts + MLP per task)
    eval.json         held-out metrics (also of the untrained model), routing accuracy, per-run times and curves
    capabilities.json how many capability pairs each (task, capability) got
Data: each task's training pairs are split phase1_frac / rest (by prompt, seeded); capability labels come from the
testbed gold's rubric terms (`umm_ray.testbed.capabilities`) or a user's cap_<name> columns
(`umm_ray.data.capabilities`), on the task's training pairs only.
"""

from __future__ import annotations

import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import ray
import torch

from umm_ray.config_dmoe import DMoEConfig
from umm_ray.data import split_pairs
from umm_ray.data.capabilities import load_capability_table, user_capability_pairs
from umm_ray.models.dmoe import DMoEScorer, LoRASpec, add_aggregators, add_capabilities, load_dmoe, new_dmoe
from umm_ray.records import PreferencePair
from umm_ray.resources import train_resources
from umm_ray.testbed.capabilities import CAPABILITIES, gold_capability_pairs
from umm_ray.train.bt_stage import prepare_inputs
from umm_ray.train.bt_task import load_dense_rm
from umm_ray.train.dmoe_tasks import PairExample, PhaseTask, RouteExample, RouterTask
from umm_ray.train.evaluate import pair_metrics
from umm_ray.train.loop import TrainResult, TrainSpec, fit, save_history

log = logging.getLogger(__name__)

__all__ = ["DMoEInputs", "dmoe_inputs", "train_dmoe", "evaluate_dmoe", "initial_dmoe"]


@dataclass(frozen=True)
class DMoEInputs:
    """Everything the four runs train on, validated: tasks and capabilities in index order, and the examples."""

    tasks: tuple[str, ...]
    capabilities: tuple[str, ...]
    router: list[RouteExample]
    phase1: list[PairExample]
    phase2: list[PairExample]
    phase3: list[PairExample]
    capability_counts: dict


def _dmoe_cfg(cfg, dmoe: DMoEConfig | None) -> DMoEConfig:
    return dmoe or getattr(cfg, "dmoe", None) or DMoEConfig()


def _capability_pairs(cfg, dm: DMoEConfig, train: list[PreferencePair]):
    """(train pairs with their task in `family`, {task: {capability: pairs}}, capability names)."""
    if cfg.rm.data == "testbed":

        caps = tuple(dm.capabilities) or CAPABILITIES
        return train, gold_capability_pairs(train, cfg.testbed.label_noise, dm.near_tie, cfg.run.seed, caps), caps

    table = load_capability_table(dm.capability_data or cfg.rm.data)
    tasked, by_task = user_capability_pairs(train, table, tuple(dm.capabilities))
    caps = next(iter(by_task.values())).keys() if by_task else ()
    return tasked, by_task, tuple(caps)


def dmoe_inputs(cfg, dm: DMoEConfig, train: list[PreferencePair]) -> DMoEInputs:
    """Split each task's pairs phase1_frac / rest (by prompt), build router and capability examples, and check that
    every task has data for every phase and every capability has pairs.

    Raises:
        ValueError: naming the task (and capability) that lacks data.
    """

    train, by_task, caps = _capability_pairs(cfg, dm, train)
    found = sorted({p.family for p in train})
    if "" in found:
        bad = next(p for p in train if not p.family)
        raise ValueError(f"dmoe: training pair {bad.source or bad.prompt[:60]!r} has no task (family) label")
    tasks = tuple(dm.tasks) or tuple(found)
    extra = sorted(set(found) - set(tasks))
    if extra:
        raise ValueError(f"dmoe: training pairs have tasks {extra} that dmoe.tasks={list(tasks)} does not list")
    router, p1, p2, p3, counts = [], [], [], [], {}
    for ti, task in enumerate(tasks):
        pairs = [p for p in train if p.family == task]
        if len(pairs) < 2:
            raise ValueError(f"dmoe: task {task!r} has {len(pairs)} training pairs; each task needs at least 2 "
                             f"(phase 1 and phase 3 each need some)")
        first, rest = split_pairs(pairs, (dm.phase1_frac, 1.0 - dm.phase1_frac), seed=cfg.run.seed)
        if not first or not rest:
            first, rest = split_pairs(pairs, (dm.phase1_frac, 1.0 - dm.phase1_frac), seed=cfg.run.seed, key=None)
        p1 += [PairExample(p.prompt, p.chosen, p.rejected, ti) for p in first]
        p3 += [PairExample(p.prompt, p.chosen, p.rejected, ti) for p in rest]
        router += [RouteExample(prompt, ti) for prompt in dict.fromkeys(p.prompt for p in pairs)]
        counts[task] = {}
        for ci, cap in enumerate(caps):
            cpairs = by_task.get(task, {}).get(cap, [])
            if not cpairs:
                raise ValueError(f"dmoe: task {task!r} has no preference pairs for capability {cap!r} (after dropping "
                                 f"near-ties <= {dm.near_tie}); lower dmoe.near_tie, add labelled data, or leave the "
                                 f"capability out of dmoe.capabilities")
            p2 += [PairExample(p.prompt, p.chosen, p.rejected, ti, ci) for p in cpairs]
            counts[task][cap] = len(cpairs)
    return DMoEInputs(tasks, tuple(caps), router, p1, p2, p3, counts)


def _spec(cfg, name: str, stage_dir: Path, epochs: int, lr: float) -> TrainSpec:
    r = cfg.rm
    return TrainSpec(name=name, stage_dir=stage_dir, num_workers=r.num_workers, batch_size=r.batch_size,
                     epochs=epochs, lr=lr, seed=cfg.run.seed, checkpoint_every=r.checkpoint_every,
                     **train_resources(cfg))  # DDP: LoRA + unused groups; ZeRO gains nothing here


def _lora(dm: DMoEConfig):

    return LoRASpec(dm.lora_r, float(dm.lora_alpha), dm.lora_dropout, tuple(dm.target_modules))


def initial_dmoe(source: str, tasks, capabilities, lora, seed: int):
    """The untrained DMoERM `train_dmoe` starts from (router, experts and MLP as initialised, under `seed`)."""

    torch.manual_seed(seed)
    model = new_dmoe(load_dense_rm(source), list(tasks), list(capabilities), lora, seed=seed)
    return add_aggregators(add_capabilities(model), seed=seed).eval()


def _correct(rc: torch.Tensor, rr: torch.Tensor) -> list[float]:
    return ((rc > rr).double() + 0.5 * (rc == rr).double()).tolist()


def evaluate_dmoe(model_or_dir, splits: dict[str, list[PreferencePair]], max_len: int, tok_source: str | None = None,
                  batch_size: int = 64, chat_template: str = "auto") -> dict:
    """Held-out metrics of a final DMoERM (a directory, or (model, tokenizer)): per split pair_metrics, routing
    accuracy against the pairs' task labels, and per-pair correctness `correct` [n] (1, 0, or 0.5 for a tie)."""

    torch.set_num_threads(1)
    if isinstance(model_or_dir, (str, Path)):
        model, tok = load_dmoe(model_or_dir)
    else:
        model, tok = model_or_dir
    scorer = DMoEScorer(model, tok, max_len=max_len, batch_size=batch_size, chat_template=chat_template)
    out = {}
    for name, pairs in splits.items():
        if not pairs:
            continue
        prompts = [p.prompt for p in pairs]
        s = torch.tensor(scorer.score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs]),
                         dtype=torch.float64)
        rc, rr = s[:len(pairs)], s[len(pairs):]
        out[name] = pair_metrics(rc, rr, [p.family for p in pairs])
        routed = scorer.route(prompts)
        out[name]["routing_accuracy"] = sum(r == p.family for r, p in zip(routed, pairs)) / len(pairs)
        out[name]["correct"] = _correct(rc, rr)
    out["params"] = sum(p.numel() for p in model.parameters())
    return out


def _evaluate_initial(source, tasks, capabilities, lora, seed, splits, max_len, chat_template: str = "auto") -> dict:
    from transformers import AutoTokenizer  # heavy: ~2 s; only when a model is loaded

    tok = AutoTokenizer.from_pretrained(source)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return evaluate_dmoe((initial_dmoe(source, tasks, capabilities, lora, seed), tok), splits, max_len,
                         chat_template=chat_template)


def paired_gain(trained: list[float], initial: list[float]) -> dict:
    """Accuracy gain of trained over initial on the same pairs, with its paired standard error."""
    d = torch.tensor(trained, dtype=torch.float64) - torch.tensor(initial, dtype=torch.float64)
    n = d.numel()
    se = float(d.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return {"gain": float(d.mean()), "se": se, "n": n}


def _run_summary(res: TrainResult) -> dict:
    return {"steps": res.total_steps, "train_seconds": round(res.ended_at - res.started_at, 2),
            "loss_curve": [round(h["loss"], 5) for h in res.history], "final_acc": res.history[-1].get("acc")}


def train_dmoe(cfg, data=None, stage_dir: Path | None = None, *, layout=None, source: Path | None = None,
               dmoe: DMoEConfig | None = None) -> tuple[Path, dict]:
    """Train a DMoERM with Ray Train (Ray must be initialised) and evaluate it on the held-out splits.

    Args:
        cfg: the run's Config (rm.* for batch size / workers / max_len / data, run.seed, testbed.label_noise for the
            capability labels' noise; `cfg.dmoe` when Config has that section).
        data: RMData (train / val / test, extra); None loads it like the other kinds (`load_rm_data`).
        stage_dir: where to write (default <run.output_dir>/rm_dmoe).
        layout, source: as for the other kinds (backbone default: rm.base_path, else the SFT model, else the base).
        dmoe: overrides cfg.dmoe (or the defaults).

    Returns:
        (final DMoERM directory, the eval dict also written to eval.json).
    """


    dm = _dmoe_cfg(cfg, dmoe)
    data, source = prepare_inputs(cfg, layout, data, source)
    out = Path(stage_dir) if stage_dir else Path(cfg.run.output_dir) / "rm_dmoe"
    inputs = dmoe_inputs(cfg, dm, data.train)  # every data error surfaces here, before any worker starts
    out.mkdir(parents=True, exist_ok=True)
    (out / "capabilities.json").write_text(json.dumps(inputs.capability_counts, indent=1))
    lora, seed, max_len = _lora(dm), cfg.run.seed, cfg.rm.max_len
    chat = getattr(getattr(cfg, "model", None), "chat_template", "auto")  # model.chat_template, as every RM kind
    held = data.held_out()
    remote = ray.remote(num_cpus=1)
    init_ref = remote(_evaluate_initial).remote(str(source), inputs.tasks, inputs.capabilities, lora, seed, held,
                                                max_len, chat)
    t0 = time.time()
    router_task = RouterTask(source, inputs.tasks, max_len, seed=seed, chat_template=chat)
    p1_task = PhaseTask(1, source, max_len, source, inputs.tasks, inputs.capabilities, lora, seed=seed,
                        chat_template=chat)
    with ThreadPoolExecutor(max_workers=2) as pool:  # the router and phase 1 share nothing: two concurrent runs
        router_f = pool.submit(fit, router_task, inputs.router,
                               _spec(cfg, "dmoe_router", out / "router", dm.router_epochs, dm.router_lr))
        p1 = fit(p1_task, inputs.phase1, _spec(cfg, "dmoe_phase1", out / "phase1", dm.phase1_epochs, dm.phase1_lr))
        router = router_f.result()
    p2 = fit(PhaseTask(2, p1.model_dir, max_len, source, seed=seed, chat_template=chat), inputs.phase2,
             _spec(cfg, "dmoe_phase2", out / "phase2", dm.phase2_epochs, dm.phase2_lr))
    p3 = fit(PhaseTask(3, p2.model_dir, max_len, source, router_dir=router.model_dir, seed=seed, chat_template=chat),
             inputs.phase3,
             _spec(cfg, "dmoe_phase3", out, dm.phase3_epochs, dm.phase3_lr))
    seconds = time.time() - t0
    final = ray.get(remote(evaluate_dmoe).remote(str(p3.model_dir), held, max_len, chat_template=chat))
    initial = ray.get(init_ref)
    report = {
        "stage": "dmoe", "model_dir": str(p3.model_dir), "source": str(source), "data": data.source,
        "data_notes": data.notes, "tasks": list(inputs.tasks), "capabilities": list(inputs.capabilities),
        "n_pairs": {"train": len(data.train), "router_prompts": len(inputs.router), "phase1": len(inputs.phase1),
                    "phase2": len(inputs.phase2), "phase3": len(inputs.phase3),
                    **{k: len(v) for k, v in held.items()}},
        "capability_pairs": inputs.capability_counts, "params": final.pop("params"),
        "runs": {name: _run_summary(r) for name, r in
                 (("router", router), ("phase1", p1), ("phase2", p2), ("phase3", p3))},
        "train_seconds": round(seconds, 2), "initial": {}, "vs_initial": {},
        "lora": {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "targets": list(lora.targets)},
    }
    initial.pop("params", None)
    pooled: tuple[list, list] = ([], [])
    for split, metrics in final.items():
        init = initial[split]
        pooled[0].extend(metrics["correct"]), pooled[1].extend(init["correct"])
        report["vs_initial"][split] = paired_gain(metrics.pop("correct"), init.pop("correct"))
        report[split], report["initial"][split] = metrics, init
    if pooled[0]:  # every held-out pair at once: the tightest standard error
        report["vs_initial"]["held_out"] = paired_gain(*pooled)
    for name, r in (("router", router), ("phase1", p1), ("phase2", p2), ("phase3", p3)):
        save_history(r.history, out / f"metrics_{name}.json")
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    test = report.get("test", {})
    log.info("dmoe: test accuracy %.3f (untrained %.3f), routing %.3f, %.0f s", test.get("accuracy", float("nan")),
             report["initial"].get("test", {}).get("accuracy", float("nan")), test.get("routing_accuracy", 0.0),
             seconds)
    return p3.model_dir, report
