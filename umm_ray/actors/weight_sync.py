"""Weight sync over a torch.distributed group of its own: policy rank 0 broadcasts packed buckets to the engines.

The group is not the policy ranks' default process group (DeepSpeed's) nor any of vLLM's: it is built from a TCPStore
at an address the driver picks on policy rank 0's node, with c10d's ProcessGroupGloo (CPU) or ProcessGroupNCCL (GPU)
constructed directly, so `torch.distributed.is_initialized()` and every default group stay as they were.

    rank 0 (policy rank 0)         ranks 1..k (each engine's workers; the HF engine is one rank itself)
    plan_buckets(meta, bytes)  -->  (layout travels by Ray, checked against the checkpoint once: `receive_plan`)
    pack(bucket, tensors)           flat = empty(bucket)
    group.broadcast(flat)  ------>  group.broadcast(flat); unpack(bucket, flat) -> load

Parameters are packed in their `named_parameters()` order into flat buffers of one dtype and at most `bucket_bytes`
each (a larger tensor gets a bucket to itself), so memory in flight is one bucket, not the whole model. Metadata
(names, shapes, dtypes, offsets) goes by Ray; only the bytes go through the group.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

GROUP_BACKENDS = ("gloo", "nccl")
TIMEOUT_S = 600  # a member that never joins or never receives fails the others after this, not never


@dataclass(frozen=True)
class Slot:
    """One tensor inside a bucket: `numel` elements from `offset` of the flat buffer, viewed as `shape`."""

    name: str
    shape: tuple[int, ...]
    offset: int
    numel: int


@dataclass(frozen=True)
class Bucket:
    """A flat buffer of one dtype (`dtype` as torch spells it, e.g. 'float32') holding `slots` back to back."""

    dtype: str
    numel: int
    slots: tuple[Slot, ...]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=self.torch_dtype).element_size()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def plan_buckets(meta: list[tuple[str, tuple[int, ...], torch.dtype]], bucket_bytes: int) -> list[Bucket]:
    """Pack `(name, shape, dtype)` in order into buckets of one dtype and at most `bucket_bytes` (a tensor larger
    than that gets a bucket of its own). Raises ValueError on a non-positive size or a repeated name."""
    if bucket_bytes <= 0:
        raise ValueError(f"weight sync: bucket size must be positive, got {bucket_bytes} bytes")
    names = [n for n, _, _ in meta]
    if len(set(names)) != len(names):
        raise ValueError(f"weight sync: repeated parameter names {sorted({n for n in names if names.count(n) > 1})}")
    buckets: list[Bucket] = []
    slots: list[Slot] = []
    cur_dtype, used = None, 0
    for name, shape, dtype in meta:
        numel = 1
        for d in shape:
            numel *= int(d)
        size = numel * torch.empty((), dtype=dtype).element_size()
        if slots and (dtype != cur_dtype or used + size > bucket_bytes):
            buckets.append(Bucket(dtype_name(cur_dtype), slots[-1].offset + slots[-1].numel, tuple(slots)))
            slots, used = [], 0
        offset = slots[-1].offset + slots[-1].numel if slots else 0
        slots.append(Slot(name, tuple(int(d) for d in shape), offset, numel))
        cur_dtype, used = dtype, used + size
    if slots:
        buckets.append(Bucket(dtype_name(cur_dtype), slots[-1].offset + slots[-1].numel, tuple(slots)))
    return buckets


def pack(bucket: Bucket, tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The bucket's tensors (in slot order, any device) copied into one flat Tensor[bucket.numel] on `device`."""
    flat = torch.empty(bucket.numel, dtype=bucket.torch_dtype, device=device)
    for slot, t in zip(bucket.slots, tensors, strict=True):
        if tuple(t.shape) != slot.shape:
            raise ValueError(f"weight sync: {slot.name!r} has shape {tuple(t.shape)}, the layout says {slot.shape}")
        flat[slot.offset:slot.offset + slot.numel].copy_(t.reshape(-1))
    return flat


def unpack(bucket: Bucket, flat: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """`(name, view)` per slot of a received flat Tensor[bucket.numel] (views share its storage: no copy)."""
    return [(s.name, flat[s.offset:s.offset + s.numel].view(s.shape)) for s in bucket.slots]


class SyncGroup:
    """Rank `rank` of a `world_size`-member group on its own TCPStore at (host, port); rank 0 hosts the store.

    Construction blocks until every member has joined (build all members concurrently). Tensors of a gloo group
    travel through CPU memory; an NCCL group needs them on this process's CUDA device.
    """

    def __init__(self, host: str, port: int, rank: int, world_size: int, backend: str = "gloo",
                 timeout_s: float = TIMEOUT_S):
        if backend not in GROUP_BACKENDS:
            raise ValueError(f"SyncGroup: backend must be one of {GROUP_BACKENDS}, got {backend!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"SyncGroup: rank {rank} is outside a group of {world_size}")
        self.rank, self.world_size, self.backend = rank, world_size, backend
        timeout = datetime.timedelta(seconds=timeout_s)
        self._store = dist.TCPStore(host, port, world_size, is_master=rank == 0, timeout=timeout)
        # A prefix of our own: the keys cannot meet those of any other group that might share this store's port.
        store = dist.PrefixStore("umm_weight_sync", self._store)
        if backend == "gloo":
            self._pg = dist.ProcessGroupGloo(store, rank, world_size, timeout)
        else:
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self._pg = dist.ProcessGroupNCCL(store, rank, world_size, opts)
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def broadcast(self, flat: torch.Tensor) -> torch.Tensor:
        """Rank 0's `flat` into every member's `flat` (same numel and dtype everywhere), in place; returns it."""
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self._pg.broadcast([flat], opts).wait()
        if self.backend == "nccl":
            torch.cuda.current_stream().synchronize()  # the bytes must have landed before anyone reads or reuses them
        return flat

    def close(self) -> None:
        """Drop the group and the store (an NCCL communicator is shut down explicitly)."""
        if self._pg is not None and self.backend == "nccl":
            self._pg.shutdown()
        self._pg, self._store = None, None


def receive(group: SyncGroup, buckets: list[Bucket]) -> Iterator[tuple[str, torch.Tensor]]:
    """Receive every bucket in order, yielding `(sent name, tensor)` as each lands (tensors on `group.device`)."""
    for b in buckets:
        flat = group.broadcast(torch.empty(b.numel, dtype=b.torch_dtype, device=group.device))
        yield from unpack(b, flat)


@dataclass(frozen=True)
class ReceivePlan:
    """What an engine does with what arrives: the bucket layout, each sent name's target name in the engine (None:
    a tied alias to drop), and tied aliases to send again with their source's tensor (`WeightNames.with_tied`)."""

    buckets: tuple[Bucket, ...]
    rename: dict[str, str | None]
    tied: tuple[tuple[str, str], ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buckets)

    @property
    def num_tensors(self) -> int:
        """Distinct tensors loaded per sync (aliases not counted), as `RolloutActor.update_weights` counts them."""
        return sum(target is not None for target in self.rename.values())


def received_weights(group: SyncGroup, plan: ReceivePlan) -> Iterator[tuple[str, torch.Tensor]]:
    """`receive` renamed by the plan, aliases dropped, tied aliases appended at the end (their source kept)."""
    sources = {src for _, src in plan.tied}
    kept = {}
    for name, t in receive(group, list(plan.buckets)):
        target = plan.rename[name]
        if target is None:
            continue
        if target in sources:
            kept[target] = t
        yield target, t
    for alias, src in plan.tied:
        yield alias, kept[src]


def load_received(load, group: SyncGroup, plan: ReceivePlan) -> None:
    """`load(iterator)` over `received_weights`, then receive whatever `load` left unread: a loader that stops or
    fails part-way must not leave the sender blocked in a broadcast nobody answers."""
    weights = received_weights(group, plan)
    try:
        load(weights)
    finally:
        for _ in weights:
            pass
