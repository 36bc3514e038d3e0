"""Reward-model training stages on Ray Train: dense, MoE, UMM (upcycle -> MoE -> learnable merge), seed ensembles,
and the DMoERM baseline (`umm_ray.train.dmoe`).

    res = train_umm(cfg, layout, stage_dir=layout.rm("umm", 4))   # rm_umm4/{moe/model, model, eval.json, ...}
    res.model_path                       # a standard HF checkpoint of the dense architecture

Every stage trains with the Bradley–Terry loss (`umm_ray.algo.bt`) through the shared runner (`umm_ray.train.loop`)
and writes `eval.json` (held-out BT loss and preference accuracy on val/test, before and after training, the loss
curve as a list and a PNG, and for MoE the expert load per layer) beside the model.
Data: the testbed's gold-labelled pairs, or any spec `load_preferences` accepts (then split train/val/test by seed).
What every kind shares (data, spec, the stage runner, `TrainedRM`) is in `umm_ray.train.bt_stage`; the ensemble kind
is `umm_ray.train.ensemble`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ray
import torch
from torch import nn

from umm_ray.config import Config
from umm_ray.layout import RunLayout
from umm_ray.models.merge import validate_alpha
from umm_ray.models.upcycle import check_upcycle_layers
from umm_ray.plan import check_fits
from umm_ray.train.bt_stage import (RMData, TrainedRM, bt_spec, default_backbone, finish_bt_stage, load_rm_data,
                                    prepare_inputs, run_bt_stage, stage_dir_for)
from umm_ray.train.bt_task import BTTask, backbone_depth, load_dense_rm
from umm_ray.train.dmoe import train_dmoe
from umm_ray.train.evaluate import evaluate_initial
from umm_ray.train.ensemble import ensemble_runs, train_ensemble
from umm_ray.train.group import fit_group
from umm_ray.train.loop import TrainSpec

__all__ = ["RM_KINDS", "RMData", "TrainedRM", "BTTask", "load_rm_data", "default_backbone", "load_dense_rm",
           "run_bt_stage", "rm_runs", "train_dense", "train_moe", "train_umm", "train_ensemble", "train_dmoe_rm",
           "train_rm"]


# ---------------------------------------------------------------------------------------------------------------------
# The kinds.


def _moe_task(cfg: Config, source: Path) -> BTTask:
    """The MoE BT task; moe.upcycle_layers is checked against the backbone's depth here, before any worker starts."""
    m = cfg.moe
    check_upcycle_layers(m.upcycle_layers, backbone_depth(source, cfg.model.trust_remote_code))
    return BTTask("moe", source, cfg.rm.max_len, num_experts=m.num_experts, top_k=m.top_k, noisy=m.noisy_gating,
                  router_seed=cfg.run.seed, aux_coef=m.aux_loss_coef, trust_remote_code=cfg.model.trust_remote_code,
                  chat_template=cfg.model.chat_template, upcycle_layers=m.upcycle_layers,
                  share_prompt=cfg.rm.share_prompt)


def rm_runs(cfg: Config, kind: str, out: Path, data: RMData, source: Path) -> list[tuple[BTTask, list, TrainSpec]]:
    """The Ray Train runs (task, training pairs, spec) that train a `kind` stage into `out`, in order, checked to fit
    in memory before any worker starts: dense and moe one run; umm the MoE (`<out>/moe`) then its merge (`<out>`);
    ensemble one run per member. What `train_rm` trains, and what the compare job's shared RM worker group
    (`umm_ray.stages.train_rm_group`) trains for several stages at once."""
    if kind == "dense":
        check_fits(cfg, "rm_dense", source=source, pairs=data.train)  # stop now rather than by Ray's OOM killer
        task = BTTask("dense", source, cfg.rm.max_len, trust_remote_code=cfg.model.trust_remote_code,
                      chat_template=cfg.model.chat_template, share_prompt=cfg.rm.share_prompt)
        return [(task, data.train, bt_spec(cfg, "rm_dense", out))]
    if kind == "moe":
        check_fits(cfg, "rm_moe", source=source, pairs=data.train)
        return [(_moe_task(cfg, source), data.train, bt_spec(cfg, "rm_moe", out))]
    if kind == "umm":
        validate_alpha(cfg.merge.alpha)
        check_fits(cfg, "rm_umm", source=source, pairs=data.train)  # MoE and merge runs
        merge_task = BTTask("merge", out / "moe" / "model", cfg.rm.max_len, alpha=cfg.merge.alpha,
                            chat_template=cfg.model.chat_template, share_prompt=cfg.rm.share_prompt)
        return [(_moe_task(cfg, source), data.train, bt_spec(cfg, "rm_umm_moe", out / "moe")),
                (merge_task, data.train, bt_spec(cfg, "rm_umm_merge", out, epochs=cfg.merge.epochs, lr=cfg.merge.lr))]
    if kind == "ensemble":
        return ensemble_runs(cfg, out, data, source)
    raise ValueError(f"rm_runs: kind {kind!r} is not one of dense, moe, umm, ensemble (dmoe trains its own phases)")


def train_dense(cfg: Config, layout: RunLayout | None = None, stage_dir: Path | None = None,
                data: RMData | None = None, source: Path | None = None) -> TrainedRM:
    """Dense BT reward model from `source` (default: SFT model); writes `<stage_dir>/model` (HF classifier)."""
    data, source = prepare_inputs(cfg, layout, data, source)
    out = stage_dir_for(cfg, stage_dir, "dense")
    [(task, _, spec)] = rm_runs(cfg, "dense", out, data, source)
    return TrainedRM("dense", out, out / "model", run_bt_stage(task, data, spec))


def train_moe(cfg: Config, layout: RunLayout | None = None, stage_dir: Path | None = None,
              data: RMData | None = None, source: Path | None = None) -> TrainedRM:
    """Upcycle `source` (an RM or the SFT/base model) to a shared-expert MoE and train it with BT + aux loss."""
    data, source = prepare_inputs(cfg, layout, data, source)
    out = stage_dir_for(cfg, stage_dir, "moe")
    [(task, _, spec)] = rm_runs(cfg, "moe", out, data, source)
    return TrainedRM("moe", out, out / "model", run_bt_stage(task, data, spec))


def train_umm(cfg: Config, layout: RunLayout | None = None, stage_dir: Path | None = None,
              data: RMData | None = None, source: Path | None = None) -> TrainedRM:
    """UMM-RM: upcycle -> MoE BT training (`<stage_dir>/moe/`) -> learn theta on the same loss and data ->
    export a standard HF checkpoint of the dense architecture and parameter count (`<stage_dir>/model`)."""
    data, source = prepare_inputs(cfg, layout, data, source)
    out = stage_dir_for(cfg, stage_dir, "umm")
    runs = rm_runs(cfg, "umm", out, data, source)
    (moe_task, _, moe_spec), (merge_task, _, spec) = runs
    init_ref = ray.remote(num_cpus=1)(evaluate_initial).remote(moe_task, moe_spec.seed, {"val": data.val},
                                                                moe_task.max_len) if data.val else None
    # The merge starts from the MoE the first run writes: one worker group trains both, one start-up.
    t0 = time.time()
    moe_result, merge_result = fit_group(runs, out, name="umm")
    moe_report = finish_bt_stage(moe_task, data, moe_spec, moe_result, t0, init_ref)
    # The merge's stage time from its turn in the group (or from now, when a shared group trained it before)
    report = finish_bt_stage(merge_task, data, spec, merge_result, max(t0, merge_result.entered_at))
    report["moe"] = {k: moe_report.get(k) for k in (*data.held_out(), "params", "expert_load", "steps",
                                                     "train_seconds", "levers")}
    report["dense_params"] = _dense_params(source, cfg.model.trust_remote_code)
    report["source"] = str(source)
    (out / "eval.json").write_text(json.dumps(report, indent=1))
    return TrainedRM("umm", out, out / "model", report)


def _dense_params(source: Path, trust_remote_code: bool = False) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in load_dense_rm_meta(source, trust_remote_code).parameters())


def load_dense_rm_meta(source: Path, trust_remote_code: bool = False) -> nn.Module:
    """The dense RM architecture of `source` with no weights (for parameter counts)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification  # heavy: ~2 s, only for a param count

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    config.num_labels = 1
    return AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)


def train_dmoe_rm(cfg: Config, layout: RunLayout | None = None, stage_dir: Path | None = None,
                  data: RMData | None = None, source: Path | None = None) -> TrainedRM:
    """DMoERM (router + per-task LoRA capability experts + aggregation MLP, settings in cfg.dmoe) from `source`;
    writes the final DMoERM dir to `<stage_dir>/model` (default <run.output_dir>/rm_dmoe) and its eval.json."""
    out = stage_dir_for(cfg, stage_dir, "dmoe")
    model_dir, report = train_dmoe(cfg, data, out, layout=layout, source=source)
    return TrainedRM("dmoe", out, Path(model_dir), report)


TRAINERS = {"dense": train_dense, "moe": train_moe, "umm": train_umm, "ensemble": train_ensemble,
            "dmoe": train_dmoe_rm}
# The reward-model kinds training can produce (cfg.rm.kind); the report's row kinds are `report.records.ROW_KINDS`.
RM_KINDS = tuple(TRAINERS)


def train_rm(cfg: Config, layout: RunLayout | None = None, kind: str | None = None, stage_dir: Path | None = None
             ) -> TrainedRM:
    """Dispatch on `kind` (default cfg.rm.kind): dense | moe | umm | ensemble | dmoe."""
    kind = kind or cfg.rm.kind
    if kind not in TRAINERS:
        raise ValueError(f"rm.kind: {kind!r} is not one of {list(TRAINERS)}")
    return TRAINERS[kind](cfg, layout, stage_dir=stage_dir)
