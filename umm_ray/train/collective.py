"""Where tensors handed to torch.distributed must live: the device of the process group's backend.

A process group only moves tensors of the device types its backend serves. On CPU workers Ray Train and DeepSpeed
create gloo groups (CPU tensors); on GPU workers they create NCCL groups, which accept CUDA tensors only — a CPU
tensor stops the run at its first collective with "No backend type associated with device type cpu". Every
torch.distributed call in umm_ray therefore builds its tensors with `device=collective_device()`, never on the
default device.

    t = torch.tensor(values, dtype=torch.float64, device=collective_device())
    torch.distributed.all_reduce(t)
"""

from __future__ import annotations

import os
import torch

__all__ = ["collective_device", "max_over_ranks", "COLLECTIVES"]

# The torch.distributed functions that take tensors (tests wrap all of them to check the devices passed in).
COLLECTIVES: tuple[str, ...] = ("all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce",
                                "reduce_scatter", "reduce_scatter_tensor", "gather", "scatter", "all_to_all",
                                "all_to_all_single", "send", "recv", "isend", "irecv")


def collective_device(group=None) -> torch.device:
    """The device tensors for collectives on `group` (default: the world group) must be on.

    nccl -> the current CUDA device; gloo (or no initialised group) -> cpu.

    The current CUDA device rather than `cuda:<LOCAL_RANK>`: Ray gives each worker its own CUDA_VISIBLE_DEVICES, in
    which its GPU need not sit at index LOCAL_RANK (a PolicyActor sees one GPU, index 0, whatever its rank); the
    launchers (Ray Train's TorchConfig, DeepSpeed's init) select the worker's GPU with torch.cuda.set_device, and
    that is the device NCCL set up its communicator on.

    Raises:
        RuntimeError: an NCCL group in a process that sees no CUDA device (the group could not move any tensor).
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return torch.device("cpu")
    backend = str(dist.get_backend(group)).lower()
    # A group may serve several device types ("cpu:gloo,cuda:nccl"): then CPU tensors are fine.
    if "nccl" in backend and "gloo" not in backend:
        if not torch.cuda.is_available():
            raise RuntimeError(f"torch.distributed group uses backend {backend!r} but this process sees no CUDA "
                               f"device (CUDA_VISIBLE_DEVICES={_visible()!r})")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _visible() -> str | None:

    return os.environ.get("CUDA_VISIBLE_DEVICES")


def max_over_ranks(value: int) -> int:
    """The largest `value` over all ranks of the default group (`value` itself without one): how ranks agree on a
    count, e.g. of token-budget pieces, when their collectives must pair up (ZeRO-2/3 communicate per backward)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
