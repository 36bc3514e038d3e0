"""PPO prompt order and prompt validation.

The order is a pure function of (seed, step): epoch e uses the permutation drawn from `seed + e`, and step s takes the
next `batch_size` prompts from the cursor s * batch_size. A resumed run therefore sees exactly the prompts an
uninterrupted run would, with no state beyond the step itself (the cursor is still saved for inspection).
"""

from __future__ import annotations

import torch

from umm_ray.data.chat import prompts_ids
from umm_ray.records import PromptRecord


class PromptOrderError(ValueError):
    """The prompt set cannot be used for PPO (empty, or prompts that do not fit the context)."""


class PromptStream:
    """Deterministic epoch-wise shuffled batches of prompt indices."""

    def __init__(self, n_prompts: int, batch_size: int, seed: int):
        if n_prompts <= 0:
            raise PromptOrderError("the PPO prompt set is empty")
        self.n, self.batch_size, self.seed = n_prompts, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g).tolist()}  # keep one epoch in memory
        return self._perms[epoch]

    def cursor(self, step: int) -> int:
        """Global position (in prompts drawn) at the start of `step` (0-based)."""
        return step * self.batch_size

    def indices(self, step: int) -> list[int]:
        """Prompt indices for 0-based `step`; batches cross epoch boundaries seamlessly."""
        out = []
        for pos in range(self.cursor(step), self.cursor(step) + self.batch_size):
            out.append(self._perm(pos // self.n)[pos % self.n])
        return out


def validate_prompts(prompts: list[PromptRecord], tokenizer, max_prompt_tokens: int, where: str,
                     chat_template: str = "auto") -> None:
    """Fail before any rollout if the prompt set is empty or a prompt leaves no room for the response.

    Args:
        prompts: the PPO prompts.
        tokenizer: the policy's tokenizer (the rollout engine tokenizes the same way).
        max_prompt_tokens: context length minus max_new_tokens.
        where: the prompt file, for the message.
        chat_template: model.chat_template; lengths count the rendered prompt, as the rollout engine gets it.

    Raises:
        PromptOrderError: naming the file, the first offending prompt's index / source and its length.
    """
    if not prompts:
        raise PromptOrderError(f"{where}: the PPO prompt set is empty")
    if max_prompt_tokens < 1:
        raise PromptOrderError("model.max_seq_len leaves no room for prompts after rollout.max_new_tokens")
    lengths = [len(ids) for ids in prompts_ids(tokenizer, [p.prompt for p in prompts], chat_template)]
    empty = [i for i, n in enumerate(lengths) if n == 0]
    if empty:
        i = empty[0]
        raise PromptOrderError(f"{where}: prompt {i} ({prompts[i].source or 'no source'}) is empty "
                               f"({len(empty)} empty prompts in all)")
    long = [i for i, n in enumerate(lengths) if n > max_prompt_tokens]
    if long:
        i = long[0]
        raise PromptOrderError(
            f"{where}: prompt {i} ({prompts[i].source or 'no source'}) has {lengths[i]} tokens, more than the "
            f"{max_prompt_tokens} that fit (model.max_seq_len - rollout.max_new_tokens); {len(long)} prompts are too "
            f"long. Shorten or filter them, or raise model.max_seq_len.")
