"""The PPO token layout, shards / micro-batches, and experience assembly (glue over umm_ray.algo)."""

from __future__ import annotations

import pytest
import torch

from umm_ray.config import PPOConfig
from umm_ray.ppo.assemble import build_experience, kl_stats, shape_scores
from umm_ray.ppo.experience import make_policy_batch, micro_batches, pad_ragged, shard, unpad
from umm_ray.algo.ppo import RunningMoments


def test_layout_left_pads_prompts_right_pads_responses():
    b = make_policy_batch([[5, 6], [7]], [[8], [9, 10, 2]], pad_id=0)
    assert b.prompt_width == 2
    assert b.input_ids.tolist() == [[5, 6, 8, 0, 0], [0, 7, 9, 10, 2]]
    assert b.attention_mask.tolist() == [[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]]
    assert b.response_mask.tolist() == [[1, 0, 0], [1, 1, 1]]
    assert b.response_ids.tolist() == [[8, 0, 0], [9, 10, 2]]
    assert b.position_ids.tolist() == [[0, 1, 2, 2, 2], [0, 0, 1, 2, 3]]  # left padding does not shift positions


def test_layout_rejects_empty_rows():
    with pytest.raises(ValueError, match="item 1 has an empty response"):
        make_policy_batch([[1], [2]], [[3], []], pad_id=0)
    with pytest.raises(ValueError, match="item 0 has an empty prompt"):
        make_policy_batch([[]], [[3]], pad_id=0)


def test_shards_are_equal_and_micro_batches_cover_everything():
    b = make_policy_batch([[i + 1] for i in range(6)], [[i + 10] for i in range(6)], pad_id=0)
    parts = shard(b, 3)
    assert [len(p) for p in parts] == [2, 2, 2]
    assert torch.equal(torch.cat([p.input_ids for p in parts]), b.input_ids)
    with pytest.raises(ValueError, match="does not split evenly over 4 ranks"):
        shard(b, 4)
    mbs = micro_batches(b, 4, torch.Generator().manual_seed(0))
    assert [len(m) for m in mbs] == [4, 2]
    assert sorted(torch.cat([m.input_ids[:, 0] for m in mbs]).tolist()) == b.input_ids[:, 0].tolist()


def test_pad_unpad_round_trip():
    rows = [[0.5], [1.0, -2.0, 3.0]]
    mask = torch.tensor([[1.0, 0, 0], [1, 1, 1]])
    assert unpad(pad_ragged(rows, 3), mask) == rows


def test_build_experience_reward_at_last_token_and_whitened_advantages():
    b = make_policy_batch([[1], [2]], [[3, 4], [5, 6, 7]], pad_id=0)
    logp = torch.tensor([[-1.0, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, -2.0, -1.0]])
    values = torch.zeros(2, 3)
    ppo = PPOConfig(gamma=1.0, lam=1.0, whiten_advantages=False)
    exp, stats = build_experience(b, logp, values, ref, torch.tensor([1.0, -1.0]), kl_coef=0.1, ppo=ppo)
    # gamma = lam = 1, V = 0: advantage = reward-to-go = score - beta * remaining log-ratio sum.
    assert exp.advantages[0].tolist() == pytest.approx([1.0 - 0.05, 1.0, 0.0])
    assert exp.advantages[1].tolist() == pytest.approx([-1.0 - 0.1, -1.0 - 0.1, -1.0])
    assert torch.equal(exp.returns, exp.advantages)
    whitened, _ = build_experience(b, logp, values, ref, torch.tensor([1.0, -1.0]), 0.1, PPOConfig())
    real = whitened.advantages[b.response_mask > 0]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6) and real.std().item() == pytest.approx(1.0, abs=1e-4)
    kl = kl_stats(logp, ref, b.response_mask)
    assert kl["kl_k1"] == pytest.approx((0.5 + 1.0) / 2)  # per-sequence sums 0.5 and 1.0, batch mean


def test_shape_scores_normalises_then_clips():
    m = RunningMoments()
    out = shape_scores(torch.tensor([0.0, 10.0, 20.0]), m, PPOConfig(reward_clip=0.5))
    assert out.tolist() == pytest.approx([-0.5, 0.0, 0.5])
    assert m.count == 3
    raw = shape_scores(torch.tensor([3.0]), RunningMoments(), PPOConfig(normalize_reward=False, reward_clip=2.0))
    assert raw.tolist() == [2.0]
