"""Memory and speed levers of a training run, from config: mixed precision, gradient checkpointing and token-budget
micro-batches (`budget_pieces` + `accumulate_step`: a batch in pieces, gradients accumulated into one step).

    with autocast(spec.precision, device):         # 'bf16': matmuls in bfloat16, weights and AdamW state stay fp32
        loss, extra = task.loss(model, raw, batch)
    enable_grad_checkpointing(raw)                  # every HF decoder layer recomputed in backward (MoE-aware)

bf16 here is autocast, not a cast of the model: parameters, gradients and optimizer moments stay fp32 (the "master
weights"), only the forward's matmul-heavy ops (and so their backward) run in bfloat16. On CPUs with AMX /
AVX-512 BF16 that is ~2.5x faster than fp32 for SmolLM2-135M forward + backward, and the activations kept for
backward are about half the bytes. bf16 has fp32's exponent range, so no loss scaling is needed.
"""

from __future__ import annotations

import contextlib
import importlib

import torch
from torch import nn

from umm_ray.dtypes import warn_if_slow_bf16
from umm_ray.models.moe import moe_layers
from umm_ray.train.collective import max_over_ranks

PRECISIONS = ("fp32", "bf16")


def adamw(params: list, lr: float, weight_decay: float, **kwargs) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel when every parameter is a float32 CPU or CUDA tensor (one pass over each
    tensor instead of a dozen foreach ops: 0.09 s vs 0.35 s a step for SmolLM2-135M's 135M parameters on 2 CPU
    threads; 3.8 ms vs 12.5 ms for the 1M-parameter testbed policy on 1 thread), else the default implementation.
    The update is the same up to float rounding.

    Args:
        params: tensors, or param-group dicts (``{"params": [...], "lr": ...}``) as torch optimizers take them.
        kwargs: other AdamW arguments (betas, eps).
    """
    # generators (model.parameters()) would be spent by the check below
    params = [dict(g, params=list(g["params"])) if isinstance(g, dict) else g for g in params]
    tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    fused = bool(tensors) and all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in tensors)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None, **kwargs)


def worker_threads(cpus: float) -> int:
    """Torch intra-op threads of a training worker that claims `cpus` logical CPUs: the whole part of its claim, at
    least 1. The default claim (1 CPU) keeps one thread per worker, as Ray Train's processes on a few real cores
    should; a worker given `resources.train_cpus 2` (e.g. `rm.num_workers 1` on a 2-core node) runs its GEMMs on 2
    threads instead of all-reducing gradients between two 1-thread processes."""
    return max(1, int(cpus))


def autocast(precision: str, device: torch.device | str = "cpu", key: str = "rm.precision"):
    """The context the forward (and so the backward) of one step runs in: bf16 autocast, or nothing for fp32.
    `key`: the config key `precision` came from (sft.precision, rm.precision, ppo.precision), named in errors."""
    if precision not in PRECISIONS:
        raise ValueError(f"{key}={precision!r}: expected one of {list(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if torch.device(device).type == "cpu":
        warn_if_slow_bf16(key)  # once per process: an AVX2-only CPU runs bf16 ~20x slower than fp32
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def deepspeed_autocast(precision: str) -> dict:
    """The DeepSpeed config entries for `precision`: for bf16 its torch_autocast section (the engine's forward turns
    an outer torch.autocast *off* unless this is on), with no lower-precision modules so gradients are reduced in
    fp32 and the optimizer keeps fp32 master weights; DeepSpeed's own "bf16" mode (bf16 parameters) stays off."""
    if precision == "fp32":
        return {}
    return {"torch_autocast": {"enabled": True, "dtype": "bfloat16", "lower_precision_safe_modules": []}}


def import_deepspeed():
    """`import deepspeed`, minus the C++ build it would run at its first process-group set-up.

    DeepSpeed's torch backend JIT-compiles a shared-memory all-reduce op (`deepspeed_shm_comm`, ninja + g++) the
    first time a process on a machine builds its communication backend (55 s alone on a 2-core machine; about 70 s
    of the first PPO run's start-up in `make demo`, beside its other roles starting), then cached in
    ~/.cache/torch_extensions. That op serves only
    `inference_all_reduce` (DeepSpeed's tensor-parallel inference), which nothing here calls: training reduces
    gradients through torch.distributed (gloo / NCCL) either way. So the build is skipped; if a DeepSpeed release
    moves the hook, this leaves DeepSpeed as it is (the build comes back, nothing breaks).
    """
    import deepspeed  # heavy: probes accelerators and builds op registries on import

    # by module path: `deepspeed.comm.torch` as an attribute is the torch package that deepspeed.comm imports
    ds_torch = importlib.import_module("deepspeed.comm.torch")
    if hasattr(ds_torch, "build_shm_op"):
        ds_torch.build_shm_op = _no_shm_op
    return deepspeed


def _no_shm_op():
    return None  # TorchBackend then keeps shm_comm_op = None and inference_all_reduce uses torch.distributed


def hf_models(model: nn.Module) -> list[nn.Module]:
    """The outermost Hugging Face `PreTrainedModel`s inside `model` (itself included), e.g. RewardNet.rm."""
    from transformers import PreTrainedModel  # heavy: ~2 s; only where checkpointing is turned on

    if isinstance(model, PreTrainedModel):
        return [model]
    found: dict[str, nn.Module] = {}
    for name, m in model.named_modules():
        if isinstance(m, PreTrainedModel) and not any(name.startswith(f"{outer}.") for outer in found):
            found[name] = m
    return list(found.values())


def enable_grad_checkpointing(model: nn.Module, key: str = "rm.grad_checkpointing") -> int:
    """Turn on HF gradient checkpointing on every HF model inside `model` (the policy and the critic trunk of PPO's
    ActorCritic, the backbone of a RewardNet); returns how many. `key`: the config key named in errors.

    Non-reentrant `torch.utils.checkpoint` (works with DDP's find_unused_parameters, which MoE training needs).
    Its `context_fn` makes the recompute of an upcycled layer match its forward: the real-token mask the reward
    forward set (`moe.real_tokens`) is put back for the recompute, which happens in backward after that context has
    closed, and load statistics are not counted twice. The router's noise is the same in the recompute because
    checkpoint restores the RNG state (preserve_rng_state, the default).
    """
    models = hf_models(model)
    if not models:
        raise ValueError(f"{key}: {type(model).__name__} holds no Hugging Face model to checkpoint")
    for m in models:
        if not getattr(m, "supports_gradient_checkpointing", False):
            raise ValueError(f"{key}: {type(m).__name__} does not support gradient checkpointing")
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={
            "use_reentrant": False, "context_fn": _moe_context_fn(m)})
    return len(models)


def grad_checkpointing_enabled(model: nn.Module) -> bool:
    return any(getattr(m, "is_gradient_checkpointing", False) for m in hf_models(model))


def _moe_context_fn(model: nn.Module):
    """checkpoint's context_fn: called at each checkpointed forward; returns (forward ctx, recompute ctx)."""
    def context_fn():
        layers = moe_layers(model)  # looked up per call: the model may be upcycled after checkpointing is enabled
        if not layers:
            return contextlib.nullcontext(), contextlib.nullcontext()
        masks = [m.token_mask for m in layers]  # the forward's masks, captured now
        return contextlib.nullcontext(), _recompute(layers, masks)
    return context_fn


@contextlib.contextmanager
def _recompute(layers, masks):
    """During a layer's recompute: the forward's token masks, no load counting, the forward's aux loss kept."""
    saved = [(m.token_mask, m.aux_loss) for m in layers]
    for m, mask in zip(layers, masks):
        m.token_mask, m.recomputing = mask, True
    try:
        yield
    finally:
        for m, (mask, aux) in zip(layers, saved):
            m.token_mask, m.aux_loss, m.recomputing = mask, aux, False


# ---------------------------------------------------------------------------------------------------------------------
# Token-budget micro-batches: one optimizer step accumulated over pieces of a batch (umm_ray.data.microbatch).


def budget_pieces(task, batch: dict, budget: int) -> list[tuple[dict, float]]:
    """Token-budget pieces of this rank's batch (`task.micro_batches` of a umm_ray.train.loop.TrainTask); with
    several ranks every rank runs as many as the rank that needs most (ZeRO-2 reduces gradients at every backward,
    so the ranks' backward passes must pair up)."""
    pieces = task.micro_batches(batch, budget)
    n = max_over_ranks(len(pieces))
    return pieces if n == len(pieces) else task.micro_batches(batch, budget, count=n)


def accumulate_step(engine, task, raw, pieces: list[tuple[dict, float]], precision: str,
                    device) -> tuple[float, dict]:
    """One optimizer step over a batch given as weighted pieces: backward of weight x loss per piece (the gradients
    add up to the whole batch's), then one update. `engine`: umm_ray.train.loop's verbs accumulating(last) (DDP:
    no gradient all-reduce before the last piece), backward(loss), update(). Returns the batch's loss and extras:
    sum(weight x value), counts (`task.count_metrics`) summed."""
    total, extras = 0.0, {}  # gradients are clear: every engine's update() leaves them so
    for k, (piece, weight) in enumerate(pieces):
        with engine.accumulating(last=k == len(pieces) - 1):
            with autocast(precision, device):
                loss, extra = task.loss(engine.model, raw, piece)
            engine.backward(loss * weight)
        total += weight * loss.item()
        for name, v in extra.items():
            extras[name] = extras.get(name, 0.0) + float(v) * (1.0 if name in task.count_metrics else weight)
    engine.update()
    return total, extras
