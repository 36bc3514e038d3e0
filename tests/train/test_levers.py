"""Training levers on tiny testbed models, in process (no Ray): bf16 autocast keeps fp32 master weights and tracks
the fp32 loss; gradient checkpointing gives the gradients of a plain backward, dense and MoE (padded batches)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tests.models.conftest import make_rm, make_tokenizer
from umm_ray.data.tokenize import encode_texts
from umm_ray.models.moe import moe_aux_loss, moe_layers
from umm_ray.models.upcycle import upcycle
from umm_ray.train.bt_task import RewardNet
from umm_ray.train.levers import (
    adamw,
    autocast,
    enable_grad_checkpointing,
    grad_checkpointing_enabled,
    worker_threads,
)
from umm_ray.train.loop import TrainSpec


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


@pytest.fixture(scope="module")
def pair_batch(tok):
    """ids/mask [8, T] right-padded to different lengths: 4 chosen rows, then their 4 rejected rows."""
    prompts = ["the cat sat on", "question one two", "list red blue", "sort five four three"] * 2
    responses = [" the mat", " yes good answer", " green", " three four five six seven eight",
                 " bad", " no", " red red red blue green", " one"]
    return encode_texts(tok, prompts, responses, max_len=32)


def _bt_loss(net: RewardNet, ids, mask) -> torch.Tensor:
    r = net(ids, mask)
    rc, rr = r.chunk(2)
    return -torch.nn.functional.logsigmoid(rc - rr).mean() + moe_aux_loss(net.rm)


def _step(net: RewardNet, ids, mask, precision: str) -> float:
    """One training step as umm_ray.train.loop runs it: forward in the precision's autocast, backward, AdamW."""
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    with autocast(precision):
        loss = _bt_loss(net, ids, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


@pytest.mark.parametrize("moe", [False, True])
def test_bf16_step_has_finite_loss_fp32_master_weights_and_tracks_fp32(tok, pair_batch, moe):
    ids, mask = pair_batch
    rm = make_rm("llama", tok).train()
    if moe:
        rm = upcycle(rm, 3, 2, noisy=False, seed=0)
    fp32, bf16 = RewardNet(copy.deepcopy(rm)), RewardNet(copy.deepcopy(rm))
    loss32 = _step(fp32, ids, mask, "fp32")
    loss16 = _step(bf16, ids, mask, "bf16")
    assert math.isfinite(loss16)
    assert {p.dtype for p in bf16.parameters()} == {torch.float32}  # master weights stay fp32 after the step
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in bf16.parameters())
    assert abs(loss16 - loss32) < 0.02 * max(1.0, abs(loss32)), (loss16, loss32)  # bf16: ~3 significant digits
    # and the step moved the weights like fp32's did (same direction, up to bf16 rounding of the gradients)
    d32 = torch.cat([(a - b).flatten() for a, b in zip(fp32.parameters(), rm.parameters())])
    d16 = torch.cat([(a - b).flatten() for a, b in zip(bf16.parameters(), rm.parameters())])
    assert torch.nn.functional.cosine_similarity(d32, d16, dim=0) > 0.9


def _grads(net: RewardNet, ids, mask) -> tuple[float, dict[str, torch.Tensor], list[torch.Tensor]]:
    torch.manual_seed(1)  # noisy routing draws the same noise in both runs (checkpoint replays the RNG state)
    loss = _bt_loss(net, ids, mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    return loss.item(), grads, [m.load_counts.clone() for m in moe_layers(net)]


@pytest.mark.parametrize("moe", [False, True])
def test_grad_checkpointing_gives_the_same_gradients(tok, pair_batch, moe):
    ids, mask = pair_batch
    rm = make_rm("llama", tok).train()
    if moe:  # noisy top-1 of 3: routing depends on the RNG and padding is left out of the balance loss
        rm = upcycle(rm, 3, 1, noisy=True, seed=0)
    plain, ckpt = RewardNet(copy.deepcopy(rm)), RewardNet(copy.deepcopy(rm))
    assert enable_grad_checkpointing(ckpt) == 1 and grad_checkpointing_enabled(ckpt)
    assert not grad_checkpointing_enabled(plain)
    loss_a, ga, loads_a = _grads(plain, ids, mask)
    loss_b, gb, loads_b = _grads(ckpt, ids, mask)
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert ga.keys() == gb.keys() and len(ga) > 0
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-6, msg=name)
    # the recompute in backward does not count the tokens' expert load a second time
    assert len(loads_a) == (2 if moe else 0)
    for a, b in zip(loads_a, loads_b):
        assert torch.equal(a, b)


def test_grad_checkpointing_survives_upcycling_after_it_was_enabled(tok, pair_batch):
    """Checkpointing turned on before the MoE layers exist still gives the MoE recompute its token mask."""
    ids, mask = pair_batch
    plain = make_rm("llama", tok).train()
    ckpt = copy.deepcopy(plain)
    enable_grad_checkpointing(ckpt)
    plain, ckpt = (RewardNet(upcycle(m, 3, 1, noisy=True, seed=0, inplace=True)) for m in (plain, ckpt))
    _, ga, _ = _grads(plain, ids, mask)
    _, gb, _ = _grads(ckpt, ids, mask)
    for name in ga:
        torch.testing.assert_close(gb[name], ga[name], rtol=1e-4, atol=1e-6, msg=name)


def test_levers_reject_bad_values_and_are_reported():
    with pytest.raises(ValueError, match="rm.precision"):
        autocast("fp16")
    with pytest.raises(ValueError, match="rm.grad_checkpointing"):
        enable_grad_checkpointing(torch.nn.Linear(2, 2))
    spec = TrainSpec(name="x", stage_dir="/tmp/x", precision="bf16", grad_checkpointing=True, strategy="deepspeed",
                     zero_stage=2)
    assert spec.levers() == {"precision": "bf16", "grad_checkpointing": True, "micro_batch_tokens": 0,
                             "strategy": "deepspeed", "zero_stage": 2}
    # bf16 is part of what a resumed run must match; fp32 keeps the fingerprint runs had before the key existed
    assert spec.fingerprint()["precision"] == "bf16"
    assert "precision" not in TrainSpec(name="x", stage_dir="/tmp/x").fingerprint()


def test_worker_threads_follow_the_cpu_claim():
    assert [worker_threads(c) for c in (0.5, 1.0, 1.5, 2.0, 4.0)] == [1, 1, 1, 2, 4]


def test_adamw_is_fused_for_fp32_params_and_updates_like_the_default():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    b.load_state_dict(a.state_dict())
    fused, plain = adamw(list(a.parameters()), 1e-2, 0.1), torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] and not plain.defaults["fused"]
    x = torch.randn(16, 8)
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6) and not torch.equal(p, torch.zeros_like(p))
    half = [torch.nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))]
    assert not adamw(half, 1e-3, 0.0).defaults["fused"]  # not all fp32: the default implementation


def test_adamw_takes_param_groups_with_their_own_lr_and_betas():
    """The PPO policy actor's use: policy and critic in two groups, each with its lr, both fused."""
    torch.manual_seed(0)
    a, b = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    a2, b2 = torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)
    a2.load_state_dict(a.state_dict())
    b2.load_state_dict(b.state_dict())
    groups = [{"params": list(a.parameters()), "lr": 1e-2}, {"params": list(b.parameters()), "lr": 0.0}]
    fused = adamw(groups, 1e-2, 0.0, betas=(0.9, 0.95), eps=1e-8)
    plain = torch.optim.AdamW([{"params": list(a2.parameters()), "lr": 1e-2},
                               {"params": list(b2.parameters()), "lr": 0.0}],
                              lr=1e-2, weight_decay=0.0, betas=(0.9, 0.95), eps=1e-8)
    assert fused.defaults["fused"] and fused.defaults["betas"] == (0.9, 0.95)
    from_generators = adamw([{"params": a.parameters(), "lr": 1e-3}, {"params": b.parameters()}], 1e-2, 0.0)
    assert [len(g["params"]) for g in from_generators.param_groups] == [2, 2]  # not spent by the fused check
    x = torch.randn(16, 8)
    a_before, b_before = ([p.detach().clone() for p in m.parameters()] for m in (a, b))
    for _ in range(3):
        for (m1, m2), opt in (((a, b), fused), ((a2, b2), plain)):
            opt.zero_grad()
            (m1(x) + m2(x)).pow(2).mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), a2.parameters()):
        assert torch.allclose(p, q, atol=1e-6)
    assert not any(torch.equal(p, q) for p, q in zip(a.parameters(), a_before))  # the first group moved
    assert all(torch.equal(p, q) for p, q in zip(b.parameters(), b_before))  # lr 0: the second group did not move


_DEEPSPEED_START = """
import os, sys, torch
from umm_ray.train.levers import import_deepspeed
deepspeed = import_deepspeed()
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=sys.argv[1], RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
deepspeed.init_distributed(dist_backend="gloo", auto_mpi_discovery=False, verbose=False)
model = torch.nn.Linear(4, 1)
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), config={
    "train_micro_batch_size_per_gpu": 2, "train_batch_size": 2, "zero_force_ds_cpu_optimizer": False,
    "zero_optimization": {"stage": 1}, "zero_allow_untested_optimizer": True, "steps_per_print": 10 ** 9})
before = model.weight.detach().clone()
engine.backward(engine(torch.ones(2, 4)).sum())
engine.step()
print("shm_op", deepspeed.comm.comm.cdb.shm_comm_op, "moved", bool((model.weight != before).any()))
"""


def test_import_deepspeed_trains_without_building_the_shm_op(tmp_path):
    """A fresh machine (empty torch extensions cache): DeepSpeed's process group and a ZeRO-1 step work, and no C++
    op is compiled on the way (the build this skips takes 55 s alone on 2 cores)."""
    import os
    import socket
    import subprocess
    import sys
    from importlib import import_module

    ds_torch = import_module("deepspeed.comm.torch")
    # the hook import_deepspeed replaces: if DeepSpeed renames it, the build (and its minute) silently comes back
    assert callable(getattr(ds_torch, "build_shm_op", None)), "deepspeed.comm.torch.build_shm_op is gone"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ext = tmp_path / "torch_extensions"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(ext)}
    out = subprocess.run([sys.executable, "-c", _DEEPSPEED_START, str(port)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "shm_op None moved True" in out.stdout, out.stdout[-2000:]
    built = sorted(p.name for p in ext.rglob("*")) if ext.exists() else []
    assert not any("shm" in name for name in built), built
