"""The tiny reward model's bf16 training step under DDP in a one-process group, on each device: CPU (gloo) always,
CUDA (NCCL) where a GPU is present. The CUDA case carries the `gpu` marker and skips, saying why, on CPU machines;
`make test` (`-m "not slow"`) selects both cases."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tests.fixtures import SMALL, tiny_corpus, tiny_tokenizer
from umm_ray.algo.bt import bt_loss
from umm_ray.data.tokenize import encode_texts
from umm_ray.testbed.models import make_reward_model
from umm_ray.testbed.world import sft_responses
from umm_ray.train.bt_task import RewardNet

NO_CUDA = "needs a CUDA GPU: torch.cuda.is_available() is False on this machine"
DEVICES = [
    pytest.param("cpu", id="cpu-gloo"),
    pytest.param("cuda", id="cuda-nccl", marks=[pytest.mark.gpu,
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
