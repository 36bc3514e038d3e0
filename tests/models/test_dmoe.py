"""The DMoERM model on the testbed's tiny backbones (pure torch + peft, no Ray): routing dispatch, adapter isolation,
the aggregation MLP's input, save/load, and clear errors."""

from __future__ import annotations

import pytest
import torch

from umm_ray.models.dmoe import (DMoEScorer, LoRASpec, add_aggregators, add_capabilities, is_dmoe_dir, load_dmoe,
                                 load_scorer, new_dmoe, save_dmoe)
from umm_ray.train.dmoe_tasks import PhaseNet

from tests.models.conftest import make_rm

TASKS, CAPS = ["a", "b"], ["x", "y", "z"]
LORA = LoRASpec(r=4, alpha=8.0, dropout=0.0)
PROMPTS = ["the cat sat on", "question one two", "list red blue", "sort five four three"]
RESPONSES = [" the mat", " yes good answer", " green", " three four five"]


def _final(tok, seed: int = 0, stage: str = "final"):
    model = new_dmoe(make_rm("llama", tok, seed=seed), TASKS, CAPS, LORA, seed=seed)
    if stage == "phase1":
        return model
    add_capabilities(model)
    with torch.no_grad():  # trained-looking adapters: LoRA B starts at zero, which would make every expert equal
        g = torch.Generator().manual_seed(seed + 1)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return add_aggregators(model, seed=seed) if stage == "final" else model


def _encode(tok, prompts=PROMPTS, responses=RESPONSES):
    from umm_ray.data.tokenize import encode_texts

    return encode_texts(tok, prompts, responses, max_len=32)


def test_scorer_uses_the_inner_model_of_the_routed_task(tok):
    model = _final(tok).eval()
    ids, mask = _encode(tok)
    with torch.no_grad():
        direct = {t: model.inners[t].reward(ids, mask).tolist() for t in TASKS}
    assert max(abs(u - v) for u, v in zip(direct["a"], direct["b"])) > 1e-3  # the tasks' models really differ
    for ti, task in enumerate(TASKS):
        with torch.no_grad():  # a router that sends everything to task `task`, whatever the prompt
            model.router.head.weight.zero_()
            model.router.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(ti), len(TASKS)) * 10.0)
        scorer = DMoEScorer(model, tok)
        assert scorer.route(PROMPTS) == [task] * len(PROMPTS)
        torch.testing.assert_close(torch.tensor(scorer.score(PROMPTS, RESPONSES)), torch.tensor(direct[task]),
                                   rtol=0, atol=1e-6)
        # one router pass per distinct prompt (PROMPTS twice: still 4), then K adapter passes per response
        scorer.passes = {"router": 0, "inner": 0}
        scorer.score(PROMPTS * 2, RESPONSES * 2)
        assert scorer.passes == {"router": len(PROMPTS), "inner": 2 * len(PROMPTS) * len(CAPS)}


def test_training_one_adapter_changes_only_that_adapter_and_its_head(tok):
    from umm_ray.algo.bt import bt_loss

    net = PhaseNet(_final(tok, stage="phase2"), phase=2).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    ids, mask = _encode(tok, PROMPTS * 2, RESPONSES + RESPONSES[::-1])
    task, cap = torch.full((8,), 1), torch.full((8,), 2)  # task "b", capability "z"
    for _ in range(3):  # LoRA A only gets a gradient once B has left zero
        r = net(ids, mask, task, cap)
        opt.zero_grad(set_to_none=True)
        bt_loss(*r.chunk(2)).backward()
        opt.step()
    changed = {k for k, v in net.state_dict().items() if not torch.equal(v, before[k])}
    mine = {k for k in before if k.startswith("dmoe.inners.b.") and ".z." in k}  # lora_A/B.z, cap_heads.z
    assert mine and changed == mine, sorted(changed ^ mine)[:10]


def test_aggregation_mlp_sees_exactly_k_times_h_features(tok):
    model = _final(tok).eval()
    ids, mask = _encode(tok)
    hidden = model.config.hidden_size
    seen = []
    inner = model.inners["a"]
    handle = inner.agg[0].register_forward_hook(lambda mod, inp, out: seen.append(tuple(inp[0].shape)))
    with torch.no_grad():
        inner.reward(ids, mask)
        feats = inner.features(ids, mask)
        per_cap = [inner.cap_hidden(c, ids, mask) for c in CAPS]
    handle.remove()
    assert seen == [(len(PROMPTS), len(CAPS) * hidden)] and inner.agg[0].in_features == len(CAPS) * hidden
    torch.testing.assert_close(feats, torch.cat(per_cap, dim=-1), rtol=0, atol=0)
    assert all((per_cap[0] - h).abs().max() > 1e-4 for h in per_cap[1:])  # each slot is a different expert


@pytest.mark.parametrize("stage", ["phase1", "phase2", "final"])
def test_save_load_round_trips_every_stage(tok, tmp_path, stage):
    model = _final(tok, stage=stage).eval()
    save_dmoe(model, tok, tmp_path / "m")
    assert is_dmoe_dir(tmp_path / "m") and not is_dmoe_dir(tmp_path)
    loaded, tok2 = load_dmoe(tmp_path / "m")
    assert loaded.spec == model.spec and len(tok2) == len(tok)
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for p in loaded.parameters())
    if stage == "final":
        ours = DMoEScorer(model, tok).score(PROMPTS, RESPONSES)
        theirs = load_scorer(tmp_path / "m").score(PROMPTS, RESPONSES)
        assert max(abs(u - v) for u, v in zip(ours, theirs)) < 1e-5


def test_a_saved_dmoe_dir_is_recognised_by_checkpoint_kind_and_the_generic_load_scorer(tok, tmp_path):
    """The product's loaders (reward actor, eval, BoN, PPO, serve all call `reward_model.load_scorer`) take a DMoERM dir
    unchanged, and `reward.proxy dmoe` checks pass on it (`checkpoint_kind`)."""
    from umm_ray.models import reward_model
    from umm_ray.models.families import DMOE_CONFIG_NAME, checkpoint_kind

    model = _final(tok).eval()
    save_dmoe(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / DMOE_CONFIG_NAME).is_file() and (tmp_path / "m" / "config.json").is_file()
    assert checkpoint_kind(tmp_path / "m") == "dmoe"  # not "dense", although it has a config.json
    scorer = reward_model.load_scorer(tmp_path / "m", max_len=32, batch_size=3)
    assert isinstance(scorer, DMoEScorer) and (scorer.max_len, scorer.batch_size) == (32, 3)
    want = DMoEScorer(model, tok, max_len=32).score(PROMPTS, RESPONSES)
    assert max(abs(u - v) for u, v in zip(scorer.score(PROMPTS, RESPONSES), want)) < 1e-5
    manifest = tmp_path / "manifest.json"  # and as an ensemble member
    manifest.write_text('{"members": ["m"], "scale": [[0, 1]]}')
    ens = reward_model.load_scorer(manifest, max_len=32)
    assert isinstance(ens.members[0].inner, DMoEScorer)  # on the ensemble's scale (here [0, 1]: raw)


def test_bad_inputs_fail_with_clear_messages(tok, tmp_path):
    from umm_ray.models.reward_model import load_reward_model

    with pytest.raises(ValueError, match="dmoe.target_modules .*'q_proj'.* gpt2 backbone; its linear layers are"):
        add_capabilities(new_dmoe(make_rm("gpt2", tok), TASKS, CAPS, LORA))
    with pytest.raises(ValueError, match="tasks must be distinct"):
        new_dmoe(make_rm("llama", tok), ["a", "a"], CAPS, LORA)
    with pytest.raises(ValueError, match="only a 'final' DMoERM scores"):
        DMoEScorer(_final(tok, stage="phase2"), tok)
    with pytest.raises(ValueError, match="at stage 'phase1', not 'phase2'"):
        add_aggregators(_final(tok, stage="phase1"))
    model = _final(tok)
    with pytest.raises(KeyError, match="unknown capability 'w'"):
        model.inners["a"].activate("w")
    save_dmoe(model, tok, tmp_path / "m")
    with pytest.raises(ValueError, match="not a reward model: architectures=\\['DMoERM'\\]"):
        load_reward_model(tmp_path / "m")  # HF loaders refuse a DMoERM dir by name, not by a shape error
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_dmoe(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="not a DMoERM directory"):
        load_dmoe(tmp_path)
