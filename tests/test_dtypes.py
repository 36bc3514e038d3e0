"""Inference precision resolved in one place: 'auto' is bf16 on CUDA and fp32 on CPU; explicit values are kept."""

from __future__ import annotations

import pytest
import torch

from umm_ray.dtypes import DTYPES, resolve_dtype, resolve_eager, torch_dtype, vllm_dtype


def test_auto_resolves_by_device():
    assert resolve_dtype("auto", "cuda") == "bf16" and resolve_dtype("auto", "cuda:3") == "bf16"
    assert resolve_dtype("auto", "cpu") == "fp32" and resolve_dtype("auto", torch.device("cpu")) == "fp32"
    for value in ("bf16", "fp16", "fp32"):
        assert resolve_dtype(value, "cpu") == resolve_dtype(value, "cuda") == value
    assert resolve_eager("auto", "cpu") is True and resolve_eager("auto", "cuda") is False
    assert resolve_eager("true", "cuda") is True and resolve_eager("false", "cpu") is False


def test_resolved_names_map_to_torch_and_vllm():
    assert [torch_dtype(d) for d in ("bf16", "fp16", "fp32")] == [torch.bfloat16, torch.float16, torch.float32]
    assert [vllm_dtype(d) for d in ("bf16", "fp16", "fp32")] == ["bfloat16", "float16", "float32"]
    assert DTYPES[0] == "auto"


def test_bad_values_fail_clearly():
    with pytest.raises(ValueError, match="dtype 'float32' is not one of"):
        resolve_dtype("float32", "cpu")
    with pytest.raises(ValueError, match="expected 'cpu' or 'cuda"):
        resolve_dtype("auto", "mps")
    with pytest.raises(ValueError, match="enforce_eager 'yes'"):
        resolve_eager("yes", "cpu")
    with pytest.raises(ValueError, match="not resolved"):
        torch_dtype("auto")
    with pytest.raises(ValueError, match="not resolved"):
        vllm_dtype("auto")
