"""Shared Ray Train machinery: one `TorchTrainer` runner for every training stage (SFT, BT reward models, merge).

A stage is a `TrainTask` (build the model, batch examples, compute the loss, save the result) plus a `TrainSpec`
(workers, batch size, epochs, checkpoint cadence). `fit(task, examples, spec)` runs it on CPU workers with DDP over
gloo (GPU workers: NCCL), or DeepSpeed ZeRO, optionally in bf16 autocast, with gradient checkpointing and token-budget
micro-batches (`umm_ray.train.levers`, `umm_ray.data.microbatch`), shards the data per rank by seed, checkpoints every
K steps through `ray.train.report` and resumes from the latest checkpoint of a run of the same name in the same stage
directory (model, optimizer, step, per-rank RNG, metrics so far): a killed job restarts where it stopped.

    result = fit(SFTTask(...), examples, TrainSpec(name="sft", stage_dir=Path("runs/x/sft"), num_workers=2))
    result.model_dir  # <stage_dir>/model, a Hugging Face checkpoint written by rank 0
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from tqdm.auto import tqdm

from umm_ray.layout import RAY_TRAIN_DIR
from umm_ray.resources import RoleResources
from umm_ray.train.collective import collective_device
from umm_ray.train.levers import (PRECISIONS, accumulate_step, adamw, autocast, budget_pieces, deepspeed_autocast,
                                  enable_grad_checkpointing, import_deepspeed, worker_threads)

log = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
HF_DIR = "hf"


@dataclass
class TrainSpec:
    """How to run one stage. `stage_dir` receives `model/` (final HF checkpoint) and `ray_train/` (run storage)."""

    name: str
    stage_dir: Path
    num_workers: int = 2
    batch_size: int = 32
    epochs: int = 1
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 100
    strategy: str = "ddp"  # "ddp" | "deepspeed"
    zero_stage: int = 1  # DeepSpeed ZeRO stage (0-2; stage 3 would need a gather before the HF save)
    max_steps: int = 0  # 0 = epochs * steps_per_epoch; > 0 caps (or extends) the run at exactly this many steps
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    placement_strategy: str = "PACK"  # STRICT_PACK on GPUs (umm_ray.resources.train_placement)
    use_gpu: bool = False  # GPU workers use NCCL; CPU workers use gloo
    worker: RoleResources = RoleResources("train", 1.0, 0.0)  # each worker's claim (role_resources(cfg, "train"))
    max_failures: int = 0  # worker-group restarts Ray Train may do (each resumes from the latest checkpoint)
    keep_checkpoints: int = 2
    precision: str = "fp32"  # "fp32" | "bf16" (autocast; weights, grads and optimizer state stay fp32)
    grad_checkpointing: bool = False  # recompute each decoder layer in backward (umm_ray.train.levers)
    micro_batch_tokens: int = 0  # > 0: each batch in length-sorted pieces of <= this many padded tokens (accumulated)
    section: str = "rm"  # the config section the levers come from, named in their errors ('sft', 'rm')

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the run that wrote the checkpoint.

        bf16 changes the numerics, so it is part of it (only when on: fp32 runs keep their old fingerprints);
        gradient checkpointing and token-budget micro-batches do not (the same update, up to float rounding): a run
        may resume with them on to fit in memory."""
        fp = {"num_workers": self.num_workers, "batch_size": self.batch_size, "lr": self.lr, "seed": self.seed,
              "strategy": self.strategy}
        return fp if self.precision == "fp32" else {**fp, "precision": self.precision}

    def levers(self) -> dict:
        """The memory / speed settings a stage reports in its metadata."""
        return {"precision": self.precision, "grad_checkpointing": self.grad_checkpointing,
                "micro_batch_tokens": self.micro_batch_tokens, "strategy": self.strategy,
                "zero_stage": self.zero_stage if self.strategy == "deepspeed" else None}


@dataclass
class TrainResult:
    """What `fit` returns to the caller.

    `history` holds one dict per optimizer step (all steps of the run, restored ones included): step, epoch, loss
    (mean over ranks), the task's extra metrics, wall time. `resumed_from` is the step the last launch started at.
    `started_at`/`ended_at` are rank 0's wall-clock times around the training steps of the last launch, and
    `entered_at` when its worker entered the training function (the worker group was up).
    """

    name: str
    model_dir: Path
    history: list[dict]
    total_steps: int
    resumed_from: int
    started_at: float
    ended_at: float
    entered_at: float = 0.0
    checkpoint_path: str = ""

    def losses(self) -> list[float]:
        return [h["loss"] for h in self.history]


class TrainTask:
    """What a stage trains. Instances are plain picklable objects shipped to every worker.

    Subclasses implement `build`, `collate`, `loss` and `save`; `find_unused_parameters` must be True for models
    whose parameters are not all used in every step (MoE experts a batch never routes to).
    """

    find_unused_parameters: bool = False
    count_metrics: tuple[str, ...] = ()  # extra metrics that are counts: summed over micro-batches, not averaged

    def build(self) -> torch.nn.Module:
        """Create the model on the worker (CPU); called with the torch seed set to `spec.seed`."""
        raise NotImplementedError

    def collate(self, examples: list) -> dict[str, torch.Tensor]:
        """Turn a list of examples into the batch tensors `loss` consumes."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, raw: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        """Scalar loss through `model` (the DDP/DeepSpeed wrapper) and extra float metrics; `raw` is unwrapped."""
        raise NotImplementedError

    def micro_batches(self, batch: dict, budget: int, count: int | None = None) -> list[tuple[dict, float]]:
        """`batch` in pieces of at most `budget` padded tokens (`umm_ray.data.microbatch`; exactly `count` pieces when
        given), each with the weight that makes sum(weight x piece loss) the batch's loss; a task without it cannot
        run with micro_batch_tokens."""
        raise NotImplementedError(f"{type(self).__name__} does not support token-budget micro-batches")

    def save(self, raw: torch.nn.Module, out_dir: Path) -> None:
        """Write the final model (Hugging Face format) to `out_dir`; called on rank 0 only."""
        raise NotImplementedError

    def trainable(self, raw: torch.nn.Module) -> list[torch.nn.Parameter]:
        return [p for p in raw.parameters() if p.requires_grad]

    def fingerprint(self) -> dict:
        return {"task": type(self).__name__}


def steps_per_epoch(n_examples: int, num_workers: int, batch_size: int) -> int:
    """Optimizer steps per epoch: each rank sees ceil(n / world) examples (the tail wraps around, none dropped)."""
    return math.ceil(math.ceil(n_examples / num_workers) / batch_size)


def rank_batches(n_examples: int, epoch: int, rank: int, world: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices of each batch rank `rank` trains on in `epoch`.

    One permutation per (seed, epoch), shared by all ranks, padded by wrapping to a multiple of `world` (as torch's
    DistributedSampler does) so every rank takes the same number of steps; rank r takes every world-th index.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(n_examples, generator=g).tolist()
    per_rank = math.ceil(n_examples / world)
    perm = (perm * math.ceil(per_rank * world / n_examples))[:per_rank * world]
    mine = perm[rank::world]
    return [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]


def total_steps(spec: TrainSpec, n_examples: int) -> int:
    return spec.max_steps or spec.epochs * steps_per_epoch(n_examples, spec.num_workers, spec.batch_size)


# ---------------------------------------------------------------------------------------------------------------------
# Engines: the same three verbs (forward through .model, step(loss), save/load state) for DDP and DeepSpeed.


class _DDPEngine:
    def __init__(self, raw: torch.nn.Module, task: TrainTask, spec: TrainSpec, ckpt_dir: Path | None):
        import ray.train.torch  # heavy: ~2 s; Ray Train is only needed where training runs

        self.raw, self.spec = raw, spec
        if ckpt_dir is not None:  # load before wrapping so every rank starts from identical weights
            load_model(raw, str(ckpt_dir / "model.safetensors"))
        # Buffers are constants (rotary tables) or per-rank statistics (MoE load counts): nothing to broadcast.
        self.model = ray.train.torch.prepare_model(raw, parallel_strategy_kwargs={
            "find_unused_parameters": task.find_unused_parameters, "broadcast_buffers": False})
        self.params = task.trainable(raw)
        self.opt = adamw(self.params, spec.lr, spec.weight_decay)
        if ckpt_dir is not None:
            self.opt.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.update()

    def accumulating(self, last: bool):
        """The context of one piece's forward + backward: gradients are all-reduced only after the last piece."""
        return contextlib.nullcontext() if last or not hasattr(self.model, "no_sync") else self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def update(self) -> None:
        if self.spec.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.spec.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # as DeepSpeed's step() does: the next batch accumulates from zero

    def save(self, out: Path, rank: int) -> None:
        if rank == 0:  # DDP keeps replicas identical: one copy is the whole state
            save_model(self.raw, str(out / "model.safetensors"))
            torch.save(self.opt.state_dict(), out / "optimizer.pt")


class _DeepSpeedEngine:
    """DeepSpeed ZeRO inside Ray Train: reuses the gloo process group Ray Train created (dist_init_required=False)."""

    def __init__(self, raw: torch.nn.Module, task: TrainTask, spec: TrainSpec, ckpt_dir: Path | None):
        deepspeed = import_deepspeed()  # heavy (accelerator probes, op registries); only this strategy

        if spec.zero_stage not in (0, 1, 2):
            raise ValueError(f"TrainSpec.zero_stage={spec.zero_stage}: only ZeRO 0-2 are supported (stage 3 "
                             "partitions parameters, and the final Hugging Face save would need a gather)")
        self.raw, self.spec = raw, spec
        params = task.trainable(raw)
        opt = adamw(params, spec.lr, spec.weight_decay)
        ds_config = {
            "train_micro_batch_size_per_gpu": spec.batch_size, "gradient_accumulation_steps": 1,
            "gradient_clipping": spec.grad_clip, "zero_optimization": {"stage": spec.zero_stage},
            "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9, "wall_clock_breakdown": False,
        }
        ds_config.update(deepspeed_autocast(spec.precision))  # bf16: autocast, fp32 masters and gradient reduction
        self.model, self.opt, _, _ = deepspeed.initialize(
            model=raw, optimizer=opt, model_parameters=params, config=ds_config, dist_init_required=False)
        if ckpt_dir is not None:
            path, _ = self.model.load_checkpoint(str(ckpt_dir / "deepspeed"), tag="latest_state")
            if path is None:
                raise RuntimeError(f"DeepSpeed found no loadable checkpoint in {ckpt_dir / 'deepspeed'}")

    def step(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)
        self.model.step()

    def accumulating(self, last: bool):
        # One optimizer step spans several backward passes: reduce (and let step() update) only at the last one.
        self.model.set_gradient_accumulation_boundary(last)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        self.model.backward(loss)

    def update(self) -> None:
        self.model.step()

    def save(self, out: Path, rank: int) -> None:
        # Every rank writes its own optimizer shard; Ray Train merges the workers' folders into one checkpoint.
        self.model.save_checkpoint(str(out / "deepspeed"), tag="latest_state")


def _make_engine(raw, task, spec, ckpt_dir):
    if spec.strategy == "ddp":
        return _DDPEngine(raw, task, spec, ckpt_dir)
    if spec.strategy == "deepspeed":
        return _DeepSpeedEngine(raw, task, spec, ckpt_dir)
    raise ValueError(f"TrainSpec.strategy={spec.strategy!r}: expected 'ddp' or 'deepspeed'")


# ---------------------------------------------------------------------------------------------------------------------
# The per-worker loop.


def _mean_over_ranks(values: list[float]) -> list[float]:
    """Mean of each value over all ranks (the values themselves when there is no process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [float(v) for v in values]
    # On the group's device: an NCCL group (GPU workers) rejects the CPU tensor the default device would give.
    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    torch.distributed.all_reduce(t)
    t /= torch.distributed.get_world_size()
    return t.tolist()


def _restore_state(ckpt_dir: Path | None, rank: int, fingerprint: dict) -> tuple[int, list[dict]]:
    """Step and metric history of the checkpoint (0, [] when starting fresh); restores this rank's torch RNG."""
    if ckpt_dir is None:
        return 0, []
    state = json.loads((ckpt_dir / STATE_FILE).read_text())
    if state["fingerprint"] != fingerprint:
        raise RuntimeError(_mismatch(ckpt_dir, state["fingerprint"], fingerprint))
    rng_file = ckpt_dir / f"rng_rank{rank}.pt"
    if rng_file.is_file():  # absent when the world size changed: then ranks keep their fresh seeds
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["cpu"])
        if rng.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return int(state["step"]), list(state["history"])


def _report(engine, task, raw, rank, step, history, fingerprint, final: bool, prefix: str = "") -> None:
    """Write a resumable checkpoint (plus the final HF model when `final`) and hand it to Ray Train. `prefix` names
    the run inside a shared worker group (`umm_ray.train.group`), whose checkpoints share one Ray Train run."""
    import ray.train  # heavy: ~1 s; runs on the training workers only

    with tempfile.TemporaryDirectory(prefix="umm_ckpt_") as tmp:
        out = Path(tmp)
        engine.save(out, rank)
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
        torch.save(rng, out / f"rng_rank{rank}.pt")
        if rank == 0:
            (out / STATE_FILE).write_text(json.dumps({"step": step, "history": history, "fingerprint": fingerprint}))
            if final:
                task.save(raw, out / HF_DIR)
        metrics = {"step": step, "loss": history[-1]["loss"] if history else float("nan")}
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                         checkpoint_dir_name=f"{prefix}checkpoint_{step:07d}")


def _worker_loop(config: dict) -> dict | None:
    import ray.train  # heavy: ~2 s with ray.train.torch; runs on the training workers only

    entered_at = time.time()
    ckpt = ray.train.get_checkpoint()
    with (ckpt.as_directory() if ckpt else contextlib.nullcontext()) as ckpt_dir:
        return train_run(config["task"], config["spec"], config["examples"], config["fingerprint"],
                         Path(ckpt_dir) if ckpt_dir else None, entered_at)


def train_run(task: TrainTask, spec: TrainSpec, examples: list, fingerprint: dict, ckpt_dir: Path | None,
              entered_at: float, prefix: str = "", on_final=None) -> dict | None:
    """One run's training on this worker, from `ckpt_dir` (None: from scratch) to its last step; rank 0 returns
    {history, total_steps, resumed_from, entered_at, started_at, ended_at}, other ranks None. `on_final(raw, rank)`
    runs after the last step on every rank (a shared worker group exports each run's model there)."""
    import ray.train  # heavy: ~2 s with ray.train.torch; runs on the training workers only
    import ray.train.torch

    torch.set_num_threads(worker_threads(spec.worker.cpus))  # its CPU claim, not the node's cores
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(spec.seed)  # identical initial weights on every rank
    raw = task.build()
    if spec.grad_checkpointing:  # before the engine wraps the model; after build, so upcycled layers too
        enable_grad_checkpointing(raw, key=f"{spec.section}.grad_checkpointing")
    engine = _make_engine(raw, task, spec, ckpt_dir)
    torch.manual_seed(spec.seed * 1000 + rank + 1)  # per-rank stream for dropout / noisy gating
    step, history = _restore_state(ckpt_dir, rank, fingerprint)
    device = ray.train.torch.get_device() if spec.use_gpu else torch.device("cpu")
    n_total, per_epoch = total_steps(spec, len(examples)), steps_per_epoch(len(examples), world, spec.batch_size)
    resumed_from, started_at = step, time.time()
    bar = tqdm(total=n_total, initial=step, desc=spec.name, disable=rank != 0, mininterval=2.0)
    batches, batches_epoch = None, -1
    while step < n_total:
        epoch, i = divmod(step, per_epoch)
        if epoch != batches_epoch:
            batches, batches_epoch = rank_batches(len(examples), epoch, rank, world, spec.batch_size, spec.seed), epoch
        raw.train()
        batch = {k: v.to(device) for k, v in task.collate([examples[j] for j in batches[i]]).items()}
        pieces = budget_pieces(task, batch, spec.micro_batch_tokens) if spec.micro_batch_tokens > 0 else []
        if len(pieces) > 1:
            loss, extra = accumulate_step(engine, task, raw, pieces, spec.precision, device)
        else:  # the whole batch at once (micro_batch_tokens 0, or the batch fits the budget)
            with autocast(spec.precision, device):  # backward follows the forward's dtypes; no loss scaling for bf16
                loss, extra = task.loss(engine.model, raw, batch)
            engine.step(loss)
            loss = loss.item()
        step += 1
        keys = ["loss", *extra]
        means = _mean_over_ranks([loss, *[float(v) for v in extra.values()]])
        history.append({"step": step, "epoch": epoch, **dict(zip(keys, means)), "time": time.time()})
        bar.update(1)
        bar.set_postfix(loss=f"{means[0]:.4f}")
        if step % spec.checkpoint_every == 0 or step == n_total:
            _report(engine, task, raw, rank, step, history, fingerprint, final=step == n_total, prefix=prefix)
    bar.close()
    ended_at = time.time()  # a finished run relaunched trains nothing: its last checkpoint already holds the model
    if on_final is not None:
        on_final(raw, rank)
    if rank != 0:
        return None
    return {"history": history, "total_steps": n_total, "resumed_from": resumed_from,
            "entered_at": entered_at, "started_at": started_at, "ended_at": ended_at}


# ---------------------------------------------------------------------------------------------------------------------
# Driver side.


def fit(task: TrainTask, examples: list, spec: TrainSpec) -> TrainResult:
    """Train `task` on `examples` with Ray Train; returns the metric history and the final model's directory.

    Must be called with Ray initialised (a job joins its cluster first). Resumes from the latest checkpoint under
    `<stage_dir>/ray_train/<name>` when one exists; a finished run relaunched trains zero steps and re-exports."""
    _check(task, examples, spec)
    # Absolute but not symlink-resolved: on a cluster Ray Train's storage_path must be the shared mount every node
    # sees under that name (`umm_ray.storage`), not the driver's private target of a link to it.
    stage_dir = Path(os.path.abspath(spec.stage_dir))
    fingerprint = run_fingerprint(task, examples, spec)
    set_aside_stale_run(stage_dir / RAY_TRAIN_DIR / spec.name, fingerprint)
    config = {"task": task, "spec": spec, "examples": examples, "fingerprint": fingerprint}
    trainer = make_trainer(_worker_loop, config, spec, stage_dir / RAY_TRAIN_DIR, spec.name)
    result = trainer.fit()
    out = result.return_value
    if out is None or result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {spec.name!r} finished without a result/checkpoint (see its logs)")
    model_dir = stage_dir / "model"
    _export_final(result.checkpoint, model_dir, spec.name)
    return TrainResult(name=spec.name, model_dir=model_dir, history=out["history"], total_steps=out["total_steps"],
                       resumed_from=out["resumed_from"], started_at=out["started_at"], ended_at=out["ended_at"],
                       entered_at=out["entered_at"], checkpoint_path=result.checkpoint.path)


def make_trainer(loop, config: dict, spec: TrainSpec, storage: Path, name: str):
    """The TorchTrainer running `loop(config)` on `spec`'s workers, its run stored under `storage/name`."""
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")  # see docs/design.md: Ray's 2 s poll
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig  # heavy: ~2 s, at fit time only
    from ray.train.torch import TorchConfig, TorchTrainer

    # resources_per_worker: the claim's bundle without the accelerator type (accelerator_type pins that)
    per_worker = {k: v for k, v in spec.worker.bundle().items() if not k.startswith("accelerator_type:")}
    return TorchTrainer(
        loop, train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if spec.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=spec.num_workers, use_gpu=spec.use_gpu,
                                     resources_per_worker=per_worker,
                                     accelerator_type=spec.worker.accelerator or None,
                                     placement_strategy=spec.placement_strategy),
        run_config=RunConfig(name=name, storage_path=str(storage),
                             checkpoint_config=CheckpointConfig(num_to_keep=spec.keep_checkpoints),
                             failure_config=FailureConfig(max_failures=spec.max_failures)),
    )


def _check(task: TrainTask, examples: list, spec: TrainSpec) -> None:
    if not examples:
        raise ValueError(f"run {spec.name!r}: no training examples")
    if spec.num_workers < 1 or spec.batch_size < 1 or spec.checkpoint_every < 1:
        raise ValueError(f"run {spec.name!r}: num_workers, batch_size and checkpoint_every must be >= 1 ({spec})")
    if spec.strategy not in ("ddp", "deepspeed"):
        raise ValueError(f"run {spec.name!r}: strategy {spec.strategy!r} is not 'ddp' or 'deepspeed'")
    if spec.precision not in PRECISIONS:
        raise ValueError(f"run {spec.name!r}: precision {spec.precision!r} is not one of {list(PRECISIONS)}")
    if spec.micro_batch_tokens < 0:
        raise ValueError(f"run {spec.name!r}: {spec.section}.micro_batch_tokens must be >= 0 ({spec})")
    if not isinstance(task, TrainTask):
        raise TypeError(f"run {spec.name!r}: task must be a TrainTask, got {type(task).__name__}")


def run_fingerprint(task: TrainTask, examples: list, spec: TrainSpec) -> dict:
    """What a checkpoint must match to be resumed: spec settings, task identity, and a hash of the data."""
    digest = hashlib.sha256(repr(examples).encode()).hexdigest()[:16]
    return json.loads(json.dumps({**spec.fingerprint(), **task.fingerprint(), "data": f"{len(examples)}:{digest}"}))


def _mismatch(where: Path, old: dict, new: dict) -> str:
    diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    return f"{where} holds checkpoints of a different run (changed: {diff})"


def set_aside_stale_run(run_dir: Path, *fingerprints: dict) -> Path | None:
    """Before any worker starts: if the latest checkpoint under `run_dir` came from other settings or data than any of
    `fingerprints` (e.g. an upstream stage was redone), move the run to `<run_dir>.stale-<n>` so this run starts fresh
    instead of resuming from it. Nothing is deleted and nothing is mixed; returns the new location (None when there
    was nothing stale). A shared worker group's checkpoints are named `<run>__checkpoint_<step>`: latest by time."""
    states = sorted(run_dir.glob(f"*checkpoint_*/{STATE_FILE}"), key=lambda p: (p.stat().st_mtime, p.parent.name))
    old = json.loads(states[-1].read_text()).get("fingerprint", {}) if states else None
    if old is None or old in fingerprints:
        return None
    n = 1
    while run_dir.with_name(f"{run_dir.name}.stale-{n}").exists():
        n += 1
    dest = run_dir.with_name(f"{run_dir.name}.stale-{n}")
    run_dir.rename(dest)
    why = _mismatch(run_dir, old, fingerprints[0]) if len(fingerprints) == 1 else f"{run_dir} holds no run of these"
    log.warning("%s; moved it to %s and starting this run from scratch", why, dest)
    return dest


def _export_final(checkpoint, model_dir: Path, name: str) -> None:
    """Copy the HF model of the final checkpoint to `model_dir` (replacing an older export)."""
    with checkpoint.as_directory() as d:
        src = Path(d) / HF_DIR
        if not src.is_dir():
            raise RuntimeError(f"run {name!r}: final checkpoint {checkpoint.path} has no '{HF_DIR}/' model")
        if model_dir.exists():
            shutil.rmtree(model_dir)
        shutil.copytree(src, model_dir)


def save_history(history: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(history, indent=1))


def spec_dict(spec: TrainSpec) -> dict[str, Any]:
    d = asdict(spec)
    d["stage_dir"] = str(spec.stage_dir)
    return d
