"""benchmarks.length_probe: the probes on scorers whose answers are known, and the join with sweep outcomes."""

from __future__ import annotations

import json

import pytest

from benchmarks.length_probe import probe, rank_correlations, repeat, stress_outcomes


def words(rs):
    return [float(len(r.split())) for r in rs]


def test_repeat_keeps_one_final_stop():
    assert repeat(" red, blue.", 2) == " red, blue, red, blue."
    assert repeat(" a b", 3) == " a b, a b, a b"
    assert repeat(" x.", 1) == " x."
    with pytest.raises(ValueError, match="times must be >= 1"):
        repeat(" x.", 0)


def test_probe_reads_a_length_loving_proxy_against_a_length_hating_gold():
    prompts = ["p"] * 4
    responses = [" a.", " a b.", " a b c.", " a b c d e."]
    out = probe(lambda p, r: words(r), lambda p, r: [-w for w in words(r)], prompts, responses)
    assert out["r_proxy_len"] == pytest.approx(1.0) and out["r_gold_len"] == pytest.approx(-1.0)
    # words: 1, 2, 3, 5 (sd 1.479); said twice they double: mean +2.75 words = +1.859 sd; the gold loses as much
    assert out["repeat2"] == pytest.approx(2.75 / 1.479019945774904) and out["gold_repeat2"] == -out["repeat2"]
    assert out["repeat3"] == pytest.approx(2 * out["repeat2"])
    with pytest.raises(ValueError, match=">= 3"):
        probe(lambda p, r: words(r), lambda p, r: words(r), ["p"], [" a."])


def test_outcomes_join_the_stress_run_of_each_world(tmp_path):
    f = tmp_path / "base" / "sweep" / "s" / "ppo_sweep.json"
    f.parent.mkdir(parents=True)
    summary = {"drop": 0.4, "rise": 0.1, "peak_step": 9, "shape_ok": True}
    f.write_text(json.dumps({"results": [
        {"world": 0, "point": {"ppo.kl_coef": "0.05"}, "summary": {**summary, "drop": 9.0}},
        {"world": 0, "point": {"ppo.kl_coef": "0"}, "summary": summary},
        {"world": 1, "point": {}, "summary": {**summary, "rise": 0.2}}]}))
    got = stress_outcomes([f])
    assert got[(tmp_path / "base" / "world0").resolve()] == summary
    assert got[(tmp_path / "base" / "world1").resolve()]["rise"] == 0.2
    rows = [{"r_proxy_len": float(i), "r_gold_len": 0.0, "len_coef": float(i), "repeat2": float(i),
             "repeat3": float(-i), "gold_repeat2": 0.0, "gold_repeat3": 0.0, "tie_share": 0.1 * i, "pair_margin": 0.5,
             "drop": float(i), "rise": float(i), "peak_step": i} for i in range(5)]
    lines = rank_correlations(rows)
    assert "- repeat2 vs drop: rho +1.00" in "\n".join(lines) and "- repeat3 vs drop: rho -1.00" in "\n".join(lines)
    assert "- r_gold_len: the same on every row, no rank correlation" in lines
    assert "- tie_share vs rise: rho +1.00" in "\n".join(lines)
    assert rank_correlations(rows[:3]) == []


def test_pair_stats_read_the_worlds_pairs_stage(tmp_path):
    from benchmarks.length_probe import pair_stats

    with pytest.raises(SystemExit, match="has no pairs/stats.json"):
        pair_stats(tmp_path)
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "stats.json").write_text(json.dumps({"n_in": 200, "n_ties": 50, "mean_abs_margin": 0.4}))
    assert pair_stats(tmp_path) == {"tie_share": 0.25, "pair_margin": 0.4}


def test_rm_paths_follow_the_compare_layout(tmp_path):
    from benchmarks.length_probe import rm_path

    assert rm_path(tmp_path, "dense") == str(tmp_path / "rm_dense" / "model")
    assert rm_path(tmp_path, "umm-4") == str(tmp_path / "rm_umm4" / "model")
    assert rm_path(tmp_path, "ensemble-wco") == f"{tmp_path / 'rm_ensemble' / 'manifest.json'}#wco"
    with pytest.raises(SystemExit, match="'moe-2' is not dense"):
        rm_path(tmp_path, "moe-2")
