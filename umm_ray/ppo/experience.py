"""Typed records the PPO driver passes to the policy and reference actors, and how they are built and split.

Token layout (one for every model forward in PPO): prompts are LEFT-padded to width P and responses RIGHT-padded to
width R, so `input_ids[:, :P]` is the prompt block and `input_ids[:, P:]` the response block. The logits at column
P-1+t predict response token t, so every per-token quantity (log-probs, values, advantages) is a [B, R] tensor aligned
with `response_mask`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from umm_ray.data.microbatch import split_to_count, token_budget_groups


@dataclass
class PolicyBatch:
    """Sequences to run through a causal LM.

    Attributes:
        input_ids: Tensor[B, P+R] long; left-padded prompt then right-padded response.
        attention_mask: Tensor[B, P+R] long; 1 = real token.
        response_mask: Tensor[B, R] float; 1 = real response token (EOS included when generated).
        prompt_width: P.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    prompt_width: int

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def response_ids(self) -> torch.Tensor:
        """Tensor[B, R] long: the response block (pad ids where `response_mask` is 0)."""
        return self.input_ids[:, self.prompt_width:]

    @property
    def position_ids(self) -> torch.Tensor:
        """Tensor[B, P+R] long: positions counting real tokens only, so left padding does not shift the prompt."""
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)


@dataclass
class Experience(PolicyBatch):
    """A PolicyBatch plus everything one PPO update needs; every extra tensor is [B, R] float, zero at padding.

    Attributes:
        old_logprobs: behaviour-policy log-probs of the response tokens (from the training engine at rollout time).
        old_values: critic values at rollout time.
        advantages: GAE advantages (whitened when configured).
        returns: GAE returns (value targets).
    """

    old_logprobs: torch.Tensor = None
    old_values: torch.Tensor = None
    advantages: torch.Tensor = None
    returns: torch.Tensor = None


def make_policy_batch(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int) -> PolicyBatch:
    """Build the [left-padded prompt | right-padded response] layout from id lists.

    Raises:
        ValueError: length mismatch, or an empty prompt / response (index named), which would make the log-prob of
            the first response token undefined.
    """
    if len(prompt_ids) != len(response_ids) or not prompt_ids:
        raise ValueError(f"make_policy_batch: {len(prompt_ids)} prompts vs {len(response_ids)} responses")
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        if not p or not r:
            raise ValueError(f"make_policy_batch: item {i} has an empty {'prompt' if not p else 'response'}")
    B, P, R = len(prompt_ids), max(map(len, prompt_ids)), max(map(len, response_ids))
    ids = torch.full((B, P + R), pad_id, dtype=torch.long)
    attn = torch.zeros((B, P + R), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompt_ids, response_ids)):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        ids[i, P:P + len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, P - len(p):P + len(r)] = 1
    return PolicyBatch(ids, attn, attn[:, P:].float(), P)


def pad_ragged(rows: list[list[float]], width: int) -> torch.Tensor:
    """Ragged per-token floats -> Tensor[B, width] (zero-padded on the right)."""
    out = torch.zeros((len(rows), width), dtype=torch.float32)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.tensor(r, dtype=torch.float32)
    return out


def unpad(x: torch.Tensor, mask: torch.Tensor) -> list[list[float]]:
    """Tensor[B, R] + mask[B, R] -> one list of the real entries per row (inverse of `pad_ragged`)."""
    return [row[m > 0].tolist() for row, m in zip(x, mask)]


def select(batch: PolicyBatch, index: torch.Tensor | slice) -> PolicyBatch:
    """Rows `index` of a PolicyBatch / Experience (same type, every tensor field indexed on dim 0)."""
    updates = {f.name: getattr(batch, f.name)[index] for f in fields(batch)
               if isinstance(getattr(batch, f.name), torch.Tensor)}
    return replace(batch, **updates)


def shard(batch: PolicyBatch, n: int) -> list[PolicyBatch]:
    """Split into `n` equal contiguous shards, one per data-parallel rank.

    Equal sizes matter: under ZeRO-3 every rank must run the same number of forward passes, or the parameter
    all-gathers deadlock.

    Raises:
        ValueError: len(batch) is not divisible by n.
    """
    if len(batch) % n:
        raise ValueError(f"shard: batch of {len(batch)} does not split evenly over {n} ranks; make "
                         f"rollout_batch_size * samples a multiple of ppo.world_size")
    size = len(batch) // n
    return [select(batch, slice(i * size, (i + 1) * size)) for i in range(n)]


def micro_batches(batch: PolicyBatch, size: int, generator: torch.Generator | None = None) -> list[PolicyBatch]:
    """Split into micro-batches of at most `size` rows, shuffled when a generator is given, each cut to its own widest
    prompt and response (`trim_padding`): a batch is padded to its longest response, which a micro-batch of a few
    rows rarely holds, so the forward and backward skip columns that are padding in every row."""
    order = torch.randperm(len(batch), generator=generator) if generator is not None else torch.arange(len(batch))
    return [trim_padding(select(batch, order[i:i + size])) for i in range(0, len(batch), size)]


def trim_padding(batch: PolicyBatch) -> PolicyBatch:
    """The same rows without the columns that are padding in every row: the left of the prompt block and the right of
    the response block. Prompt width P' <= P and response width R' <= R, so `input_ids` [B, P'+R'] and every [B, R']
    tensor stay aligned; positions count real tokens only and padding is masked, so the log-probs and values of the
    real tokens do not change (float rounding aside). Pad per-token results back to R with `pad_columns`."""
    P, R = batch.prompt_width, batch.response_mask.shape[1]
    prompt_cols = batch.attention_mask[:, :P].bool().any(dim=0).nonzero()
    response_cols = (batch.attention_mask[:, P:].bool() | (batch.response_mask > 0)).any(dim=0).nonzero()
    p_w = P - int(prompt_cols[0]) if len(prompt_cols) else 1  # make_policy_batch refuses empty prompts / responses
    r_w = int(response_cols[-1]) + 1 if len(response_cols) else 1
    if (p_w, r_w) == (P, R):
        return batch
    cut = {f.name: getattr(batch, f.name)[:, :r_w] for f in fields(batch)
           if isinstance(getattr(batch, f.name), torch.Tensor) and f.name not in ("input_ids", "attention_mask")}
    return replace(batch, input_ids=batch.input_ids[:, P - p_w:P + r_w],
                   attention_mask=batch.attention_mask[:, P - p_w:P + r_w], prompt_width=p_w, **cut)


def pad_columns(t: torch.Tensor, width: int) -> torch.Tensor:
    """Tensor[b, R'] -> Tensor[b, width] with zeros on the right: a trimmed micro-batch's per-token result back in the
    batch's response width."""
    return torch.nn.functional.pad(t, (0, width - t.shape[1]))


def per_token_over_micro_batches(batch: PolicyBatch, size: int, fn) -> tuple[torch.Tensor, ...]:
    """Run `fn` on each (trimmed, in-order) micro-batch of <= `size` rows and put its per-token results back together.

    Args:
        fn: PolicyBatch [b, P'+R'] -> a tuple of Tensor[b, R'] (log-probs, values, ...).
    Returns:
        One float32 Tensor[B, R] per output of `fn`, on CPU, zero at padding.
    """
    R = batch.response_mask.shape[1]
    parts = [tuple(pad_columns(t.float().cpu(), R) for t in fn(mb)) for mb in micro_batches(batch, size)]
    return tuple(torch.cat(column) * batch.response_mask for column in zip(*parts))


def token_budget_pieces(batch: PolicyBatch, budget: int, count: int | None = None
                        ) -> list[tuple[PolicyBatch, float]]:
    """One optimizer micro-batch in pieces of <= `budget` padded tokens (`token_budget_groups` over each row's
    (prompt, response) lengths), each cut to its own widest prompt and response: prompt width P' and response width
    R' <= the batch's, so `input_ids` [b, P'+R'] and every [b, R'] tensor stay aligned (the columns dropped are
    padding in every row of the piece, so positions and log-probs are unchanged).

    Args:
        batch: a PolicyBatch / Experience of B rows.
        budget: padded tokens per piece (rows x (P' + R')); a row wider than it is a piece of its own.
        count: split further to exactly this many pieces (ranks that must run the same number of passes).

    Returns:
        [(piece, weight)]: weight = the piece's share of the batch's real response tokens, so the weighted sum of
        the pieces' masked-mean losses is the batch's masked-mean loss (`umm_ray.algo.ppo`).
    """
    P = batch.prompt_width
    prompt_len = batch.attention_mask[:, :P].sum(dim=1).tolist()
    resp_len = batch.response_mask.sum(dim=1).round().long().tolist()
    groups = token_budget_groups(list(zip(prompt_len, resp_len)), budget)
    if count is not None:
        groups = split_to_count(groups, count)
    total = max(float(batch.response_mask.sum()), 1.0)
    pieces = [trim_padding(select(batch, torch.tensor(g))) for g in groups]
    return [(piece, float(piece.response_mask.sum()) / total) for piece in pieces]
