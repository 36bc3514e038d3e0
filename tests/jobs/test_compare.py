"""End to end: a reduced compare (seconds-scale stages) writes the report; a rerun reuses every stage."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "jobs.compare", "--preset", "test", "--run.output_dir", str(out),
           "--run.ray_address", "local", "--rollout.backend", "hf", *extra]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)


def test_reduced_compare_end_to_end(tmp_path):
    out = tmp_path / "run"
    first = _run(out)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-6000:]
    html = out / "report" / "report.html"
    assert html.is_file() and "data:image/png;base64" in html.read_text()
    results = json.loads((out / "report" / "results.json").read_text())["results"]
    names = {r["name"] for r in results}
    assert {"dense", "umm-2", "moe-2", "ensemble-mean", "ensemble-wco", "ensemble-uwo"} <= names
    for r in results:
        assert 0.0 <= r["acc_testbed"] <= 1.0 and r["params"] > 0 and r["bon"] is not None
    assert any(r["ppo"] for r in results)
    dense = next(r for r in results if r["name"] == "dense")
    merged = next(r for r in results if r["name"] == "umm-2")
    assert merged["params"] == dense["params"]  # merged back to the dense size
    # Both PPO runs went through one RolePool: the second reused the first one's actors.
    reused = [json.loads((out / f"ppo_{n}" / "summary.json").read_text())["roles_reused"] for n in ("dense",
                                                                                                   "ensemble-wco")]
    assert reused == [False, True]
    hh_file = ROOT.parent / "shared" / "data" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
    if hh_file.is_file():  # 'auto' finds the real HH pairs beside the clone and scores them
        meta = json.loads((out / "eval" / "eval.json").read_text())["_meta"]
        assert meta["n_pairs"]["hh"] == 500 and meta["hh_source"] == str(hh_file)
        assert all(0.0 <= r["acc_hh"] <= 1.0 for r in results)

    again = _run(out)
    assert again.returncode == 0, again.stderr[-3000:]
    timings = json.loads((out / "compare" / "timings.json").read_text())
    assert all(timings["cached"].values()), timings

    forced = _run(out, "--compare.force", "bon")
    assert forced.returncode == 0, forced.stderr[-3000:]
    cached = json.loads((out / "compare" / "timings.json").read_text())["cached"]
    assert cached["bon"] is False and cached["sft"] is True


def test_bad_flag_fails_before_any_work(tmp_path):
    r = _run(tmp_path / "run", "--ppo.kl_cof", "1")
    assert r.returncode == 2 and "did you mean 'kl_coef'" in r.stderr
    assert not (tmp_path / "run" / "prepare").exists()
