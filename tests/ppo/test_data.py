"""PPO prompt order: a pure function of (seed, step), each prompt once per epoch; validation before rollout."""

from __future__ import annotations

import pytest

from umm_ray.ppo.data import PromptOrderError, PromptStream, validate_prompts
from umm_ray.records import PromptRecord


def test_each_epoch_is_a_permutation_and_batches_cross_epochs():
    s = PromptStream(10, 4, seed=3)
    drawn = [i for step in range(5) for i in s.indices(step)]  # 20 prompts = 2 epochs exactly
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
    assert drawn[:10] != drawn[10:]  # a new permutation each epoch
    assert s.indices(2) == drawn[8:12]  # step 2 straddles the epoch boundary
    assert s.cursor(3) == 12


def test_order_depends_only_on_seed_and_step():
    a, b = PromptStream(50, 8, seed=1), PromptStream(50, 8, seed=1)
    assert [a.indices(k) for k in range(12)] == [b.indices(k) for k in reversed(range(12))][::-1]
    assert PromptStream(50, 8, seed=2).indices(0) != a.indices(0)


def test_empty_prompt_set_is_an_error():
    with pytest.raises(PromptOrderError, match="empty"):
        PromptStream(0, 4, seed=0)


class _WordTokenizer:
    """Whitespace 'tokenizer' with the HF call signature validate_prompts uses."""

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [t.split() for t in texts]}


def test_validate_prompts_names_the_file_and_prompt():
    tok = _WordTokenizer()
    ok = [PromptRecord("a b c", source="f.jsonl:1")]
    validate_prompts(ok, tok, 3, "f.jsonl")
    with pytest.raises(PromptOrderError, match=r"f.jsonl: the PPO prompt set is empty"):
        validate_prompts([], tok, 3, "f.jsonl")
    long = ok + [PromptRecord("a b c d e", source="f.jsonl:2")]
    with pytest.raises(PromptOrderError, match=r"f.jsonl: prompt 1 \(f.jsonl:2\) has 5 tokens, more than the 3"):
        validate_prompts(long, tok, 3, "f.jsonl")
    with pytest.raises(PromptOrderError, match=r"prompt 1 \(f.jsonl:9\) is empty"):
        validate_prompts(ok + [PromptRecord("  ", source="f.jsonl:9")], tok, 3, "f.jsonl")
