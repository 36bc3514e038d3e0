"""Configuration of the rollout engines: the `rollout` section of `Config`.

Kept in its own module (config.py is near its size limit). The engine's precision, CUDA graphs and tensor
parallelism default to 'auto', resolved against the engine's device by `umm_ray.dtypes` (bf16 + CUDA graphs on a
GPU, fp32 + eager on CPU, as vLLM-cpu needs); at their defaults the keys stay out of the stage cache keys, so CPU
runs cached before they existed keep their keys.
"""

from __future__ import annotations

from dataclasses import dataclass

from umm_ray.config_fields import opt
from umm_ray.dtypes import DTYPES, EAGER_MODES

__all__ = ["RolloutConfig"]


@dataclass
class RolloutConfig:
    backend: str = opt("vllm", "Generation engine.", choices=("vllm", "hf"))
    num_engines: int = opt(1, "Rollout actors.", lo=1)
    max_new_tokens: int = opt(48, "Response length cap.", lo=1)
    temperature: float = opt(1.0, "Sampling temperature.", lo=0)
    top_p: float = opt(1.0, "Nucleus sampling.", lo=0, hi=1)
    gpu_memory_utilization: float = opt(0.05, "vLLM KV-cache fraction (of RAM on CPU).", lo=0.0, hi=1.0)
    weight_sync: str = opt("collective", "Policy -> engine weight sync: a gloo/NCCL group of its own, or Ray's object "
                           "store (same weights; umm_ray/ppo/sync.py).", choices=("collective", "object_store"))
    sync_bucket_mb: float = opt(64.0, "Flat-buffer size of a collective weight sync, MiB.", lo=1.0)
    sleep_mode: str = opt("auto", "Free the engines' GPU memory between rollouts (vLLM level-1 sleep: weights to host "
                                  "memory, KV cache dropped; the HF engine moves its model to host memory), so the "
                                  "policy update has the GPU: 'auto' = on when the engines share the policy's GPUs "
                                  "(resources.colocate all), 'on' / 'off' as given. vLLM on CPU has no sleep mode.",
                          choices=("auto", "on", "off"))
    dtype: str = opt("auto", "Weights and compute dtype of each rollout engine (vLLM or HF): 'auto' = bf16 on a GPU, "
                             "fp32 on CPU; bf16 / fp16 / fp32 as given (weight syncs are cast to it).",
                     choices=DTYPES, keyed_at_default=False)
    enforce_eager: str = opt("auto", "vLLM eager mode: 'auto' = CUDA graphs on a GPU (faster decoding, some memory and "
                                     "start-up time), eager on CPU (vLLM-cpu needs it); 'true' / 'false' as given.",
                             choices=EAGER_MODES, keyed_at_default=False)
    tensor_parallel_size: int = opt(1, "GPUs each vLLM engine shards the policy over (vLLM tensor parallelism); the "
                                       "engine's actor asks Ray for that many GPUs. > 1 needs GPUs and the vllm "
                                       "backend: refused on CPU.", lo=1, keyed_at_default=False)
