"""A vLLM worker extension: methods mixed into every vLLM worker, called by name through `LLM.collective_rpc`.

Calling by name avoids shipping a pickled closure to the engine process (which vLLM refuses unless
VLLM_ALLOW_INSECURE_SERIALIZATION=1). Tensors in the call arguments travel through vLLM's own msgpack encoder.
Pass the qualified name `umm_ray.actors.vllm_ext.WeightSyncExtension` as `LLM(worker_extension_cls=...)`.
"""

from __future__ import annotations

import torch


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

    def umm_param_names(self) -> list[str]:
        """Names of the worker model's parameters (vLLM's fused names, e.g. `qkv_proj`), for diagnostics."""
        return [name for name, _ in self.model_runner.get_model().named_parameters()]

    def umm_param_checksum(self) -> float:
        """Sum of all parameter values of the worker's model (float64): a cheap 'did the weights change' probe."""
        total = torch.zeros((), dtype=torch.float64)
        for _, p in self.model_runner.get_model().named_parameters():
            total += p.detach().to(torch.float64).sum()
        return float(total)
