"""Held-out metrics of a reward model from its rewards (pure: no model, no Ray)."""

from __future__ import annotations

import pytest
import torch

from umm_ray.train.evaluate import pair_metrics


def test_pair_metrics_keep_per_pair_outcomes_in_split_order():
    rc = torch.tensor([2.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    rr = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    m = pair_metrics(rc, rr, ["a", "a", "b", ""])
    assert m["outcomes"] == [1.0, 0.0, 0.5, 1.0]
    assert m["n"] == 4 and m["accuracy"] == pytest.approx(sum(m["outcomes"]) / 4)
    assert m["accuracy_by_family"] == {"a": 0.5, "b": 0.5, "unknown": 1.0}
    assert m["rewards"] == {"chosen": [2.0, 0.0, 1.0, 3.0], "rejected": [1.0, 1.0, 1.0, 0.0]}
