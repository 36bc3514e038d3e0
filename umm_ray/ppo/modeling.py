"""The models PPO trains: the policy (an HF causal LM) and a critic, plus the one forward every PPO actor uses.

Critic design: a separate copy of the policy's backbone (initialised from the policy checkpoint) with a scalar value
head, as in OpenRLHF / verl. A value head on the shared policy trunk would be cheaper, but value-loss gradients would
then move the policy's own features; a separate trunk keeps the policy update pure and keeps the policy module a plain
HF causal LM whose parameter names are exactly what vLLM's `load_weights` and `save_pretrained` expect.
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import nn

from umm_ray.ppo.experience import PolicyBatch, per_token_over_micro_batches


def _hidden_size(config) -> int:
    for key in ("hidden_size", "n_embd", "d_model"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    raise ValueError(f"cannot find the hidden size in the {type(config).__name__} config")


class ActorCritic(nn.Module):
    """Policy LM + critic (backbone copy + value head) in one module, so one DeepSpeed engine trains both.

    Attributes:
        policy: the HF causal LM; its `named_parameters()` are HF names (what weight sync sends).
        critic: the HF base model (no LM head).
        value_head: Linear(hidden, 1), zero-initialised so initial values are 0.
    """

    def __init__(self, policy: nn.Module, critic: nn.Module):
        super().__init__()
        self.policy, self.critic = policy, critic
        self.value_head = nn.Linear(_hidden_size(critic.config), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                prompt_width: int, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Response-position logits and values.

        Args:
            input_ids, attention_mask, position_ids: Tensor[B, P+R] (the PolicyBatch layout).
            prompt_width: P.
            temperature: sampling temperature; logits are divided by it so log-probs match what the rollout sampled.

        Returns:
            logits: Tensor[B, R, V] predicting response tokens 0..R-1.
            values: Tensor[B, R]; values[:, t] = V(state before response token t).
        """
        logits = response_logits(self.policy, input_ids, attention_mask, position_ids, prompt_width, temperature)
        hidden = self.critic(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).last_hidden_state
        values = self.value_head(hidden[:, prompt_width - 1:-1]).squeeze(-1)
        return logits, values.float()


def response_logits(lm: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    position_ids: torch.Tensor, prompt_width: int, temperature: float = 1.0) -> torch.Tensor:
    """Logits at the positions that predict the response tokens: Tensor[B, P+R] inputs -> Tensor[B, R, V] float.

    Only those R positions (plus the last, dropped) go through the LM head when the model takes HF's
    `logits_to_keep`: the prompt's P positions need no [V]-wide logits, and the head is the widest matmul of a small
    model (vocab 49k x hidden 576 in SmolLM2-135M).
    """
    r = input_ids.shape[1] - prompt_width
    keep = {"logits_to_keep": r + 1} if _takes_logits_to_keep(type(lm)) else {}
    out = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **keep)
    logits = out.logits[:, -(r + 1):-1].float()  # positions P-1 .. P+R-2, with or without logits_to_keep
    return logits / temperature if temperature not in (0.0, 1.0) else logits


@functools.cache
def _takes_logits_to_keep(cls: type) -> bool:
    """Whether `cls.forward` accepts `logits_to_keep` (HF causal LMs since transformers 4.50; custom code may not)."""
    return "logits_to_keep" in inspect.signature(cls.forward).parameters


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: Tensor[B, R, V] + Tensor[B, R] long -> Tensor[B, R]."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@torch.no_grad()
def batch_logprobs(lm: nn.Module, batch: PolicyBatch, micro_batch_size: int, temperature: float = 1.0
                   ) -> torch.Tensor:
    """Response log-probs of a frozen LM over a whole batch, in micro-batches: -> Tensor[B, R], 0 at padding."""
    device = next(lm.parameters()).device

    def logprobs(mb: PolicyBatch) -> tuple[torch.Tensor]:
        ids, attn = mb.input_ids.to(device), mb.attention_mask.to(device)
        logits = response_logits(lm, ids, attn, mb.position_ids.to(device), mb.prompt_width, temperature)
        return (gather_logprobs(logits, ids[:, mb.prompt_width:]),)

    return per_token_over_micro_batches(batch, micro_batch_size, logprobs)[0]


def load_actor_critic(policy_path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False
                      ) -> tuple[ActorCritic, object]:
    """Policy, critic and tokenizer from one HF causal-LM checkpoint (dir or hub name). Returns (model, tokenizer)."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer  # heavy: ~3 s; paid on the PPO ranks
    from transformers.utils import logging as hf_logging

    kw = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    hf_logging.disable_progress_bar()
    policy = AutoModelForCausalLM.from_pretrained(policy_path, **kw)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the critic drops the LM head on purpose; its "unexpected key" report is noise
    try:
        critic = AutoModel.from_pretrained(policy_path, **kw)
    finally:
        hf_logging.set_verbosity(level)
    tok = AutoTokenizer.from_pretrained(policy_path, trust_remote_code=trust_remote_code)
    model = ActorCritic(policy, critic)
    disable_dropout(model)
    return model, tok


def disable_dropout(module: nn.Module) -> None:
    """Set every dropout to p=0: PPO's ratio compares train-mode and rollout log-probs, which dropout would skew."""
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
