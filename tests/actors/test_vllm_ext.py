"""The vLLM worker extension's log filter: the per-step rotary-cache reload warning is dropped, nothing else."""

from __future__ import annotations

import importlib
import logging

from umm_ray.actors.vllm_ext import QuietReloadNoise


def test_filter_drops_only_the_rotary_reload_warning():
    f = QuietReloadNoise()

    def record(layer: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.WARNING, __file__, 1, "%s: Failed to load weights", (layer,), None)

    assert not f.filter(record("RotaryEmbedding"))
    assert f.filter(record("QKVParallelLinear"))  # a real layer that failed to load still warns


def test_the_filtered_loggers_are_the_ones_vllm_logs_reloads_through():
    """Guards against vLLM moving the modules: the filter would then silently stop applying."""
    import umm_ray.actors.vllm_ext  # noqa: F401  (installs the filter)

    layerwise = importlib.import_module("vllm.model_executor.model_loader.reload.layerwise")
    inplace = importlib.import_module("vllm.model_executor.model_loader.reload.inplace")
    assert any(isinstance(f, QuietReloadNoise) for f in logging.getLogger(layerwise.logger.name).filters)
    assert logging.getLogger(inplace.logger.name).level == logging.WARNING
