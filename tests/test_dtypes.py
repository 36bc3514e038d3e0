"""Inference precision resolved in one place: 'auto' is bf16 on CUDA and fp32 on CPU; explicit values are kept."""

from __future__ import annotations

import warnings

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


def test_bf16_on_a_cpu_without_fast_kernels_warns_once_per_key(monkeypatch, caplog):
    """AVX2-only CPUs run bf16 ~20x slower than fp32: asking for it there warns (naming the key), once per key;
    a CPU with fast bf16 kernels, fp32 and CUDA warn nothing."""
    from umm_ray import dtypes
    from umm_ray.train.levers import autocast

    monkeypatch.setattr(dtypes, "_warned", set())
    monkeypatch.setattr(dtypes, "cpu_bf16_fast", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails here
        assert dtypes.warn_if_slow_bf16("rm.precision") is None
        resolve_dtype("bf16", "cpu")
        with autocast("bf16", "cpu"):
            pass
    monkeypatch.setattr(dtypes, "cpu_bf16_fast", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"sft.precision: this CPU .* no fast bf16 kernels"):
        with autocast("bf16", "cpu", key="sft.precision"):
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with autocast("bf16", "cpu", key="sft.precision"):  # the same key again: already said
            pass
        with autocast("fp32", "cpu", key="rm.precision"):
            pass
        assert resolve_dtype("bf16", "cuda") == "bf16" and resolve_dtype("auto", "cpu") == "fp32"
    with pytest.warns(RuntimeWarning, match="a role's dtype bf16 on CPU"):
        assert resolve_dtype("bf16", "cpu") == "bf16"
    assert "19x" in caplog.text  # the log line (Ray workers' logs) says it too


def test_cpu_bf16_probe_matches_the_isa():
    """oneDNN's fast bf16 needs AVX-512 (or AMX); an AVX2-only CPU reports slow."""
    from umm_ray.dtypes import cpu_bf16_fast

    isa = torch.backends.cpu.get_cpu_capability()
    if isa in ("AVX2", "DEFAULT"):
        assert not cpu_bf16_fast()
    elif isa.startswith("AVX512"):
        assert cpu_bf16_fast()
