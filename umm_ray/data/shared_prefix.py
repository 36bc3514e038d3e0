"""One row per preference pair: the prompt once, then the chosen and the rejected response (`rm.share_prompt`).

A pair's chosen and rejected sequences begin with the same tokens (the chat-templated prompt): in HH harmless pairs
that fit 128 tokens, 35% of all tokens. Scoring them as two rows encodes that prefix twice. Here a pair becomes one
row `prefix + chosen_rest + rejected_rest` with

- position ids `0..P-1, P..P+Lc-1, P..P+Lr-1`: each response continues the prefix as it would in its own row;
- a segment id per token, 0 prefix, 1 chosen, 2 rejected, -1 padding; a token attends to the earlier tokens of the
  prefix and of its own segment (`segment_attention`), so the chosen part never sees the rejected one;
- the reward read at each response's last token (`ends`).

Every token's hidden state then equals the one it has in its own row (up to float summation order), so the BT loss
and its gradient are the two-row ones, on fewer tokens. Pure torch; no model code.
"""

from __future__ import annotations

import torch

__all__ = ["PREFIX", "CHOSEN", "REJECTED", "PAD", "shared_prefix_len", "pack_pairs", "segment_attention"]

PREFIX, CHOSEN, REJECTED, PAD = 0, 1, 2, -1


def shared_prefix_len(a: list[int], b: list[int]) -> int:
    """Tokens `a` and `b` share from the start, leaving each at least its last token (where its reward is read)."""
    n, limit = 0, min(len(a), len(b)) - 1
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def pack_pairs(chosen: list[list[int]], rejected: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs of token id lists -> one right-padded row each.

    Returns:
        ids [B, T] (long), mask [B, T] (1 = real token), positions [B, T] (long; padding 0),
        segments [B, T] (long: PREFIX / CHOSEN / REJECTED / PAD), ends [B, 2] (long: the row index of the chosen's
        and the rejected's last token).
    """
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"pack_pairs needs as many chosen as rejected sequences, at least one: got {len(chosen)} "
                         f"and {len(rejected)}")
    rows = []
    for c, r in zip(chosen, rejected):
        if not c or not r:
            raise ValueError("pack_pairs: an empty token sequence (every chosen and rejected needs >= 1 token)")
        p = shared_prefix_len(c, r)
        rows.append((c[:p], c[p:], r[p:]))
    T = max(len(p) + len(c) + len(r) for p, c, r in rows)
    B = len(rows)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    positions = torch.zeros((B, T), dtype=torch.long)
    segments = torch.full((B, T), PAD, dtype=torch.long)
    ends = torch.zeros((B, 2), dtype=torch.long)
    for i, (p, c, r) in enumerate(rows):
        P, Lc, Lr = len(p), len(c), len(r)
        ids[i, :P + Lc + Lr] = torch.tensor(p + c + r, dtype=torch.long)
        positions[i, :P + Lc] = torch.arange(P + Lc)
        positions[i, P + Lc:P + Lc + Lr] = torch.arange(P, P + Lr)
        segments[i, P:P + Lc] = CHOSEN
        segments[i, :P] = PREFIX
        segments[i, P + Lc:P + Lc + Lr] = REJECTED
        ends[i] = torch.tensor([P + Lc - 1, P + Lc + Lr - 1])
    return {"ids": ids, "mask": (segments != PAD).long(), "positions": positions, "segments": segments, "ends": ends}


def segment_attention(segments: torch.Tensor) -> torch.Tensor:
    """The attention a packed row allows: query i sees key j <= i when j is in the prefix or in i's own segment.

    Args:
        segments: [B, T] segment ids from `pack_pairs` (a trimmed or sliced copy is fine).

    Returns:
        bool [B, 1, T, T], True = attend. A padding query sees only itself, so no softmax row is empty (an empty
        one gives NaN in SDPA); padding keys are seen by no real token.
    """
    T = segments.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    q, k = segments[:, :, None], segments[:, None, :]  # [B, T, 1], [B, 1, T]
    allowed = causal & (q != PAD) & (k != PAD) & ((k == PREFIX) | (k == q))
    allowed |= torch.eye(T, dtype=torch.bool, device=segments.device)  # padding queries: themselves
    return allowed[:, None]
