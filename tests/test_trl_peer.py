"""benchmarks.trl_peer's pure helpers: which pairs fit (as umm_ray encodes them), the per-step pair order both
systems share, real/padded token counts and the rate row (no TRL, no Ray, no model)."""

import pytest

from benchmarks.trl_peer import (check_trl, encode_pair, global_order, layout_name, packed_lengths, parse_layouts,
                                 rate_row, select_fitting, step_tokens, table)
from tests.fixtures import tiny_corpus, tiny_tokenizer
from umm_ray.data.tokenize import encode_texts
from umm_ray.records import PreferencePair
from umm_ray.train.loop import rank_batches


def test_encode_pair_is_what_the_bt_collate_feeds_when_it_fits():
    records, texts = tiny_corpus(8)
    tok = tiny_tokenizer(texts)
    pair = PreferencePair(prompt=records[0].prompt, chosen=" a short answer", rejected=" another, longer answer here",
                          source="t:0")
    c, r = encode_pair(tok, pair, "none")
    assert c[-1] == r[-1] == tok.eos_token_id
    ids, mask = encode_texts(tok, [pair.prompt] * 2, [pair.chosen, pair.rejected], max(len(c), len(r)), "none")
    assert ids[0, :len(c)].tolist() == c and ids[1, :len(r)].tolist() == r
    assert mask.sum(dim=1).tolist() == [len(c), len(r)]


def test_select_fitting_needs_both_rows_within_max_len():
    enc = [([1] * 5, [1] * 5), ([1] * 9, [1] * 3), ([1] * 3, [1] * 9), ([1] * 8, [1] * 8), ([1] * 2, [1] * 2)]
    assert select_fitting(enc, 8, 3) == [0, 3, 4]
    assert select_fitting(enc, 8, 2) == [0, 3]
    with pytest.raises(ValueError, match="only 3 of 5 pairs fit max_len=8; need 4"):
        select_fitting(enc, 8, 4)


def test_global_order_is_every_rank_batch_of_each_step():
    steps = global_order(40, 2, 4, seed=3)
    assert len(steps) == 5 and all(len(s) == 8 for s in steps)
    assert sorted(i for s in steps for i in s) == list(range(40))  # one epoch: each pair once
    r0, r1 = rank_batches(40, 0, 0, 2, 4, 3), rank_batches(40, 0, 1, 2, 4, 3)
    assert steps[1] == r0[1] + r1[1]


def test_step_tokens_counts_real_and_padded_per_group():
    lengths = [(3, 5), (2, 2), (7, 1), (4, 4)]
    [s] = step_tokens(lengths, [[0, 1, 2, 3]], rows_per_pad=2)
    assert s == {"pairs": 4, "real": 28, "padded": 2 * 2 * 5 + 2 * 2 * 7}
    [whole] = step_tokens(lengths, [[0, 1, 2, 3]], rows_per_pad=4)
    assert whole["real"] == 28 and whole["padded"] == 2 * 4 * 7


def test_rate_row_and_table():
    toks = [{"pairs": 16, "real": 1000, "padded": 1500}] * 2
    row = rate_row("umm_ray", "fp32", [2.0, 6.0], toks)
    assert row["s_per_step"] == 4.0 and row["pairs_per_s"] == 4.0 and row["tokens_per_s"] == 250.0
    row["ratio"] = 1.5
    md = table([row])
    assert "| umm_ray | fp32 | 32 | 2000 | 3000 | 4.00 | 4.00 | 250 | 1.50x |" in md


def test_missing_peer_names_the_pip_command(tmp_path):
    with pytest.raises(SystemExit, match="pip install --no-deps --target"):
        check_trl(str(tmp_path / "no_trl_here"))


def test_layouts_use_the_thread_budget_and_split_the_batch():
    assert parse_layouts("2x1, 1x2:1024, 1x2:shared, 1x2:512:shared", threads=2, global_batch=16) == [
        (2, 1, 0, False), (1, 2, 1024, False), (1, 2, 0, True), (1, 2, 512, True)]
    for bad in ("2x2", "3x1", "2by1", "1x2:-5", "1x2:1:2", "1x2:shared:512"):
        with pytest.raises(ValueError, match="--umm"):
            parse_layouts(bad, threads=2, global_batch=16)
    with pytest.raises(ValueError, match="3x1"):  # 16 pairs do not split over 3 workers
        parse_layouts("3x1", threads=3, global_batch=16)
    assert layout_name(1, 2, 1024) == "umm_ray 1x2 mb1024" and layout_name(2, 1, 0) == "umm_ray 2x1"
    assert layout_name(1, 2, 1024, shared=True) == "umm_ray 1x2 mb1024 shared"


def test_step_tokens_with_micro_batches_counts_each_piece_padded_to_its_own_longest():
    lengths = [(30, 10), (5, 5), (28, 2), (6, 4)]
    [whole] = step_tokens(lengths, [[0, 1, 2, 3]], rows_per_pad=4)
    [pieces] = step_tokens(lengths, [[0, 1, 2, 3]], rows_per_pad=4, micro_tokens=120)
    assert whole["padded"] == 2 * 4 * 30
    assert pieces["padded"] == 2 * 2 * 30 + 2 * 2 * 6  # {30, 28} and {6, 5}
    assert pieces["real"] == whole["real"] == 90


def test_step_tokens_of_shared_prompt_rows_count_one_row_per_pair():
    enc = [([1, 2, 3, 4], [1, 2, 9]), ([5, 6], [7, 8, 9])]  # prefixes of 2 and 0 tokens
    assert packed_lengths(enc) == [5, 5]
    lengths = [(4, 3), (2, 3)]
    [s] = step_tokens(lengths, [[0, 1]], rows_per_pad=2, packed=packed_lengths(enc))
    assert s == {"pairs": 2, "real": 12, "padded": 2 * 5}  # real: the work (both rows); padded: what ran
    [two_rows] = step_tokens(lengths, [[0, 1]], rows_per_pad=2)
    assert two_rows["padded"] == 2 * 2 * 4
