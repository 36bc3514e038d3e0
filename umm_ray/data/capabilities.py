"""A user's own task and capability labels for DMoERM, read from columns of their preference file.

Rows are generic pairs `{prompt, chosen, rejected}` plus
    task | category | family   the task (the router's class, one inner model each)
    cap_<name>                 who wins on capability <name>: "chosen" | "rejected" (or 1 | -1); "tie", 0, "" or
                               null give no label for that pair (the user's judge could not tell)
e.g. {"prompt": "...", "chosen": "...", "rejected": "...", "task": "code", "cap_correctness": "chosen",
      "cap_style": "rejected"}.

    table = load_capability_table("prefs.jsonl")
    tasks, caps = user_capability_pairs(train_pairs, table)   # caps[task][capability] -> [PreferencePair]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from umm_ray.data.jsonl import DataError, read_jsonl
from umm_ray.records import PreferencePair

CAP_PREFIX = "cap_"
TASK_KEYS = ("task", "category", "family")
_WIN = {"chosen": 1, "1": 1, "rejected": -1, "-1": -1, "tie": 0, "0": 0, "": 0}

__all__ = ["CapabilityRow", "load_capability_table", "user_capability_pairs", "pair_key"]


@dataclass(frozen=True)
class CapabilityRow:
    """Task and capability verdicts of one pair: wins[cap] = +1 (chosen wins), -1 (rejected wins)."""

    task: str
    wins: tuple[tuple[str, int], ...]
    source: str


def pair_key(p: PreferencePair) -> tuple[str, str, str]:
    return (p.prompt, p.chosen, p.rejected)


def _verdict(value, where: str, col: str) -> int:
    if value is None:
        return 0
    key = str(value).strip().lower() if not isinstance(value, bool) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value in (1, -1, 0):
        return int(value)
    if key in _WIN:
        return _WIN[key]
    raise DataError(where, None, "bad_capability", f"column {col!r}: {value!r} is not chosen|rejected|tie|1|-1|0")


def load_capability_table(path: str | Path) -> dict[tuple[str, str, str], CapabilityRow]:
    """Read task and cap_<name> columns of a jsonl(.gz) file of generic pairs, keyed by (prompt, chosen, rejected).

    Raises:
        DataError: naming file and line, for a row without prompt/chosen/rejected, with an unreadable verdict, or
            when the file has no cap_<name> column at all.
    """
    table: dict[tuple[str, str, str], CapabilityRow] = {}
    seen_caps: set[str] = set()
    for line, row in read_jsonl(path):
        where = f"{path}:{line}"
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise DataError(str(path), line, "not_a_pair", "capability data rows need string prompt, chosen, rejected")
        task = next((str(row[k]) for k in TASK_KEYS if row.get(k)), "")
        wins = tuple(sorted((col[len(CAP_PREFIX):], _verdict(v, where, col)) for col, v in row.items()
                            if col.startswith(CAP_PREFIX)))
        seen_caps.update(c for c, _ in wins)
        table[(row["prompt"], row["chosen"], row["rejected"])] = CapabilityRow(task, wins, where)
    if not seen_caps:
        raise DataError(str(path), None, "no_capabilities", f"no {CAP_PREFIX}<name> columns: DMoERM needs "
                                                            "capability-wise labels (see umm_ray.data.capabilities)")
    return table


def user_capability_pairs(pairs: list[PreferencePair], table: dict[tuple[str, str, str], CapabilityRow],
                          capabilities: tuple[str, ...] = ()
                          ) -> tuple[list[PreferencePair], dict[str, dict[str, list[PreferencePair]]]]:
    """Attach tasks to `pairs` and build capability pairs from the table.

    Args:
        pairs: the training pairs (after the train/val/test split; only these give capability labels).
        table: from `load_capability_table`.
        capabilities: which ones to use; empty = every cap_<name> column seen.

    Returns:
        (pairs with `family` set to their task, {task: {capability: [PreferencePair]}} with every capability key
        present per task).

    Raises:
        ValueError: naming the pair, when neither its row nor the pair itself says which task it belongs to; or a
            requested capability that no row has.
    """
    caps = tuple(capabilities) or tuple(sorted({c for r in table.values() for c, _ in r.wins}))
    known = {c for r in table.values() for c, _ in r.wins}
    missing = [c for c in caps if c not in known]
    if missing:
        raise ValueError(f"capabilities {missing} have no cap_<name> column in the capability data "
                         f"(found: {sorted(known)})")
    tasked, out = [], {}
    for p in pairs:
        row = table.get(pair_key(p))
        task = (row.task if row else "") or p.family
        if not task:
            raise ValueError(f"pair {p.source or p.prompt[:60]!r} has no task: give a task/category column")
        p = PreferencePair(p.prompt, p.chosen, p.rejected, p.source, task)
        tasked.append(p)
        by_cap = out.setdefault(task, {c: [] for c in caps})
        for cap, win in (row.wins if row else ()):
            if cap in by_cap and win:
                a, b = (p.chosen, p.rejected) if win > 0 else (p.rejected, p.chosen)
                by_cap[cap].append(PreferencePair(p.prompt, a, b, source=f"{p.source}#{cap}", family=task))
    return tasked, out
