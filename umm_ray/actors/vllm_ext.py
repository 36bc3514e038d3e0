"""A vLLM worker extension: methods mixed into every vLLM worker, called by name through `LLM.collective_rpc`.

Calling by name avoids shipping a pickled closure to the engine process (which vLLM refuses unless
VLLM_ALLOW_INSECURE_SERIALIZATION=1). Tensors in the call arguments travel through vLLM's own msgpack encoder.
Pass the qualified name `umm_ray.actors.vllm_ext.WeightSyncExtension` as `LLM(worker_extension_cls=...)`.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from vllm.v1.worker.gpu_model_runner import GPUModelRunner

from umm_ray.actors.weight_sync import ReceivePlan, SyncGroup, load_received

ROPE_RELOAD_WARNING = "RotaryEmbedding: Failed to load weights"


class QuietReloadNoise(logging.Filter):
    """Drops vLLM's "RotaryEmbedding: Failed to load weights" warning. Every in-place reload (one per PPO step) logs
    it: the rotary cache is computed, never part of the weights we send, and vLLM puts it back itself. Other layers'
    failures still warn."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != ROPE_RELOAD_WARNING


# Module import happens in the worker that loads this extension, before any reload.
logging.getLogger("vllm.model_executor.model_loader.reload.layerwise").addFilter(QuietReloadNoise())
# "Reloading and processing weights took 0.02 seconds", once per step: the driver's time/sync already says it.
logging.getLogger("vllm.model_executor.model_loader.reload.inplace").setLevel(logging.WARNING)


def rewind_cpu_generators_exactly(runner_cls=GPUModelRunner) -> None:
    """Make vLLM's rewind of a discarded sample work for CPU generators (idempotent; applied below, at import).

    A prompt prefilled in chunks (its batch exceeds the step's token budget) samples a token after every chunk but
    the last, and vLLM throws that token away. For a seeded request (umm_ray seeds every prompt) the runner then
    rewinds the request's generator by 4 Philox offsets, a CUDA generator's API: a CPU generator (Mersenne Twister)
    has no offset, `get_offset` raises "CPU Generator does not use offset", and the engine dies. First met with
    SmolLM2-135M's chat-templated prompts in the pairs stage (the testbed's short prompts never filled the budget).
    Here each discarded request's CPU generator state is saved before sampling and restored after it, an exact
    rewind: the next token is drawn as if the discarded one never was. The runner's own rewind then sees only the
    generators that have offsets."""
    if getattr(runner_cls, "_umm_cpu_rewind", False):
        return
    sample, bookkeeping = runner_cls._sample, runner_cls._bookkeeping_sync

    def _sample(self, *args, **kwargs):
        gens = self.input_batch.generators
        discarded = np.nonzero(self.discard_request_mask.np[:self.input_batch.num_reqs])[0]
        saved = {int(i): gens[int(i)].get_state() for i in discarded
                 if int(i) in gens and gens[int(i)].device.type == "cpu"}
        out = sample(self, *args, **kwargs)
        for i, state in saved.items():
            gens[i].set_state(state)
        return out

    def _bookkeeping_sync(self, *args, **kwargs):
        gens = self.input_batch.generators
        self.input_batch.generators = {i: g for i, g in gens.items() if g.device.type != "cpu"}  # rewound above
        try:
            return bookkeeping(self, *args, **kwargs)
        finally:
            self.input_batch.generators = gens

    runner_cls._sample, runner_cls._bookkeeping_sync, runner_cls._umm_cpu_rewind = _sample, _bookkeeping_sync, True


# The CPU runner subclasses the GPU one and inherits both methods.
rewind_cpu_generators_exactly()


class WeightSyncExtension:
    """Weight loading and inspection on a vLLM worker (`self` is the worker; `self.model_runner` its runner).

    Method names carry the `umm_` prefix because vLLM asserts that an extension adds no name the worker already has
    (workers have their own `update_weights`, for vLLM's weight-transfer engines).
    """

    def umm_load_weights(self, named_tensors: list) -> int:
        """Load checkpoint-format `(name, tensor)` pairs in place; returns how many were given.

        Goes through `reload_weights`, not `model.load_weights`: on CPU, vLLM repacks linear weights for oneDNN
        after loading (the original parameter may be emptied), and only the layerwise reload path redoes that.
        """
        pairs = [(str(name), tensor) for name, tensor in named_tensors]
        self.reload_weights(weights_iterator=iter(pairs))
        return len(pairs)

    # ---- weight sync over a collective group (umm_ray.actors.weight_sync): the group lives in this worker ----

    def umm_worker_rank(self) -> int:
        """This worker's rank inside its engine (0 .. tensor/pipeline-parallel size - 1)."""
        return int(self.rank)

    def umm_join_sync(self, host: str, port: int, first_rank: int, world_size: int, backend: str,
                      plan: ReceivePlan) -> int:
        """Join the weight-sync group as rank `first_rank + self.rank` (blocks until all members have joined) and keep
        `plan` (checked by the RolloutActor) for every later `umm_receive_weights`. Returns the rank taken."""
        self.umm_leave_sync()
        self._umm_sync = SyncGroup(host, port, first_rank + int(self.rank), world_size, backend)
        self._umm_plan = plan
        return self._umm_sync.rank

    def umm_receive_weights(self) -> int:
        """Receive one sync's buckets from the group and load them in place as they land (`reload_weights`, as
        `umm_load_weights`); every worker receives the full weights and vLLM shards them. Returns bytes received."""
        if getattr(self, "_umm_sync", None) is None:
            raise RuntimeError("vLLM worker: umm_receive_weights before umm_join_sync")
        load_received(lambda weights: self.reload_weights(weights_iterator=weights), self._umm_sync, self._umm_plan)
        return self._umm_plan.nbytes

    def umm_leave_sync(self) -> None:
        """Drop this worker's group (no-op when it has none)."""
        if getattr(self, "_umm_sync", None) is not None:
            self._umm_sync.close()
        self._umm_sync = None

    def umm_param_names(self) -> list[str]:
        """Names of the worker model's parameters (vLLM's fused names, e.g. `qkv_proj`), for diagnostics."""
        return [name for name, _ in self.model_runner.get_model().named_parameters()]

    def umm_param_checksum(self) -> float:
        """Sum of all parameter values of the worker's model (float64): a cheap 'did the weights change' probe."""
        total = torch.zeros((), dtype=torch.float64)
        for _, p in self.model_runner.get_model().named_parameters():
            total += p.detach().to(torch.float64).sum()
        return float(total)
