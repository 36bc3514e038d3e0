"""End to end: a reduced compare (seconds-scale stages) writes the report; a rerun reuses every stage."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.fixtures import ROOT, run_job_captured
from umm_ray.report.verdict import METHOD_NAMES as METHOD


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_job_captured("jobs.compare", ["--preset", "test", "--run.output_dir", str(out), "--run.ray_address",
                                             "local", "--rollout.backend", "hf", *extra], timeout=1800)


def n_train(out: Path) -> int:
    return len((out / "pairs" / "pairs_train.jsonl").read_text().splitlines())


def main_table(md: str) -> list[list[str]]:
    """The cells of the report's main table (the first table under Summary), one list per RM row."""
    lines = md.split("| RM | kind | acc test |")[1].split("\n\n")[0].splitlines()[2:]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


CI_CELL = re.compile(r"-?[\d.e+-]+ \[-?[\d.e+-]+, -?[\d.e+-]+\]( \(n=\d+\))?( (std|raw))?( \(BoN\))?")


def test_reduced_compare_end_to_end(tmp_path):
    """Two seeds, stages run three at a time: every estimate in the report carries its interval and every verdict
    word has a significant paired difference behind it; the sequential rerun finds every stage cached."""
    out = tmp_path / "run"
    first = _run(out, "--compare.seeds", "2", "--compare.parallel_stages", "3")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-6000:]
    spans = {p.parent.relative_to(out).as_posix(): json.loads(p.read_text()) for p in out.glob("**/_done.json")}
    rms = [(m["started"], m["finished"]) for n, m in spans.items() if n.rsplit("/", 1)[-1].startswith("rm_")]
    assert any(s2 < f1 and s1 < f2 for i, (s1, f1) in enumerate(rms) for s2, f2 in rms[i + 1:])  # ran concurrently
    for ev in ("eval", "seed1/eval"):  # alone: it times the RMs
        s, f = spans[ev]["started"], spans[ev]["finished"]
        assert not any(n != ev and s < m["finished"] and m["started"] < f for n, m in spans.items()), ev
    assert (out / "seed1" / "rm_dense" / "_done.json").is_file() and not (out / "seed1" / "pairs").exists()
    md = (out / "report" / "report.md").read_text()
    for cells in main_table(md):
        estimates = [c for c in cells[2:] if c != "-"]
        assert all(CI_CELL.fullmatch(c) for c in estimates), cells
        assert cells[2] != "-" and cells[3] != "-" and cells[5] != "-", cells  # acc test, acc gold, BoN gold
    assert "2 seeds (each trains its own RMs" in md and "Noise ceiling: the test labels agree" in md
    assert "Length: on the same test responses the gold's score correlates with word count at r = " in md
    cost = [line for line in md.splitlines() if line.startswith("| dense | dense |") and line.count("|") == 7]
    assert cost and re.fullmatch(r"[+-]\d\.\d\d", cost[0].split("|")[-2].strip()), cost  # score~words r
    manifest = json.loads((out / "rm_ensemble" / "manifest.json").read_text())  # its scale: where the RM came from
    assert 0 < manifest["calibration_pairs"] <= n_train(out)
    assert (f"members standardised on {manifest['calibration_pairs']} calibration pairs: "
            f"means {manifest['scale'][0][0]:.3g}") in md
    intervals = json.loads((out / "report" / "results.json").read_text())["intervals"]
    for name, iv in intervals.items():
        line = md.split(f"**{name}**: ")[1].split("\n")[0]
        for word, method in (("mitigates", "bon"), ("worsens", "bon"), ("mitigates", "ppo"), ("worsens", "ppo")):
            if f"{METHOD[method]}: gold drop vs dense" in line and line.split(f"{METHOD[method]}: ")[1].split(";")[0]\
                    .endswith(f"-> {word}"):
                diff = iv["vs_dense"][f"{method}_drop"]
                assert (diff["hi"] < 0) if word == "mitigates" else (diff["lo"] > 0), (name, line)
    html = out / "report" / "report.html"
    assert html.is_file() and "data:image/png;base64" in html.read_text()
    results = json.loads((out / "report" / "results.json").read_text())["results"]
    names = {r["name"] for r in results}
    assert {"dense", "umm-2", "moe-2", "ensemble-mean", "ensemble-wco", "ensemble-uwo", "dmoe"} <= names  # test preset
    assert next(r for r in results if r["name"] == "dmoe")["kind"] == "dmoe"
    assert "capability labels come from the testbed gold's rubric terms" in (out / "report" / "report.md").read_text()
    n_test = len((out / "pairs" / "pairs_test.jsonl").read_text().splitlines())
    for r in results:  # each accuracy is k of the n_test held-out pairs every RM shares, averaged over 2 seeds
        assert len(r["seeds"]["acc_test"]) == 2 and all(len(x) == n_test for x in r["seeds"]["acc_test"])
        assert 2 * r["acc_testbed"] * n_test == pytest.approx(round(2 * r["acc_testbed"] * n_test), abs=1e-6)
        assert r["params"] > 0 and r["bon"] is not None
    assert any(r["ppo"] for r in results)
    dense = next(r for r in results if r["name"] == "dense")
    merged = next(r for r in results if r["name"] == "umm-2")
    assert merged["params"] == dense["params"]  # merged back to the dense size
    # Both PPO runs went through one RolePool: the second reused the first one's actors.
    reused = [json.loads((out / f"ppo_{n}" / "summary.json").read_text())["roles_reused"] for n in ("dense",
                                                                                                   "ensemble-wco")]
    assert reused == [False, True]
    assert next(r for r in results if r["name"] == "dmoe")["forward_passes"] > 1  # router + capability adapters
    hh_file = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
    if hh_file.is_file():  # 'auto' finds the real HH pairs beside the clone and scores them
        meta = json.loads((out / "eval" / "eval.json").read_text())["_meta"]
        assert meta["n_pairs"]["hh"] == 200 and meta["hh_source"] == str(hh_file)
        assert all(len(r["seeds"]["acc_hh"][0]) == 200 for r in results)

    again = _run(out, "--compare.seeds", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    timings = json.loads((out / "compare" / "timings.json").read_text())
    assert all(timings["cached"].values()), timings

    forced = _run(out, "--compare.seeds", "2", "--compare.force", "bon")
    assert forced.returncode == 0, forced.stderr[-3000:]
    cached = json.loads((out / "compare" / "timings.json").read_text())["cached"]
    assert cached["bon"] is False and cached["sft"] is True


def test_bad_flag_fails_before_any_work(tmp_path):
    r = _run(tmp_path / "run", "--ppo.kl_cof", "1")
    assert r.returncode == 2 and "did you mean 'kl_coef'" in r.stderr
    assert not (tmp_path / "run" / "prepare").exists()


@pytest.fixture(scope="module")
def own_world(tmp_path_factory) -> dict:
    """A user's own inputs, as files: a policy checkpoint, a gold RM checkpoint, preference pairs, prompts."""
    import random

    from umm_ray.data.jsonl import write_jsonl
    from umm_ray.testbed.gold import TestbedGold
    from umm_ray.testbed.models import make_causal_lm, make_reward_model, save_model
    from umm_ray.testbed.prepare import label_pairs
    from umm_ray.testbed.tokenizer import train_tokenizer
    from umm_ray.testbed.world import make_prompts, sft_responses

    root = tmp_path_factory.mktemp("own_world")
    prompts = make_prompts(200, seed=5)
    rng = random.Random(0)
    a, b = zip(*(sft_responses(p, 2, rng) for p in prompts))
    tok = train_tokenizer([p.prompt + r for p, x, y in zip(prompts, a, b) for r in (x, y)], vocab_size=320)
    sizes = dict(hidden_size=64, num_layers=1, intermediate_size=128, max_seq_len=256)
    save_model(make_causal_lm("llama", tok, seed=0, **sizes), tok, root / "policy")
    save_model(make_reward_model("llama", tok, seed=1, **sizes), tok, root / "gold")
    keep = [i for i in range(150) if a[i].strip() and b[i].strip()]  # the SFT data has some empty responses
    pairs, _ = label_pairs([prompts[i] for i in keep], [a[i] for i in keep], [b[i] for i in keep], TestbedGold(),
                           noise=0.1, seed=0)
    write_jsonl(root / "prefs.jsonl", pairs)
    write_jsonl(root / "prompts.jsonl", prompts[150:])
    return {k: str(root / k) for k in ("policy", "gold")} | {"prefs": str(root / "prefs.jsonl"),
                                                             "prompts": str(root / "prompts.jsonl")}


def test_compare_on_own_policy_data_and_gold_skips_the_testbed(tmp_path, own_world):
    out = tmp_path / "own"
    r = _run(out, "--rm.data", own_world["prefs"], "--ppo.policy_path", own_world["policy"], "--ppo.prompts",
             own_world["prompts"], "--reward.gold", own_world["gold"], "--compare.ppo_rms", "dense",
             "--compare.hh_eval", "", "--compare.dmoe", "false")  # dmoe needs task / cap_<name> columns these lack
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    assert not (out / "prepare").exists() and not (out / "sft").exists()
    stats = json.loads((out / "pairs" / "stats.json").read_text())
    assert stats["source"] == own_world["prefs"] and stats["n_train"] + stats["n_val"] + stats["n_test"] > 100
    results = {x["name"]: x for x in json.loads((out / "report" / "results.json").read_text())["results"]}
    assert {"dense", "umm-2", "moe-2", "ensemble-mean"} <= set(results) and results["dense"]["ppo"]
    bon_meta = json.loads((out / "bon" / "bon.json").read_text())
    assert bon_meta["policy"] == own_world["policy"] and bon_meta["gold"] == own_world["gold"]
    rm_eval = json.loads((out / "rm_dense" / "eval.json").read_text())
    assert rm_eval["data"] == own_world["prefs"] and rm_eval["n_pairs"]["test"] == stats["n_test"]


def test_own_data_without_policy_prompts_or_gold_fails_naming_them(tmp_path, own_world):
    r = _run(tmp_path / "run", "--rm.data", own_world["prefs"])
    assert r.returncode == 2
    for flag in ("--ppo.policy_path", "--ppo.prompts", "--reward.gold"):
        assert flag in r.stderr
    assert not (tmp_path / "run").exists()
