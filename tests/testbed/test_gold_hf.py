"""HFGoldScorer: any saved HF sequence classifier as a gold Scorer (real use), checked against a direct forward."""

from __future__ import annotations

import pytest
import torch

from umm_ray.data.tokenize import encode_texts
from umm_ray.testbed.gold import HFGoldScorer, _PlainHFScorer, load_gold
from umm_ray.testbed.models import make_reward_model, save_model
from umm_ray.testbed.tokenizer import train_tokenizer
from umm_ray.testbed.world import make_prompts, sft_responses


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    ps = make_prompts(100, seed=0)
    tok = train_tokenizer([p.prompt for p in ps] + [p.reference for p in ps], 300, None)
    rm = make_reward_model("qwen2", tok, seed=0)
    torch.nn.init.normal_(rm.score.weight, std=1.0)  # a visible score scale (default init gives ~0 for all)
    return save_model(rm, tok, tmp_path_factory.mktemp("gold_rm")), rm, tok


def test_hf_gold_matches_direct_forward(rm_dir):
    path, rm, tok = rm_dir
    ps = make_prompts(12, seed=1)
    prompts = [p.prompt for p in ps]
    responses = [sft_responses(p, 1, i)[0] for i, p in enumerate(ps)]
    ids, mask = encode_texts(tok, prompts, responses, 128)
    with torch.no_grad():
        expected = rm.eval()(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()
    got = load_gold(str(path), max_len=128, batch_size=5).score(prompts, responses)
    assert isinstance(load_gold(str(path)), HFGoldScorer)
    assert got == pytest.approx(expected, abs=1e-5)
    assert len(set(round(x, 4) for x in got)) > 1
    # the self-contained fallback (used before umm_ray.models existed) agrees
    assert _PlainHFScorer(str(path), 128, 5, False).score(prompts, responses) == pytest.approx(expected, abs=1e-5)
