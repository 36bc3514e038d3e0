"""PolicyActor group: two real DeepSpeed ranks over gloo in Ray actors (ZeRO-2, and ZeRO-3 for weight gathering)."""

from __future__ import annotations

import pytest
import ray
import torch

from tests.fixtures import save_tiny_lm, tiny_corpus, tiny_tokenizer
from umm_ray.config import PPOConfig
from umm_ray.ppo.experience import Experience, make_policy_batch

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    """A tiny testbed tokenizer + two-layer Llama causal LM saved as one HF directory."""
    tok = tiny_tokenizer(tiny_corpus(60, seed=0)[1], vocab_size=320)
    return save_tiny_lm(tmp_path_factory.mktemp("policy"), tok, seed=0, hidden_size=64, num_layers=2,
                        intermediate_size=128, max_seq_len=128)


def _batch():
    # 4 sequences of different prompt / response lengths: exercises left and right padding.
    return make_policy_batch([[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]],
                             [[20, 21, 2], [22], [23, 24], [25, 26, 27, 2]], pad_id=0)


def _experience(batch, logp, values) -> Experience:
    mask = batch.response_mask
    adv = torch.linspace(-1, 1, mask.numel()).reshape(mask.shape) * mask
    return Experience(batch.input_ids, batch.attention_mask, mask, batch.prompt_width, old_logprobs=logp,
                      old_values=values, advantages=adv, returns=mask * 0.5)


def _reference_logprobs(model, prompt_ids, response_ids) -> list[list[float]]:
    """Per-sequence, unpadded log-probs straight from HF: the independent check of the padded layout."""
    out = []
    with torch.no_grad():
        for p, r in zip(prompt_ids, response_ids):
            ids = torch.tensor([p + r])
            logits = model(input_ids=ids).logits[0, len(p) - 1:-1]
            out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(r)[:, None]).squeeze(-1).tolist())
    return out


@pytest.fixture(scope="module")
def zero2(ray_local, policy_dir):
    from umm_ray.actors.policy import PolicyGroup

    group = PolicyGroup(policy_dir, PPOConfig(world_size=2, zero_stage=2, micro_batch_size=1, actor_lr=1e-2,
                                              critic_lr=1e-2))
    yield group
    group.shutdown()


def test_forward_matches_unpadded_hf(zero2, policy_dir):
    from transformers import AutoModelForCausalLM

    batch = _batch()
    logp, values = zero2.forward_logprobs_values(batch)
    assert logp.shape == values.shape == batch.response_mask.shape
    hf = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
    responses = [[20, 21, 2], [22], [23, 24], [25, 26, 27, 2]]
    expected = _reference_logprobs(hf, prompts, responses)
    for i, row in enumerate(expected):
        assert torch.allclose(logp[i, :len(row)], torch.tensor(row), atol=1e-5), i
        assert (logp[i, len(row):] == 0).all()
    assert (values == 0).all()  # zero-initialised value head


def test_zero2_train_step_ranks_agree(zero2):
    batch = _batch()
    before = zero2.param_digests()
    logp, values = zero2.forward_logprobs_values(batch)
    stats = zero2.train_step(_experience(batch, logp, values), step=0)
    for key in ("policy_loss", "value_loss", "clip_frac", "entropy", "approx_kl", "grad_norm"):
        assert key in stats and torch.isfinite(torch.tensor(stats[key])), key
    after = zero2.param_digests()
    assert after[0] == pytest.approx(after[1], rel=0, abs=1e-9)  # data-parallel ranks hold identical weights
    assert after[0] != pytest.approx(before[0], rel=0, abs=1e-6)  # and the step changed them
    new_logp, new_values = zero2.forward_logprobs_values(batch)
    assert not torch.allclose(new_logp, logp)
    assert new_values.abs().sum() > 0  # the critic learned something from returns 0.5


def test_state_dict_for_sync_is_hf_named_and_current(zero2, policy_dir):
    from transformers import AutoModelForCausalLM

    state = ray.get(zero2.state_dict_ref())
    hf = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
    assert set(state) == {n for n, _ in hf.named_parameters()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    batch = _batch()
    logp, _ = zero2.forward_logprobs_values(batch)
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
    responses = [[20, 21, 2], [22], [23, 24], [25, 26, 27, 2]]
    for i, row in enumerate(_reference_logprobs(hf, prompts, responses)):
        assert torch.allclose(logp[i, :len(row)], torch.tensor(row), atol=1e-5), i


def test_checkpoint_round_trip_restores_weights_and_optimizer(zero2, tmp_path):
    batch = _batch()
    zero2.save_checkpoint(str(tmp_path / "ck"))
    saved = zero2.param_digests()
    logp, values = zero2.forward_logprobs_values(batch)
    exp = _experience(batch, logp, values)
    first = zero2.train_step(exp, step=1)
    moved = zero2.param_digests()
    zero2.load_checkpoint(str(tmp_path / "ck"))
    assert zero2.param_digests() == pytest.approx(saved, rel=0, abs=1e-9)
    # Same step from the same state (Adam moments included) gives the same update.
    again = zero2.train_step(exp, step=1)
    assert again["policy_loss"] == pytest.approx(first["policy_loss"], abs=1e-6)
    assert zero2.param_digests() == pytest.approx(moved, rel=0, abs=1e-6)


def test_save_hf_loads_without_umm_ray(zero2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    zero2.save_hf(str(tmp_path / "hf"))
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    AutoTokenizer.from_pretrained(tmp_path / "hf")
    state = ray.get(zero2.state_dict_ref())
    for name, p in model.named_parameters():
        assert torch.equal(p.data, state[name]), name


def test_zero3_gathers_full_weights(ray_local, policy_dir):
    """Under ZeRO-3 each rank holds a shard; the sync state dict must still be the full, HF-shaped weights."""
    from transformers import AutoModelForCausalLM

    from umm_ray.actors.policy import PolicyGroup

    group = PolicyGroup(policy_dir, PPOConfig(world_size=2, zero_stage=3, micro_batch_size=1))
    try:
        state = ray.get(group.state_dict_ref())
        hf = AutoModelForCausalLM.from_pretrained(policy_dir)
        for name, p in hf.named_parameters():
            assert state[name].shape == p.shape and torch.equal(state[name], p.data), name
        digests = group.param_digests()
        assert digests[0] == pytest.approx(digests[1], abs=1e-9)
    finally:
        group.shutdown()


def _one_update(policy_dir, **ppo) -> tuple[dict, list[float]]:
    """A fresh 2-rank ZeRO-2 group, one train_step on the 4-row experience: (stats, param digests after it)."""
    from umm_ray.actors.policy import PolicyGroup

    group = PolicyGroup(policy_dir, PPOConfig(zero_stage=2, micro_batch_size=2, actor_lr=1e-2, critic_lr=1e-2,
                                              **{"world_size": 2, **ppo}))
    try:
        batch = _batch()
        logp, values = group.forward_logprobs_values(batch)
        exp = _experience(batch, logp + 0.05 * batch.response_mask, values + 0.1 * batch.response_mask)
        return group.train_step(exp, step=0), group.param_digests()
    finally:
        group.shutdown()


def test_token_budget_update_equals_the_whole_micro_batch_update(ray_local, policy_dir):
    """ppo.micro_batch_tokens splits each rank's micro-batch into pieces (ranks run as many as the rank needing most:
    ZeRO-2 reduces per backward) and accumulates them into the same step: same losses, same pre-clip global
    gradient norm, same weights (fp32); gradient checkpointing of policy and critic changes none of it. bf16
    autocast (fp32 masters) trains with finite losses close to fp32's."""
    plain, plain_digests = _one_update(policy_dir)
    # 13 tokens: rank 0's two rows fit one piece (2 x (3 + 3)), rank 1's need two (2 x (4 + 4) > 13), so rank 0
    # splits its micro-batch too
    pieces, piece_digests = _one_update(policy_dir, micro_batch_tokens=13, grad_checkpointing=True)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm"):
        assert pieces[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-6), key
    assert piece_digests == pytest.approx(plain_digests, rel=0, abs=1e-3)
    assert piece_digests[0] == pytest.approx(piece_digests[1], rel=0, abs=1e-9)
    bf16, bf16_digests = _one_update(policy_dir, world_size=1, precision="bf16", micro_batch_tokens=6)
    assert all(torch.isfinite(torch.tensor(v)) for v in bf16.values())
    assert bf16["policy_loss"] == pytest.approx(plain["policy_loss"], abs=0.05)
    assert bf16_digests[0] != pytest.approx(plain_digests[0], rel=0, abs=1e-9)  # it moved (not the same numbers)


def test_rank_runs_as_many_torch_threads_as_its_cpu_claim(ray_local, policy_dir):
    """resources.policy_cpus sets the rank's torch threads (the whole part, at least 1), like a training worker's."""
    from umm_ray.actors.policy import PolicyGroup
    from umm_ray.resources import RoleResources

    for cpus, threads in ((2.0, 2), (0.5, 1)):
        group = PolicyGroup(policy_dir, PPOConfig(micro_batch_size=2), claim=RoleResources("policy", cpus, 0.0))
        try:
            assert ray.get(group.ranks[0].__ray_call__.remote(lambda self: torch.get_num_threads())) == threads
        finally:
            group.shutdown()


def test_update_threads_apply_to_the_update_only_and_change_no_number(ray_local, policy_dir):
    """ppo.update_threads: a 1-CPU rank updates on that many torch threads and is back on 1 after the update (its
    rollout-time forward shares the cores with the other roles); the update's numbers are those of 1 thread."""
    from umm_ray.actors.policy import PolicyGroup

    def spy(self):  # record the thread count each optimizer step of the update runs with
        update, self.seen = self._update, []
        self._update = lambda mb: (self.seen.append(torch.get_num_threads()), update(mb))[1]

    results = {}
    for update_threads in (0, 2):
        group = PolicyGroup(policy_dir, PPOConfig(micro_batch_size=2, update_threads=update_threads))
        try:
            ray.get(group.ranks[0].__ray_call__.remote(spy))
            batch = _batch()
            logp, values = group.forward_logprobs_values(batch)
            exp = _experience(batch, logp + 0.05 * batch.response_mask, values + 0.1 * batch.response_mask)
            stats = group.train_step(exp, step=0)
            seen, after = ray.get(group.ranks[0].__ray_call__.remote(lambda self: (self.seen, torch.get_num_threads())))
            assert seen == [update_threads or 1] * len(seen) and len(seen) == 2 and after == 1
            results[update_threads] = stats, group.param_digests()
        finally:
            group.shutdown()
    for key, value in results[0][0].items():
        assert results[2][0][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert results[2][1] == pytest.approx(results[0][1], rel=0, abs=1e-5)
