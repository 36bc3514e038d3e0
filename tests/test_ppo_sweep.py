"""benchmarks.ppo_sweep's pure helpers: the grid parser and the gold-curve shape test (no Ray, no models)."""

import math

import pytest

from benchmarks.ppo_sweep import curve_summary, label, parse_grid, parse_worlds, robustness, split_sweep_args
from umm_ray.report.records import PPOCurve
from umm_ray.report.uncertainty import PPOData, ppo_intervals
from umm_ray.report.verdict import never_rose


def rows_from(gold: list[float], std: float = 0.5) -> list[dict]:
    """Metrics rows as the PPO driver logs them (steps from 1), KL growing with the step."""
    return [{"step": i + 1, "gold_reward": g, "gold_reward_std": std, "proxy_reward": 0.1 * i, "kl_k2": 0.1 * i}
            for i, g in enumerate(gold)]


def rise_then_fall(n: int = 40, peak_at: int = 16) -> list[float]:
    """Gold climbing 0.5 -> 0.8 up to `peak_at`, then falling to 0.2: the over-optimisation shape."""
    return [0.5 + 0.3 * i / peak_at if i <= peak_at else 0.8 - 0.6 * (i - peak_at) / (n - 1 - peak_at)
            for i in range(n)]


def test_rise_then_fall_passes():
    s = curve_summary(rows_from(rise_then_fall()), batch_size=64)
    assert s["window"] == 5 and s["steps"] == 40
    assert s["peak_step"] == 17 and s["peak_frac"] == pytest.approx(17 / 40)
    assert s["gold_start"] == pytest.approx(sum(rise_then_fall()[:3]) / 3)  # the smoothed start: steps 1..3
    assert s["rise_ci"][0] > 0 and s["drop_ci"][0] > 0
    assert s["rise_ci"][0] < s["rise"] < s["rise_ci"][1] and s["drop_ci"][0] < s["drop"] < s["drop_ci"][1]
    assert s["rises"] and s["peak_late"] and s["falls"] and s["shape_ok"]
    assert s["proxy_start"] == pytest.approx(0.1) and s["proxy_final"] == pytest.approx(3.8)  # smoothed, edge windows


def test_monotone_fall_fails():
    s = curve_summary(rows_from([0.5 - 0.02 * i for i in range(40)]), batch_size=64)
    assert s["peak_step"] == 1 and s["rise"] == 0 and s["rise_ci"] == [0, 0]
    assert not s["rises"] and not s["peak_late"] and s["falls"] and not s["shape_ok"]


def test_rise_within_noise_fails():
    """A hump 0.2 high clears its CI on 64 responses a step, not on 4."""
    gold = [0.5 + 0.2 * math.sin(math.pi * i / 39) for i in range(40)]
    assert curve_summary(rows_from(gold), batch_size=64)["rises"]
    s = curve_summary(rows_from(gold), batch_size=4)
    assert not s["rises"] and not s["shape_ok"]


def test_early_peak_fails():
    gold = [0.9] * 6 + [0.5] * 34
    s = curve_summary(rows_from(gold), batch_size=64)
    assert s["peak_step"] <= 3 and not s["peak_late"] and not s["shape_ok"]


def test_rises_is_the_reports_never_rose_negated():
    """The sweep's 'rises' column and the compare report's collapse wording read one statistic: for curves either
    side of the noise, the sweep's rise interval is the report's and `rises == not never_rose(rise)`."""
    for gold, batch in ((rise_then_fall(), 64), ([0.5 + 0.03 * math.sin(math.pi * i / 39) for i in range(40)], 16),
                        ([0.5 - 0.01 * i for i in range(40)], 64)):
        rows = rows_from(gold)
        s = curve_summary(rows, batch_size=batch)
        rise = ppo_intervals(PPOData.from_curves([PPOCurve.from_metrics(rows, batch_size=batch)]))["rise"]
        assert [rise.lo, rise.hi] == s["rise_ci"] and rise.value == s["rise"]
        assert s["rises"] == (not never_rose(rise))


def test_grid_points_and_labels():
    pts = parse_grid(["ppo.actor_lr=1e-5,3e-5 ppo.kl_coef=0,0.05", "ppo.kl_coef=0.05 ppo.actor_lr=1e-5",
                      "run.seed=1"])
    assert len(pts) == 5  # 4 from the product, the repeat dropped, 1 seed point
    assert pts[0] == {"ppo.actor_lr": "1e-5", "ppo.kl_coef": "0"}
    assert label(pts[1]) == "actor_lr=1e-5,kl_coef=0.05" and label(pts[-1]) == "seed=1"
    assert parse_grid([]) == [{}] and label({}) == "base"
    assert parse_grid(["resources.policy_cpus=1,2"]) == [{"resources.policy_cpus": "1"}, {"resources.policy_cpus": "2"}]
    for key in ("sft.epochs", "resources.train_cpus"):  # built once with the world: a point could not change it
        with pytest.raises(ValueError, match="not a ppo"):
            parse_grid([f"{key}=1,2"])
    with pytest.raises(ValueError, match="key=v1,v2"):
        parse_grid(["ppo.actor_lr"])


def test_sweep_flags_split_from_job_flags():
    specs, rest, name, worlds = split_sweep_args(["--preset", "tiny", "--sweep.grid", "ppo.kl_coef=0,0.1",
                                                  "--sweep.name", "t", "--ppo.steps", "8", "--sweep.worlds", "0,2"])
    assert specs == ["ppo.kl_coef=0,0.1"] and name == "t" and rest == ["--preset", "tiny", "--ppo.steps", "8"]
    assert worlds == "0,2" and split_sweep_args(["--preset", "tiny"])[3] is None
    with pytest.raises(ValueError, match="unknown sweep flag"):
        split_sweep_args(["--sweep.grd", "x"])


def test_worlds_parse_and_bad_specs_say_what_is_wrong():
    assert parse_worlds(None) == [None] and parse_worlds("3,0,1") == [3, 0, 1]
    for bad, why in (("0,x", "integer seeds"), ("1,1", "repeats"), ("-1,0", "negative")):
        with pytest.raises(ValueError, match=why):
            parse_worlds(bad)


def test_robustness_counts_worlds_per_setting():
    """One row per setting: how many worlds' curves rise, fall and have the whole shape; nothing for one world."""
    shaped = curve_summary(rows_from(rise_then_fall()), batch_size=64)
    falling = curve_summary(rows_from([0.5 - 0.02 * i for i in range(40)]), batch_size=64)
    results = [{"world": w, "setting": st, "summary": s} for w, st, s in (
        (0, "kl_coef=0", shaped), (0, "kl_coef=0.05", shaped), (1, "kl_coef=0", falling), (1, "kl_coef=0.05", shaped),
        (2, "kl_coef=0", falling), (2, "kl_coef=0.05", falling))]
    table = robustness(results).splitlines()
    assert table[0].startswith("Per setting over worlds 0, 1, 2")
    assert table[-2:] == ["| kl_coef=0 | 3 | 1 | 3 | 1 | 0.33 [0.06, 0.79] |",
                          "| kl_coef=0.05 | 3 | 2 | 3 | 2 | 0.67 [0.21, 0.94] |"]
    assert robustness(results[:2]) == "" and robustness([{**r, "world": None} for r in results[:2]]) == ""


@pytest.mark.slow
def test_tiny_world_dense_ppo_gold_rises_then_falls(ray_local, tmp_path):
    """Issue 16's bar for the tiny defaults (docs/ppo-sweep.md): PPO against the dense proxy at the default settings
    (40 steps of 128 prompts, the demo's stress-test run) raises the gold (the report's 95% interval above 0), peaks
    after 10% of the steps, then loses more than its interval. About 5 min on 2 cores (world + one run). The world this
    builds depends on the CPU's fp32 rounding: it passed on the machine the defaults were chosen on, failed on two
    others, and on four worlds of one machine the stress test had the shape on one (docs/ppo-sweep.md, "Four worlds on
    a third machine"). A failure here is that open finding, not a regression; the test stays as the issue's bar."""
    from benchmarks.ppo_sweep import main

    [result] = main(["--preset", "tiny", "--run.output_dir", str(tmp_path), "--sweep.name", "shape"])
    s = result["summary"]
    assert s["rises"] and s["peak_late"] and s["falls"], s
    assert s["proxy_final"] > s["proxy_start"], s  # the proxy keeps climbing while the gold falls: hacking


@pytest.mark.slow
def test_two_worlds_each_built_with_its_seed_and_counted(ray_local, tmp_path):
    """`--sweep.worlds 0,1` on the test preset: each world is built in its own directory with its own run.seed, its PPO
    run is seeded with it, a second call reads both runs back, and the table counts the setting over both worlds.
    About 3 min on 2 cores (two seconds-scale worlds, two 3-step runs)."""
    import json

    from benchmarks.ppo_sweep import main

    argv = ["--preset", "test", "--run.output_dir", str(tmp_path), "--sweep.name", "w", "--sweep.worlds", "0,1"]
    first = main(argv)
    assert [r["label"] for r in first] == ["world=0,base", "world=1,base"]
    assert [r["settings"]["seed"] for r in first] == [0, 1]
    for w in (0, 1):
        done = json.loads((tmp_path / f"world{w}" / "sft" / "_done.json").read_text())
        assert done["inputs"]["config"]["run.seed"] == w
        assert (tmp_path / f"world{w}" / "sweep" / "w" / "base" / "metrics.jsonl").is_file()
    # the two worlds' SFT policies differ, so their first rollouts do too
    assert first[0]["summary"]["gold_step1"] != first[1]["summary"]["gold_step1"]
    again = main(argv)
    assert [r["wall_s"] for r in again] == [r["wall_s"] for r in first]  # read back, not rerun
    table = (tmp_path / "sweep" / "w" / "ppo_sweep.md").read_text()
    assert "Per setting over worlds 0, 1" in table and "| base | 2 |" in table


def test_worlds_refused_for_a_users_own_proxy(tmp_path, capsys):
    """--sweep.worlds builds testbed worlds: with --reward.proxy_path (the user's world) it stops before any compute."""
    from benchmarks.ppo_sweep import main

    with pytest.raises(SystemExit) as e:
        main(["--preset", "tiny", "--run.output_dir", str(tmp_path), "--reward.proxy_path", str(tmp_path / "rm"),
              "--sweep.worlds", "0,1"])
    assert e.value.code == 2 and "the world is your own" in capsys.readouterr().err
    assert not (tmp_path / "world0").exists()
