"""One (prompt, response) gets the same token ids in every place that turns text into model input, under
model.chat_template auto and none, on a tiny random-init chat model with the real model's quirks (ChatML template,
eos = pad = <|im_end|>, tied embeddings, 3 KV heads: `tests.fixtures.chat_world`).

Each place is reached through the function the pipeline calls there (SFTTask.collate, sample_responses,
RolloutActor.generate, validate_prompts, make_policy_batch into the reference and the policy, BTTask.collate, the
reward actor's and Best-of-N's scorers built from `spec_settings(cfg)`, the HF gold scorer, and the serve endpoint's
request parsing + `service_of(spec_from_config(cfg))`); the ids each model is given are recorded by a hook on it.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM

from tests.fixtures import chat_world
from umm_ray.config import load_config
from umm_ray.data.chat import prompt_ids, render_prompt, response_ids
from umm_ray.records import PreferencePair, PromptRecord

RESPONSE = " the answer is 42"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return chat_world(tmp_path_factory.mktemp("chat_world"))


def _real(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    """Rows of ids [B, T] without their padding (mask [B, T], 1 = real)."""
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


class InputSpy:
    """Records the unpadded input_ids rows every forward of `module` is given (a forward pre-hook)."""

    def __init__(self, module: torch.nn.Module):
        self.rows: list[list[int]] = []
        self.handle = module.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, _module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.rows += _real(ids, mask if mask is not None else torch.ones_like(ids))


@pytest.fixture
def rm_inputs(monkeypatch):
    """Every row any RewardModelScorer feeds its reward model (wraps `reward_model.reward_forward`)."""
    from umm_ray.models import reward_model

    rows: list[list[int]] = []
    real = reward_model.reward_forward

    def spy(model, ids, mask):
        rows.extend(_real(ids, mask))
        return real(model, ids, mask)

    monkeypatch.setattr(reward_model, "reward_forward", spy)
    return rows


@pytest.mark.parametrize("mode", ["auto", "none"])
def test_one_pair_gets_the_same_tokens_everywhere(world, rm_inputs, monkeypatch, mode):
    from umm_ray.actors.reference import ReferenceActor
    from umm_ray.actors.reward import RewardActor, RewardSpec, spec_settings
    from umm_ray.actors.rollout import RolloutActor
    from umm_ray.eval.bon import score_task
    from umm_ray.ppo.data import PromptOrderError, validate_prompts
    from umm_ray.ppo.experience import make_policy_batch
    from umm_ray.ppo.modeling import load_actor_critic
    from umm_ray.serve.app import service_of, spec_from_config
    from umm_ray.serve.protocol import parse_openrlhf, parse_pairs
    from umm_ray.testbed.gold import HFGoldScorer
    from umm_ray.train.bt_task import BTTask
    from umm_ray.train.sft import SFTExample, SFTTask, sample_responses

    cfg = load_config(None, ["--model.chat_template", mode, "--reward.proxy_path", world["rm"]])
    chat, max_len = cfg.model.chat_template, cfg.model.max_seq_len
    tok = AutoTokenizer.from_pretrained(world["lm"])  # what every place loads from the checkpoint
    prompt = world["prompts"][0]
    want_prompt = prompt_ids(tok, prompt, chat)
    resp = response_ids(tok, RESPONSE)
    want = want_prompt + resp
    raw = tok(prompt, add_special_tokens=False)["input_ids"] + resp
    assert (want != raw) if mode == "auto" else (want == raw)  # auto really templates; none is plain concatenation
    got: dict[str, list[int]] = {}

    # SFT: the training example, and the prompts its gold eval samples from.
    batch = SFTTask(world["lm"], max_len, cfg.model.trust_remote_code, chat).collate([SFTExample(prompt, RESPONSE)])
    got["sft"] = _real(batch["input_ids"], batch["attention_mask"])[0]
    assert (batch["labels"][0] != -100).nonzero()[0].item() == len(want_prompt)  # the loss starts at the response
    seen = []

    def fake_generate(self, input_ids, attention_mask, **kw):
        seen.extend(_real(input_ids, attention_mask))
        return torch.cat([input_ids, torch.full((len(input_ids), 1), tok.eos_token_id)], dim=1)

    with monkeypatch.context() as m:  # only here: the rollout below really generates
        m.setattr(LlamaForCausalLM, "generate", fake_generate)
        sample_responses(world["lm"], [prompt], 4, chat_template=chat)
    got["sft_gold_sampling"] = seen[0] + resp

    # Rollout (HF backend; vLLM is handed the same prompt ids), and PPO's prompt-length check.
    engine = RolloutActor(world["lm"], backend="hf", max_new_tokens=2, seed=0, chat_template=chat)
    roll = engine.generate([prompt], n=1, seed=0)
    got["rollout"] = roll.prompt_ids[0] + resp
    validate_prompts([PromptRecord(prompt)], tok, len(want_prompt), "chat", chat)
    with pytest.raises(PromptOrderError):
        validate_prompts([PromptRecord(prompt)], tok, len(want_prompt) - 1, "chat", chat)

    # PPO log-probs: the driver's batch from the rollout ids, as the reference and the policy see it.
    pb = make_policy_batch(roll.prompt_ids, [resp], tok.pad_token_id)
    ref = ReferenceActor(world["lm"])
    spy = InputSpy(ref.model)
    ref.logprobs_batch(pb)
    got["reference"] = spy.rows[0]
    policy, _ = load_actor_critic(world["lm"])
    spy = InputSpy(policy.policy)
    policy(pb.input_ids, pb.attention_mask, pb.position_ids, pb.prompt_width)
    got["policy"] = spy.rows[0]

    # RM training (Bradley-Terry collate: the chosen row).
    bt = BTTask("dense", world["rm"], cfg.rm.max_len, chat_template=chat).collate(
        [PreferencePair(prompt, RESPONSE, " no idea")])
    got["rm_training"] = _real(bt["ids"], bt["mask"])[0]

    # Scoring: the PPO reward actor and Best-of-N's scoring task (specs from spec_settings(cfg)), an HF gold.
    def scored(where: str, score) -> None:
        del rm_inputs[:]
        score([prompt], [RESPONSE])
        got[where] = rm_inputs[0]

    scored("ppo_reward_actor", RewardActor(RewardSpec.load(world["rm"], "proxy", **spec_settings(cfg))).score)
    bon_spec = RewardSpec.load(world["rm"], "bon:dense", **spec_settings(cfg))
    scored("bon_score_task", lambda p, r: score_task._function([bon_spec], p, r))
    scored("hf_gold", HFGoldScorer(world["rm"], max_len=cfg.rm.max_len, chat_template=chat).score)

    # The serve endpoint: its request parsing, then the replica's service (simple and OpenRLHF forms).
    spec = spec_from_config(cfg)
    service = service_of(spec)
    req = parse_pairs({"prompts": [prompt], "responses": [RESPONSE]}, spec.limits)
    scored("serve_pairs", lambda p, r: service.score_all(req.prompts, req.responses))
    rendered = render_prompt(tok, prompt, chat)  # OpenRLHF sends its own rendering of the prompt, then the EOS
    req = parse_openrlhf({"query": [rendered + RESPONSE + tok.eos_token], "prompts": [rendered]}, spec.limits,
                         service.special_tokens)
    scored("serve_openrlhf", lambda p, r: service.score_all(req.prompts, req.responses))

    wrong = {where: ids for where, ids in got.items() if ids != want}
    assert not wrong, f"{mode}: want {want}, but {sorted(wrong)} differ: {wrong}"
    assert sorted(got) == sorted(["sft", "sft_gold_sampling", "rollout", "reference", "policy", "rm_training",
                                  "ppo_reward_actor", "bon_score_task", "hf_gold", "serve_pairs", "serve_openrlhf"])
