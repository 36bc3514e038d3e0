"""The PPO forward: response logits through HF's `logits_to_keep` match slicing the full logits, and micro-batches
trimmed of shared padding match the whole batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from tests.fixtures import save_tiny_lm, tiny_corpus, tiny_tokenizer
from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.ppo.experience import make_policy_batch, micro_batches
from umm_ray.ppo.modeling import _takes_logits_to_keep, batch_logprobs, gather_logprobs, response_logits


class NoKeep(nn.Module):
    """A causal LM whose forward does not take `logits_to_keep` (as some trust_remote_code models): full logits."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids, attention_mask, position_ids, use_cache=False):
        return self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(tiny_corpus(40)[1])


@pytest.mark.parametrize("family", sorted(ARCH_FAMILIES))
def test_response_logits_equal_the_full_forward_sliced(tmp_path, tok, family):
    lm = AutoModelForCausalLM.from_pretrained(save_tiny_lm(tmp_path / family, tok, family=family)).eval()
    assert _takes_logits_to_keep(type(lm)) and not _takes_logits_to_keep(NoKeep)
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 200, (n,), generator=g).tolist() for n in (5, 9, 7)]
    responses = [torch.randint(3, 200, (n,), generator=g).tolist() for n in (4, 1, 6)]
    batch = make_policy_batch(prompts, responses, pad_id=0)  # left-padded prompts, right-padded responses
    args = (batch.input_ids, batch.attention_mask, batch.position_ids, batch.prompt_width)
    with torch.no_grad():
        kept = response_logits(lm, *args, temperature=0.7)
        full = response_logits(NoKeep(lm), *args, temperature=0.7)
        reference = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits[:, batch.prompt_width - 1:-1] / 0.7
    r = batch.input_ids.shape[1] - batch.prompt_width
    assert kept.shape == full.shape == (3, r, lm.config.vocab_size)
    torch.testing.assert_close(kept, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full, reference, rtol=1e-5, atol=1e-5)
    logp = gather_logprobs(kept, batch.input_ids[:, batch.prompt_width:]) * batch.response_mask
    assert torch.isfinite(logp).all() and (logp <= 0).all() and (logp[batch.response_mask.bool()] < 0).all()


@pytest.mark.parametrize("family", sorted(ARCH_FAMILIES))
def test_trimmed_micro_batches_give_the_whole_batch_log_probs(tmp_path, tok, family):
    """batch_logprobs runs micro-batches cut to their own widest prompt and response (`trim_padding`); the log-probs,
    padded back to the batch's width, equal one forward over the whole padded batch."""
    lm = AutoModelForCausalLM.from_pretrained(save_tiny_lm(tmp_path / family, tok, family=family)).eval()
    g = torch.Generator().manual_seed(1)
    # micro-batches of 2: rows (0, 1) have short prompts and responses, so their micro-batch is much narrower
    lengths = [(3, 2), (4, 1), (11, 3), (2, 9), (6, 5)]
    prompts = [torch.randint(3, 200, (p,), generator=g).tolist() for p, _ in lengths]
    responses = [torch.randint(3, 200, (r,), generator=g).tolist() for _, r in lengths]
    batch = make_policy_batch(prompts, responses, pad_id=0)
    with torch.no_grad():
        whole = gather_logprobs(response_logits(lm, batch.input_ids, batch.attention_mask, batch.position_ids,
                                                batch.prompt_width), batch.response_ids) * batch.response_mask
        pieces = batch_logprobs(lm, batch, micro_batch_size=2)
    assert pieces.shape == whole.shape == (5, 9)
    torch.testing.assert_close(pieces, whole, rtol=1e-5, atol=1e-5)
    first = micro_batches(batch, 2)[0]
    assert (first.prompt_width, first.response_mask.shape[1], first.input_ids.shape[1]) == (4, 2, 6)
