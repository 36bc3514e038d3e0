"""Packing a preference pair into one row with its prompt once: the layout, and the attention it allows."""

import pytest
import torch

from umm_ray.data.shared_prefix import CHOSEN, PAD, PREFIX, REJECTED, pack_pairs, segment_attention, shared_prefix_len


def test_shared_prefix_leaves_each_sequence_its_last_token():
    assert shared_prefix_len([5, 6, 7, 8], [5, 6, 9]) == 2
    assert shared_prefix_len([5, 6, 7], [5, 6, 7]) == 2  # identical rows: each keeps its last token
    assert shared_prefix_len([5, 6], [5, 6, 7, 8]) == 1  # one is a prefix of the other
    assert shared_prefix_len([4], [4, 5]) == 0


def test_pack_pairs_layout():
    out = pack_pairs([[1, 2, 3, 4], [1, 9]], [[1, 2, 7], [1, 8, 8, 8]], pad_id=0)
    # pair 0: prefix [1, 2], chosen [3, 4], rejected [7]; pair 1: prefix [1], chosen [9], rejected [8, 8, 8]
    assert out["ids"].tolist() == [[1, 2, 3, 4, 7], [1, 9, 8, 8, 8]]
    assert out["positions"].tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 3]]
    assert out["segments"].tolist() == [[PREFIX, PREFIX, CHOSEN, CHOSEN, REJECTED],
                                        [PREFIX, CHOSEN, REJECTED, REJECTED, REJECTED]]
    assert out["ends"].tolist() == [[3, 4], [1, 4]]
    assert out["mask"].tolist() == [[1] * 5, [1] * 5]
    short = pack_pairs([[1, 2]], [[1, 3]], pad_id=0)
    both = pack_pairs([[1, 2], [1, 2, 3, 4]], [[1, 3], [1, 2, 3, 5]], pad_id=0)
    assert both["segments"][0].tolist() == [PREFIX, CHOSEN, REJECTED, PAD, PAD]  # right padding
    assert both["ids"][0, :3].tolist() == short["ids"][0].tolist() and both["mask"][0].tolist() == [1, 1, 1, 0, 0]


def test_pack_pairs_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="as many chosen as rejected"):
        pack_pairs([[1, 2]], [], pad_id=0)
    with pytest.raises(ValueError, match="empty token sequence"):
        pack_pairs([[1, 2]], [[]], pad_id=0)


def test_segment_attention_keeps_the_responses_apart():
    seg = torch.tensor([[PREFIX, PREFIX, CHOSEN, CHOSEN, REJECTED, PAD]])
    a = segment_attention(seg)[0, 0].int().tolist()
    assert a == [[1, 0, 0, 0, 0, 0],
                 [1, 1, 0, 0, 0, 0],
                 [1, 1, 1, 0, 0, 0],
                 [1, 1, 1, 1, 0, 0],
                 [1, 1, 0, 0, 1, 0],  # the rejected token sees the prompt, not the chosen response
                 [0, 0, 0, 0, 0, 1]]  # padding sees only itself: no empty softmax row
