"""Collectives get tensors on the process group's device (NCCL takes CUDA tensors only).

On CPU machines the group is gloo, where a CPU tensor is right by luck. To catch a tensor built on the default
device ("device-less") anyway, the checks below make the default device `meta` while umm_ray's collective code runs
and wrap every torch.distributed collective so that each tensor passed in must be on `collective_device()`: code that
names the device passes, code that relies on the default hands a meta tensor to the guard and fails.
"""

from __future__ import annotations

import ast
import contextlib
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from tests.fixtures import free_port
from umm_ray.train.collective import COLLECTIVES, collective_device, max_over_ranks
from umm_ray.train.loop import _mean_over_ranks

ROOT = Path(__file__).resolve().parents[2]
# Every function in umm_ray that calls a torch.distributed collective, each exercised under the guard below.
GUARDED = {("umm_ray/train/loop.py", "_mean_over_ranks"), ("umm_ray/train/collective.py", "max_over_ranks")}


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)


@contextlib.contextmanager
def checked_collectives():
    """Wrap torch.distributed's collectives: each tensor argument must be on `collective_device()`; the default
    device is `meta` meanwhile, so a tensor created without a device cannot be on the group's device by accident."""
    originals = {name: getattr(dist, name) for name in COLLECTIVES if hasattr(dist, name)}

    def wrap(name, fn):
        def checked(*args, **kwargs):
            want = collective_device(kwargs.get("group"))
            for t in _tensors([*args, *kwargs.values()]):
                if t.device != want:
                    raise AssertionError(f"torch.distributed.{name} got a tensor on {t.device}; the group's backend "
                                         f"({dist.get_backend()}) needs {want}")
            return fn(*args, **kwargs)
        return checked

    for name, fn in originals.items():
        setattr(dist, name, wrap(name, fn))
    torch.set_default_device("meta")
    try:
        yield
    finally:
        torch.set_default_device(None)
        for name, fn in originals.items():
            setattr(dist, name, fn)


@pytest.fixture
def gloo_world_of_one(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_guard_rejects_a_tensor_off_the_group_device(gloo_world_of_one):
    with checked_collectives(), pytest.raises(AssertionError, match="meta"):
        dist.all_reduce(torch.ones(2))  # default device: meta inside the guard


def test_mean_over_ranks_single_process_gloo(gloo_world_of_one):
    assert collective_device() == torch.device("cpu")
    with checked_collectives():
        assert _mean_over_ranks([1.5, -2.0]) == [1.5, -2.0]
        assert max_over_ranks(3) == 3


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        with checked_collectives():
            means = _mean_over_ranks([float(rank), 10.0 * rank])
            most = max_over_ranks(2 + 3 * rank)  # ranks agree on the larger count of token-budget pieces
        Path(out, f"rank{rank}.txt").write_text(repr([*means, most]))
    finally:
        dist.destroy_process_group()


def test_mean_over_ranks_two_process_gloo(tmp_path):
    import torch.multiprocessing as mp

    # fork: the child runs this module's function without importing it (pytest's importlib mode hides it)
    mp.start_processes(_rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True, start_method="fork")
    for rank in range(2):
        assert (tmp_path / f"rank{rank}.txt").read_text() == repr([0.5, 5.0, 5])


def _collective_calls(tree: ast.AST):
    """(enclosing function name, collective name) for each call like dist.X(...) / torch.distributed.X(...)."""
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                        and node.func.attr in (*COLLECTIVES, "barrier"):
                    base = ast.unparse(node.func.value)
                    if base in ("dist", "torch.distributed", "distributed"):
                        yield fn.name, node.func.attr


def test_every_collective_in_umm_ray_is_guarded():
    """A new torch.distributed call site must be added to GUARDED (and exercised under the guard) to pass."""
    found = set()
    for path in sorted((ROOT / "umm_ray").rglob("*.py")):
        for fn, _ in _collective_calls(ast.parse(path.read_text())):
            found.add((str(path.relative_to(ROOT)), fn))
    assert found, "the scan found no collective call sites at all: the scanner is broken"
    assert found <= GUARDED, f"collective call sites not covered by the device guard: {sorted(found - GUARDED)}"


@pytest.mark.gpu
def test_mean_over_ranks_on_a_one_process_nccl_group(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda is unavailable: the NCCL check needs a CUDA GPU")
    if not dist.is_nccl_available():
        pytest.skip("this torch build has no NCCL")
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        assert collective_device() == torch.device("cuda", 0)
        with checked_collectives():
            assert _mean_over_ranks([3.0, 4.0]) == [3.0, 4.0]
    finally:
        dist.destroy_process_group()
