"""A user's task and cap_<name> columns become DMoERM's tasks and capability pairs."""

from __future__ import annotations

import pytest

from umm_ray.data import DataError, load_preferences, write_jsonl
from umm_ray.data.capabilities import load_capability_table, user_capability_pairs

ROWS = [
    {"prompt": "p1", "chosen": "c1", "rejected": "r1", "task": "code", "cap_correct": "chosen",
     "cap_style": "rejected"},
    {"prompt": "p2", "chosen": "c2", "rejected": "r2", "category": "chat", "cap_correct": -1, "cap_style": "tie"},
    {"prompt": "p3", "chosen": "c3", "rejected": "r3", "task": "code", "cap_correct": None, "cap_style": 1},
]


def test_columns_give_tasks_and_capability_pairs(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    pairs = load_preferences(tmp_path / "d.jsonl")
    tasked, caps = user_capability_pairs(pairs, load_capability_table(tmp_path / "d.jsonl"))
    assert [p.family for p in tasked] == ["code", "chat", "code"]
    assert {t: {c: [(p.chosen, p.rejected) for p in v] for c, v in by.items()} for t, by in caps.items()} == {
        "code": {"correct": [("c1", "r1")], "style": [("r1", "c1"), ("c3", "r3")]},
        "chat": {"correct": [("r2", "c2")], "style": []},  # a tie gives no pair: the caller reports it
    }


def test_bad_capability_data_is_named(tmp_path):
    write_jsonl(tmp_path / "none.jsonl", [{k: v for k, v in ROWS[0].items() if not k.startswith("cap_")}])
    with pytest.raises(DataError, match="no cap_<name> columns"):
        load_capability_table(tmp_path / "none.jsonl")
    write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], {**ROWS[1], "cap_style": "maybe"}])
    with pytest.raises(DataError, match="bad.jsonl:2.*'cap_style': 'maybe' is not chosen"):
        load_capability_table(tmp_path / "bad.jsonl")
    write_jsonl(tmp_path / "d.jsonl", ROWS)
    table = load_capability_table(tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match=r"capabilities \['safety'\] have no cap_<name> column"):
        user_capability_pairs(load_preferences(tmp_path / "d.jsonl"), table, ("safety",))
    untasked = [{**r, "task": None, "category": None} for r in ROWS]
    write_jsonl(tmp_path / "u.jsonl", untasked)
    with pytest.raises(ValueError, match="has no task: give a task/category column"):
        user_capability_pairs(load_preferences(tmp_path / "u.jsonl"), load_capability_table(tmp_path / "u.jsonl"))
