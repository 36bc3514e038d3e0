"""ReferenceActor: frozen log-probs in a real Ray actor, checked against unpadded HF forwards."""

from __future__ import annotations

import pytest
import ray
import torch

from tests.fixtures import SMALL, save_tiny_lm, tiny_corpus, tiny_tokenizer
from umm_ray.ppo.experience import make_policy_batch


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    tok = tiny_tokenizer(tiny_corpus(40, seed=1)[1], vocab_size=300)
    return save_tiny_lm(tmp_path_factory.mktemp("ref"), tok, "qwen2", seed=2, **{**SMALL, "max_seq_len": 64})


PROMPTS = [[5, 6, 7, 8], [9], [10, 11]]
RESPONSES = [[20, 2], [21, 22, 23, 24, 2], [25]]


def _hf_logprobs(path) -> list[list[float]]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for p, r in zip(PROMPTS, RESPONSES):
            logits = model(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1:-1]
            out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None]).squeeze(-1).tolist())
    return out


def test_reference_logprobs_match_unpadded_hf(ray_local, lm_dir):
    from umm_ray.actors.reference import ReferenceActor

    actor = ray.remote(ReferenceActor).options(num_cpus=1).remote(lm_dir, micro_batch_size=2)
    try:
        got = ray.get(actor.logprobs.remote(PROMPTS, RESPONSES))
        want = _hf_logprobs(lm_dir)
        assert [len(g) for g in got] == [len(r) for r in RESPONSES]
        for g, w in zip(got, want):
            assert g == pytest.approx(w, abs=1e-5)
        # The tensor route the driver uses gives the same numbers, zero at padding.
        batch = make_policy_batch(PROMPTS, RESPONSES, pad_id=0)
        tensor = ray.get(actor.logprobs_batch.remote(batch))
        assert tensor.shape == batch.response_mask.shape
        for i, w in enumerate(want):
            assert tensor[i, :len(w)].tolist() == pytest.approx(w, abs=1e-5)
            assert (tensor[i, len(w):] == 0).all()
    finally:
        ray.kill(actor)


def test_reference_loads_remote_code_only_when_trusted(tmp_path):
    """model.trust_remote_code reaches the reference: a checkpoint with its own code loads only with the flag."""
    from umm_ray.actors.reference import ReferenceActor
    from tests.remote_code import save_remote_lm

    path = save_remote_lm(tmp_path / "remote")
    with pytest.raises(ValueError, match="trust_remote_code"):
        ReferenceActor(path)
    ref = ReferenceActor(path, micro_batch_size=2, trust_remote_code=True)
    assert type(ref.model).__name__ == "RemoteLlamaForCausalLM"
    assert [len(r) for r in ref.logprobs(PROMPTS, RESPONSES)] == [len(r) for r in RESPONSES]


def test_reference_rejects_empty_response(ray_local, lm_dir):
    from umm_ray.actors.reference import ReferenceActor

    actor = ray.remote(ReferenceActor).options(num_cpus=1).remote(lm_dir)
    try:
        with pytest.raises(ValueError, match="item 1 has an empty response"):
            ray.get(actor.logprobs.remote([[5], [6]], [[7], []]))
    finally:
        ray.kill(actor)


def test_reference_loads_a_hub_id_policy_from_the_node_cache(ray_local, lm_dir, tmp_path, monkeypatch):
    """ppo.policy_path a hub id: the Ray actor resolves it offline from its node's HF cache and scores as the same
    model loaded from its directory."""
    from tests.fixtures import hub_cache_model, use_hf_cache
    from umm_ray.actors.reference import ReferenceActor

    home = tmp_path / "hf"
    hub_cache_model(home, "org/tiny-policy", lm_dir)
    env = {"env_vars": use_hf_cache(monkeypatch, home)}
    actor = ray.remote(ReferenceActor).options(num_cpus=1, runtime_env=env).remote("org/tiny-policy")
    try:
        got = ray.get(actor.logprobs.remote(PROMPTS, RESPONSES))
    finally:
        ray.kill(actor)
    assert (home / "hub" / ".locks" / "umm_ray" / "org--tiny-policy.lock").exists()  # resolved via `local_model`
    for g, w in zip(got, _hf_logprobs(lm_dir)):
        assert g == pytest.approx(w, abs=1e-4)
