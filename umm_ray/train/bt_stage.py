"""One Bradley–Terry reward stage and what every reward kind shares: the preference data (`RMData`,
`load_rm_data`), the backbone (`default_backbone`), the Ray Train spec (`bt_spec`), the stage itself (`run_bt_stage`:
initial eval -> fit -> held-out eval -> eval.json + curves) and its result (`TrainedRM`).

`umm_ray.train.reward` (dense, MoE, UMM, dispatch) and `umm_ray.train.ensemble` (seed members) both build on this
module and it imports neither, so the two never need to import each other back.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray

from umm_ray.config import Config
from umm_ray.layout import RunLayout
from umm_ray.data import load_preferences_with_report, split_pairs
from umm_ray.records import PreferencePair
from umm_ray.resources import train_resources
from umm_ray.train.bt_task import MERGE_META, BTTask, check_backbone
from umm_ray.train.evaluate import evaluate_dir, evaluate_initial
from umm_ray.train.group import finished_runs
from umm_ray.train.levers import worker_threads
from umm_ray.train.loop import TrainResult, TrainSpec, fit, save_history
from umm_ray.train.plots import plot_loss_curve

log = logging.getLogger(__name__)

__all__ = ["RMData", "TrainedRM", "load_rm_data", "default_backbone", "bt_spec", "run_bt_stage", "stage_dir_for",
           "prepare_inputs", "finish_bt_stage"]


@dataclass
class RMData:
    """Preference pairs of one RM run, split disjointly; `source` says where they came from.

    `extra` holds further held-out sets (rm.eval_data, e.g. real HH pairs); `notes` what loading skipped.
    """

    train: list[PreferencePair]
    val: list[PreferencePair]
    test: list[PreferencePair]
    source: str
    extra: dict[str, list[PreferencePair]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def held_out(self) -> dict[str, list[PreferencePair]]:
        """The held-out splits by name: val, test and any extra sets (rm.eval_data)."""
        return {"val": self.val, "test": self.test, **self.extra}


@dataclass
class TrainedRM:
    """What a reward training stage produced: `model_path` is an HF dir, a MoE dir, or an ensemble manifest (.json).

    (Not the report's `umm_ray.report.records.RMResult`, which is one row of the comparison report.)
    """

    kind: str
    stage_dir: Path
    model_path: Path
    eval: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------------
# Data and backbones.


def _load(spec, on_error: str, notes: list[str]) -> list[PreferencePair]:
    pairs, report = load_preferences_with_report(spec, on_error=on_error)
    if report.n_skipped or report.n_dropped:
        notes.append(report.summary())
        log.warning("%s", report.summary())
    return pairs


def load_rm_data(cfg: Config, layout: RunLayout | None = None) -> RMData:
    """Testbed pairs (`layout.pairs_{train,val,test}`; default layout: run.output_dir's) when rm.data == 'testbed',
    else load and split rm.data by seed (rm.val_frac / rm.test_frac).

    Testbed pairs are two policy samples per prompt; a whitespace-only sample is a real policy output but no valid
    comparison, so those rows are skipped and counted (in `notes`, hence eval.json). Other data follow
    rm.data_on_error. rm.eval_data, when set, becomes the extra held-out split 'eval_data'.
    """
    notes: list[str] = []
    if cfg.rm.data == "testbed":
        layout = layout or RunLayout(cfg.run.output_dir)
        paths = (layout.pairs_train, layout.pairs_val, layout.pairs_test)
        missing = [str(p) for p in paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(f"rm.data='testbed': preference pairs missing: {missing} (run the pairs stage)")
        train, val, test = (_load(p, "skip", notes) for p in paths)
        source = str(layout.pairs)
    else:
        pairs = _load(cfg.rm.data, cfg.rm.data_on_error, notes)
        v, t = cfg.rm.val_frac, cfg.rm.test_frac
        train, val, test = split_pairs(pairs, (1.0 - v - t, v, t), seed=cfg.rm.data_split_seed(cfg.run.seed))
        if not train or not test:
            raise ValueError(f"rm.data={cfg.rm.data!r}: {len(pairs)} pairs are too few to split train/val/test")
        source = cfg.rm.data
    extra = {"eval_data": _load(cfg.rm.eval_data, cfg.rm.data_on_error, notes)} if cfg.rm.eval_data else {}
    return RMData(train, val, test, source=source, extra=extra, notes=notes)


def default_backbone(cfg: Config, layout: RunLayout | None = None) -> Path:
    """rm.base_path if set, else the SFT model when it exists, else the testbed base model."""
    if cfg.rm.base_path:
        return Path(cfg.rm.base_path)
    layout = layout or RunLayout(cfg.run.output_dir)
    if (layout.sft_model / "config.json").is_file():
        return layout.sft_model
    if not (layout.base / "config.json").is_file():
        raise ValueError(f"rm.base_path is empty and there is neither an SFT model ({layout.sft_model}) nor a "
                         f"prepared world ({layout.base})")
    log.warning("no SFT model at %s; reward models start from the untrained base %s", layout.sft_model, layout.base)
    return layout.base


# ---------------------------------------------------------------------------------------------------------------------
# One stage: initial eval (concurrently) -> fit -> held-out eval -> eval.json + curves.


def bt_spec(cfg: Config, name: str, stage_dir: Path, seed: int | None = None, epochs: int | None = None,
            lr: float | None = None, placement: str = "PACK") -> TrainSpec:
    """The Ray Train spec of one BT run from cfg.rm (seed, epochs, lr and placement overridable per stage)."""
    r = cfg.rm
    return TrainSpec(name=name, stage_dir=stage_dir, num_workers=r.num_workers, batch_size=r.batch_size,
                     epochs=epochs or r.epochs, lr=r.lr if lr is None else lr,
                     seed=cfg.run.seed if seed is None else seed, checkpoint_every=r.checkpoint_every,
                     strategy=r.strategy, zero_stage=r.zero_stage, **train_resources(cfg, placement),
                     precision=r.precision, grad_checkpointing=r.grad_checkpointing,
                     micro_batch_tokens=r.micro_batch_tokens)


def run_bt_stage(task: BTTask, data: RMData, spec: TrainSpec, init_eval: bool = True) -> dict:
    """Train one BT stage and evaluate it; returns (and writes to `<stage_dir>/eval.json`) the report."""
    init_ref = (ray.remote(num_cpus=1)(evaluate_initial).remote(task, spec.seed, {"val": data.val}, task.max_len)
                if init_eval and data.val else None)
    t0 = time.time()
    done = finished_runs([(task, data.train, spec)])  # trained already by a shared worker group
    result = done[0] if done else fit(task, data.train, spec)
    return finish_bt_stage(task, data, spec, result, t0, init_ref)


def finish_bt_stage(task: BTTask, data: RMData, spec: TrainSpec, result: TrainResult, t0: float,
                    init_ref=None) -> dict:
    """A trained BT run's held-out eval, report, metrics and loss curve (`t0`: when its stage began training)."""
    stage_dir = Path(spec.stage_dir)
    # The run's workers are done: the eval takes one worker's CPU claim (placeable wherever a worker was) and as
    # many torch threads (a 135M RM's 1,269 val + test pairs on 1 thread took as long as its training on 2)
    cpus = max(1.0, spec.worker.cpus)
    final = ray.get(ray.remote(num_cpus=cpus)(evaluate_dir).remote(
        str(result.model_dir), data.held_out(), task.max_len, trust_remote_code=task.trust_remote_code,
        chat_template=task.chat_template, threads=worker_threads(cpus)))
    report = _report(task, data, result, final, time.time() - t0)
    report["levers"] = {**spec.levers(), **task.levers()}
    if init_ref is not None:
        report["initial"] = ray.get(init_ref)
    save_history(result.history, stage_dir / "metrics.json")
    held_pts = {0: report["initial"]["val"]["bt_loss"]} if "initial" in report else {}
    if "val" in final:
        held_pts[result.total_steps] = final["val"]["bt_loss"]
    plot_loss_curve(result.history, stage_dir / "loss_curve.png", f"{spec.name}: BT loss", key="bt_loss",
                    held_out=held_pts)
    (stage_dir / "eval.json").write_text(json.dumps(report, indent=1))
    test = final.get("test", {})
    log.info("%s: test accuracy %.3f, test BT loss %.4f", spec.name, test.get("accuracy", float("nan")),
             test.get("bt_loss", float("nan")))
    return report


def _report(task: BTTask, data: RMData, result: TrainResult, final: dict, seconds: float) -> dict:
    report = {
        "stage": task.stage, "name": result.name, "model_dir": str(result.model_dir), "data": data.source,
        "n_pairs": {"train": len(data.train), **{k: len(v) for k, v in data.held_out().items()}},
        "data_notes": data.notes, **{k: final[k] for k in (*data.held_out(), "params") if k in final},
        "steps": result.total_steps, "resumed_from": result.resumed_from,
        "entered_at": result.entered_at, "started_at": result.started_at, "ended_at": result.ended_at,
        "train_seconds": round(result.ended_at - result.started_at, 2), "stage_seconds": round(seconds, 2),
        "loss_curve": [round(h["loss"], 5) for h in result.history], "loss_curve_png": "loss_curve.png",
    }
    if task.stage == "moe":
        report["num_experts"], report["top_k"] = task.num_experts, task.top_k
        report["expert_load"] = final.get("test", final.get("val", {})).get("expert_load")
    if task.stage == "merge":
        report["merge"] = json.loads((result.model_dir / MERGE_META).read_text())
    return report


# ---------------------------------------------------------------------------------------------------------------------
# Inputs every kind resolves the same way.


def stage_dir_for(cfg: Config, stage_dir: Path | None, kind: str) -> Path:
    """`stage_dir`, else where the stage graph trains that kind (`RunLayout.rm`, e.g. rm_umm4)."""
    if stage_dir:
        return Path(stage_dir)
    return RunLayout(cfg.run.output_dir).rm(kind, cfg.moe.num_experts if kind in ("umm", "moe") else None)


def prepare_inputs(cfg: Config, layout: RunLayout | None, data: RMData | None, source: Path | None
                   ) -> tuple[RMData, Path]:
    """The stage's data and backbone (loaded / defaulted when not given); the backbone is checked before compute."""
    data = data or load_rm_data(cfg, layout)
    source = Path(source) if source else default_backbone(cfg, layout)
    check_backbone(source, cfg.rm.max_len, cfg.model.trust_remote_code)
    return data, source
