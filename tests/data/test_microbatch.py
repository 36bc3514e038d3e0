"""Token-budget micro-batches: a partition of the rows, each piece within the budget (a lone over-long row apart),
the order restorable, and the PPO layout cut per piece without changing any row's real tokens."""

from __future__ import annotations

import random

import pytest
import torch

from umm_ray.data.microbatch import padded_cost, restore_order, split_to_count, token_budget_groups
from umm_ray.ppo.experience import Experience, make_policy_batch, token_budget_pieces


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("rows_per_item", [1, 2])
def test_groups_partition_rows_within_budget(seed, rows_per_item):
    rng = random.Random(seed)
    lengths = [rng.randint(0, 90) for _ in range(rng.randint(1, 40))]
    budget = rng.choice([16, 64, 100, 256, 1000])
    groups = token_budget_groups(lengths, budget, rows_per_item)
    flat = sorted(i for g in groups for i in g)
    assert flat == list(range(len(lengths)))  # every row in exactly one group
    for g in groups:
        assert len(g) == 1 or padded_cost(lengths, g, rows_per_item) <= budget
        if padded_cost(lengths, g, rows_per_item) > budget:  # only a row that alone exceeds the budget
            assert rows_per_item * max(lengths[g[0]], 1) > budget
    order = restore_order(groups)
    concatenated = [lengths[i] for g in groups for i in g]
    assert [concatenated[j] for j in order] == lengths


def test_groups_pack_sorted_neighbours_and_isolate_long_rows():
    assert token_budget_groups([5, 60, 7, 58], 128) == [[1, 3], [2, 0]]
    assert token_budget_groups([300, 4, 4], 100) == [[0], [1, 2]]  # 300 > budget: a group of its own
    assert token_budget_groups([10, 10], 40, rows_per_item=2) == [[0, 1]]  # 2 pairs x 2 rows x 10 = 40
    assert token_budget_groups([10, 10], 39, rows_per_item=2) == [[0], [1]]
    # segments padded separately: the width is the sum of each segment's longest, not the longest sum
    assert token_budget_groups([(1, 9), (9, 1)], 20) == [[0], [1]]  # together: 2 x (9 + 9) = 36 > 20
    with pytest.raises(ValueError, match="budget must be > 0"):
        token_budget_groups([1], 0)
    with pytest.raises(ValueError, match="not a partition"):
        restore_order([[0], [0]])


def test_split_to_count_keeps_a_partition():
    groups = split_to_count([[0, 1, 2, 3], [4]], 4)
    assert len(groups) == 4 and sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot make 6 groups"):
        split_to_count([[0, 1, 2, 3], [4]], 6)


def test_ppo_pieces_cut_padding_keep_tokens_and_weight_by_response_tokens():
    prompts = [[5, 6, 7], [8], [9, 10, 11, 12], [13, 14]]
    responses = [[20, 21, 2], [22], [23, 24], [25, 26, 27, 2]]
    b = make_policy_batch(prompts, responses, pad_id=0)
    mask = b.response_mask
    exp = Experience(b.input_ids, b.attention_mask, mask, b.prompt_width, old_logprobs=mask * 0.1,
                     old_values=mask * 0.2, advantages=torch.arange(mask.numel()).reshape(mask.shape) * mask,
                     returns=mask * 0.5)
    pieces = token_budget_pieces(exp, budget=12)
    assert abs(sum(w for _, w in pieces) - 1.0) < 1e-9
    seen = []
    for piece, w in pieces:
        assert len(piece) == 1 or piece.input_ids.shape[0] * piece.input_ids.shape[1] <= 12
        assert w == pytest.approx(float(piece.response_mask.sum()) / float(mask.sum()))
        for row in range(len(piece)):
            real = piece.input_ids[row][piece.attention_mask[row] > 0].tolist()
            i = next(k for k in range(4) if prompts[k] + responses[k] == real)  # the row's tokens, unchanged
            seen.append(i)
            r = len(responses[i])
            assert piece.response_ids[row, :r].tolist() == responses[i]
            assert torch.equal(piece.advantages[row, :r], exp.advantages[i, :r])
            assert piece.position_ids[row][piece.attention_mask[row] > 0].tolist() == list(range(len(real)))
    assert sorted(seen) == [0, 1, 2, 3]
    assert len(token_budget_pieces(exp, budget=12, count=4)) == 4
