"""jobs.rm_table: the accuracy table's rows and intervals from stage summaries (pure), and, slow, the whole table on
gold-labelled testbed pairs through real Ray Train stages, rerun from the stage cache."""

from __future__ import annotations

import json

import pytest

from jobs.common import PRESETS
from jobs.rm_table import markdown, paired_vs, rm_rows
from umm_ray.algo.stats import wilson_interval
from umm_ray.config import load_config

from tests.jobs.test_train_rm import gold_pairs_from_sft_rows, run_job


def _ev(acc: float, n: int, params: int) -> dict:
    return {"val": {"n": n, "accuracy": acc, "bt_loss": 0.6}, "test": {"n": n, "accuracy": acc, "bt_loss": 0.6},
            "params": params}


def test_umm_stage_gives_merged_and_unmerged_rows_with_wilson_intervals():
    ev = {**_ev(0.55, 200, 1000), "moe": _ev(0.6, 200, 3000)}
    merged, moe = rm_rows("umm", 4, {"eval": ev})
    assert merged["rm"] == "umm-4 (merged)" and moe["rm"] == "moe-4 (unmerged, of umm-4)"
    assert merged["params"] == 1000 and moe["params"] == 3000
    ci = wilson_interval(110, 200)
    assert (merged["test"]["lo"], merged["test"]["hi"]) == (ci.lo, ci.hi)
    assert moe["test"]["lo"] < 0.6 < moe["test"]["hi"] and moe["test"]["hi"] - moe["test"]["lo"] < 0.15
    [ens] = rm_rows("ensemble", None, {"eval": {**_ev(0.5, 10, 4), "members": [{}, {}, {}]}})
    assert ens["rm"] == "ensemble-3"
    md = markdown([merged, moe, ens], "setup line")
    assert md.startswith("setup line\n") and f"| umm-4 (merged) | 0.550 [{ci.lo:.3f}, {ci.hi:.3f}] | 200 |" in md


def test_a_tie_counts_half_a_pair():
    [row] = rm_rows("dense", None, {"eval": _ev(0.55, 3, 1)})  # 1.65 of 3 pairs -> 1.5 correct
    ci = wilson_interval(1.5, 3)
    assert (row["test"]["lo"], row["test"]["hi"]) == (ci.lo, ci.hi)


def _with_outcomes(won: list[float]) -> dict:
    ev = _ev(sum(won) / len(won), len(won), 1)
    ev["test"]["outcomes"] = won
    return ev


def test_paired_difference_resolves_what_two_separate_intervals_cannot():
    # 200 shared test pairs: dense wins 110; the UMM wins those same 110 and 20 more (0.55 vs 0.65: the two Wilson
    # intervals overlap), so pair by pair it is never worse, and the paired interval must exclude 0
    dense_won = [1.0] * 110 + [0.0] * 90
    umm_won = [1.0] * 130 + [0.0] * 70
    dense = rm_rows("dense", None, {"eval": _with_outcomes(dense_won)})
    umm = rm_rows("umm", 2, {"eval": _with_outcomes(umm_won)})
    old = rm_rows("umm", 4, {"eval": _ev(0.6, 200, 1)})  # an eval from before per-pair outcomes were kept
    short = rm_rows("umm", 6, {"eval": _with_outcomes(umm_won[:150])})  # other pairs: not comparable
    rows = paired_vs(dense + umm + old + short)
    assert umm[0]["test"]["hi"] > dense[0]["test"]["lo"] and dense[0]["test"]["hi"] > umm[0]["test"]["lo"]
    d = rows[1]["test"]["vs_dense"]
    assert d["value"] == pytest.approx(0.1) and 0.05 < d["lo"] < 0.1 < d["hi"] < 0.15, d
    assert all("vs_dense" not in r["test"] for r in (rows[0], rows[2], rows[3]))
    assert all("outcomes" not in r for r in rows)  # per-pair lists stay in the stages' eval.json, not the table
    md = markdown(rows, "setup")
    assert f"| umm-2 (merged) | 0.650 [{rows[1]['test']['lo']:.3f}, {rows[1]['test']['hi']:.3f}] | 200 | +0.100 [" in md
    assert "| dense | 0.550 [" in md and "| 200 | - | 0.550 |" in md


@pytest.mark.slow
def test_table_trains_every_rm_once_and_reruns_from_cache(ray_local, tmp_path):
    from umm_ray.testbed.prepare import prepare_world

    out = tmp_path / "run"
    common = ["--preset", "test", "--run.output_dir", str(out), "--testbed.n_prompts", "600"]
    world = prepare_world(load_config(None, common[2:], base=PRESETS["test"]))
    prefs = gold_pairs_from_sft_rows(world, tmp_path / "prefs.jsonl", noise=0.1, seed=0)
    args = [*common, "--run.ray_address", ray_local.get_runtime_context().gcs_address, "--rm.data", str(prefs),
            "--rm.base_path", str(world.base), "--rm.epochs", "2", "--compare.expert_counts", "2",
            "--ensemble.members", "2", "--moe.top_k", "1", "--compare.dmoe", "false"]
    log = run_job("jobs.rm_table", args, tmp_path / "table.log")
    table = json.loads((out / "rm_table" / "table.json").read_text())
    names = [r["rm"] for r in table["rows"]]
    dense = table["rows"][0]["test"]
    assert names == ["dense", "umm-2 (merged)", "moe-2 (unmerged, of umm-2)", "ensemble-2"], names
    for r in table["rows"]:
        t = r["test"]
        assert t["n"] > 80 and t["lo"] < t["accuracy"] < t["hi"]
        if r["rm"] != "dense":  # every stage's eval kept its per-pair outcomes on the same test pairs
            d = t["vs_dense"]
            assert d["lo"] <= d["value"] <= d["hi"] and d["value"] == pytest.approx(t["accuracy"] - dense["accuracy"])
    assert dense["accuracy"] > 0.55, dense  # gold-labelled pairs at 10% noise: well above chance
    assert "| dense |" in (out / "rm_table" / "table.md").read_text() and "| dense |" in log
    again = run_job("jobs.rm_table", args, tmp_path / "again.log")
    assert all(f"[stage {s}] cached" in again for s in ("pairs", "rm_dense", "rm_umm2", "rm_ensemble")), again[-2000:]
