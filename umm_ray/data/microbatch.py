"""Token-budget micro-batches: split a batch so that each piece, padded to its own longest row, fits a token budget.

A batch padded to its longest sequence costs rows x longest tokens of activation memory however short most rows are.
Sorting rows by length and packing neighbours together bounds every piece's padded size by a budget and wastes little
on padding; the training step then accumulates the pieces' gradients (each loss weighted by its share of the batch) so
the optimizer step equals the full batch's. Pure python + torch, no Ray.

    groups = token_budget_groups([5, 60, 7, 58], budget=128)   # [[1, 3], [2, 0]]: 2 x 60 <= 128, 2 x 7 <= 128
    order = restore_order(groups)                               # [3, 0, 2, 1]: cat(outputs of groups)[order]
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["token_budget_groups", "restore_order", "padded_cost", "split_to_count", "right_trimmed"]


Length = int | tuple[int, ...]  # an item's real tokens, or per segment when segments are padded separately


def _width(segment_max: tuple[int, ...]) -> int:
    return max(sum(segment_max), 1)


def token_budget_groups(lengths: Sequence[Length], budget: int, rows_per_item: int = 1) -> list[list[int]]:
    """Partition item indices into groups whose padded cost `rows_per_item * len(group) * width` <= `budget`.

    An item's length is an int (its tokens; width = the group's longest), or a tuple of segment lengths for layouts
    padded per segment (PPO: left-padded prompt, right-padded response; width = the sum of each segment's longest).
    Items are taken longest first (ties by index, so the result is deterministic) and packed greedily: a group is
    closed when one more item would exceed the budget. An item that alone costs more than the budget (a row longer
    than budget / rows_per_item) gets a group of its own, the only case where a group exceeds the budget.

    Args:
        lengths: real tokens of each item (for an item of several rows, e.g. a BT pair, its longest row).
        budget: padded tokens allowed per group (> 0).
        rows_per_item: rows each item puts in the padded tensor (2 for a chosen/rejected pair).

    Returns:
        Groups of indices into `lengths`, each in descending length order; every index is in exactly one group.
    """
    if budget <= 0:
        raise ValueError(f"token_budget_groups: budget must be > 0, got {budget}")
    if rows_per_item < 1:
        raise ValueError(f"token_budget_groups: rows_per_item must be >= 1, got {rows_per_item}")
    segs = [tuple(n) if isinstance(n, (tuple, list)) else (int(n),) for n in lengths]
    if any(n < 0 for s in segs for n in s) or len({len(s) for s in segs}) > 1:
        raise ValueError(f"token_budget_groups: lengths must be non-negative with one segment count: {list(lengths)}")
    order = sorted(range(len(segs)), key=lambda i: (-sum(segs[i]), i))
    groups: list[list[int]] = []
    widest: tuple[int, ...] = ()
    for i in order:
        grown = tuple(map(max, widest, segs[i])) if groups else segs[i]
        if groups and rows_per_item * (len(groups[-1]) + 1) * _width(grown) <= budget:
            groups[-1].append(i)
            widest = grown
        else:
            groups.append([i])
            widest = segs[i]
    return groups


def padded_cost(lengths: Sequence[Length], group: Sequence[int], rows_per_item: int = 1) -> int:
    """Tokens of `group` padded to its widest item (per segment for tuple lengths): rows x len(group) x width."""
    segs = [tuple(lengths[i]) if isinstance(lengths[i], (tuple, list)) else (int(lengths[i]),) for i in group]
    return rows_per_item * len(group) * sum(map(max, zip(*segs))) if segs else 0


def split_to_count(groups: Sequence[Sequence[int]], count: int) -> list[list[int]]:
    """`groups` split further until there are `count` of them: the group with the most items (first of equals) is
    halved each time, so every group stays within the budget it was packed for. Data-parallel ranks use it to run
    the same number of micro-batches (ZeRO's collectives are per backward / per forward). Raises when `count`
    exceeds the number of items or is below len(groups)."""
    out = [list(g) for g in groups]
    if count < len(out) or count > sum(map(len, out)):
        raise ValueError(f"split_to_count: cannot make {count} groups of {len(out)} groups / "
                         f"{sum(map(len, out))} items")
    while len(out) < count:
        k = max(range(len(out)), key=lambda j: (len(out[j]), -j))
        half = (len(out[k]) + 1) // 2
        out[k:k + 1] = [out[k][:half], out[k][half:]]
    return out


def restore_order(groups: Sequence[Sequence[int]]) -> list[int]:
    """Indices that put the concatenated per-group outputs back in the original item order.

    If `out = cat([f(items[g]) for g in groups])`, then `out[restore_order(groups)]` is `f(items)` row for row.
    Raises when the groups are not a partition of 0..n-1.
    """
    flat = [i for g in groups for i in g]
    if sorted(flat) != list(range(len(flat))):
        raise ValueError(f"restore_order: groups {groups!r} are not a partition of 0..{len(flat) - 1}")
    inverse = [0] * len(flat)
    for pos, i in enumerate(flat):
        inverse[i] = pos
    return inverse


def right_trimmed(mask: torch.Tensor) -> int:
    """Columns a right-padded [B, T] mask needs: the last column holding a real token, plus one (>= 1)."""
    cols = mask.any(dim=0).nonzero()
    return int(cols[-1]) + 1 if len(cols) else 1
