"""DMoERM on a real local Ray cluster with the tiny testbed world: inputs per task and capability, bad inputs failing
before compute, and the whole training (router + three phases) beating its untrained self on held-out pairs, with the
saved directory scoring identically in a fresh interpreter without Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from umm_ray.config_dmoe import DMoEConfig
from umm_ray.testbed.capabilities import CAPABILITIES
from umm_ray.testbed.world import TASK_FAMILIES
from umm_ray.train.dmoe import dmoe_inputs, train_dmoe
from umm_ray.train.reward import load_rm_data

FAST = ("--rm.num_workers", "2", "--rm.batch_size", "8", "--rm.checkpoint_every", "1000")
# r 32 on a hidden size of 128 would be a quarter-rank adapter; ~60 phase-1 pairs per task need a few epochs
SMALL = DMoEConfig(lora_r=8, lora_alpha=8.0, phase1_epochs=6, phase2_epochs=4, phase3_epochs=6)


@pytest.fixture(scope="module")
def data(tiny_world):
    cfg, world = tiny_world
    return load_rm_data(cfg, world)


def test_inputs_cover_every_task_and_capability_with_disjoint_phases(tiny_world, data):
    cfg, _ = tiny_world
    inp = dmoe_inputs(cfg, SMALL, data.train)
    assert inp.tasks == tuple(sorted(TASK_FAMILIES)) and inp.capabilities == CAPABILITIES
    assert {e.task for e in inp.router} == set(range(4))
    assert sorted(e.prompt for e in inp.router) == sorted({p.prompt for p in data.train})
    for ti, task in enumerate(inp.tasks):
        first = {e.prompt for e in inp.phase1 if e.task == ti}
        rest = {e.prompt for e in inp.phase3 if e.task == ti}
        assert first and rest and not first & rest
        n = sum(e.task == ti for e in inp.phase1 + inp.phase3)
        assert n == sum(p.family == task for p in data.train)
        assert 0.45 < len([e for e in inp.phase1 if e.task == ti]) / n < 0.75  # phase1_frac 0.6, split by prompt
        assert all(inp.capability_counts[task][c] > 0 for c in CAPABILITIES)
    assert {(e.task, e.cap) for e in inp.phase2} == {(t, c) for t in range(4) for c in range(len(CAPABILITIES))}
    assert all(e.cap == -1 for e in inp.phase1 + inp.phase3)


def test_a_users_task_and_capability_columns_drive_the_inputs(make_cfg, tmp_path):
    from umm_ray.data import write_jsonl

    rows = [{"prompt": f"q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}", "category": ("chat", "code")[i % 2],
             "cap_helpful": "chosen", "cap_safe": ("rejected" if i % 3 else "tie")} for i in range(60)]
    write_jsonl(tmp_path / "prefs.jsonl", rows)
    cfg = make_cfg(tmp_path / "run", "--rm.data", str(tmp_path / "prefs.jsonl"))
    data = load_rm_data(cfg)
    inp = dmoe_inputs(cfg, DMoEConfig(), data.train)
    assert inp.tasks == ("chat", "code") and inp.capabilities == ("helpful", "safe")
    assert len(inp.phase1) + len(inp.phase3) == len(data.train)
    safe = [e for e in inp.phase2 if e.cap == 1]
    assert safe and all(e.chosen.startswith(" bad") for e in safe)  # cap_safe says the rejected response wins
    for r in rows:
        if r["category"] == "code":
            r["cap_safe"] = None
    write_jsonl(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(ValueError, match="task 'code' has no preference pairs for capability 'safe'"):
        dmoe_inputs(cfg, DMoEConfig(), load_rm_data(cfg).train)


def test_a_task_without_data_or_a_capability_without_pairs_stops_before_compute(tiny_world, data, tmp_path):
    cfg, world = tiny_world
    with pytest.raises(ValueError, match="task 'poetry' has 0 training pairs"):
        train_dmoe(cfg, data, tmp_path / "a", layout=world, source=world.base,
                   dmoe=DMoEConfig(tasks=[*TASK_FAMILIES, "poetry"]))
    with pytest.raises(ValueError, match="no preference pairs for capability 'coverage'"):
        train_dmoe(cfg, data, tmp_path / "b", layout=world, source=world.base, dmoe=DMoEConfig(near_tie=5.0))
    with pytest.raises(ValueError, match="training pairs have tasks .* that dmoe.tasks"):
        train_dmoe(cfg, data, tmp_path / "c", layout=world, source=world.base, dmoe=DMoEConfig(tasks=["list"]))
    assert not any((tmp_path / d).exists() for d in "abc")


def test_trained_dmoe_beats_its_untrained_self_and_reloads_without_ray(ray_local, tiny_world, make_cfg, data,
                                                                       tmp_path):
    cfg, world = tiny_world
    cfg = make_cfg(cfg.run.output_dir, *FAST, "--testbed.label_noise", "0.1")
    model_dir, ev = train_dmoe(cfg, data, tmp_path / "dmoe", layout=world, source=world.base, dmoe=SMALL)
    assert model_dir == tmp_path / "dmoe" / "model"
    assert json.loads((tmp_path / "dmoe" / "eval.json").read_text()) == json.loads(json.dumps(ev))
    pooled = ev["vs_initial"]["held_out"]  # paired over every val and test pair: accuracy(trained - untrained)
    assert pooled["n"] == len(data.val) + len(data.test)
    assert pooled["gain"] > pooled["se"] > 0, (pooled, {s: (ev[s]["accuracy"], ev["initial"][s]["accuracy"])
                                                        for s in ("val", "test")})
    for split in ("val", "test"):
        assert ev["vs_initial"][split]["gain"] > 0, (split, ev["vs_initial"][split])
        assert ev[split]["routing_accuracy"] > 0.95  # the router sends each family to its own inner model
    for name, run in ev["runs"].items():
        assert len(run["loss_curve"]) == run["steps"] > 0, name

    # A fresh interpreter scores from the directory alone, without importing Ray.
    from umm_ray.models.dmoe import load_scorer

    pairs = data.test[:12]
    prompts, responses = [p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]
    ours = load_scorer(model_dir).score(prompts, responses)
    code = ("import json, sys; from umm_ray.models.dmoe import load_scorer\n"
            "s = load_scorer(sys.argv[1]).score(*json.loads(sys.argv[2]))\n"
            "assert 'ray' not in sys.modules, 'scoring imported ray'\n"
            "print(json.dumps(s))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code, str(model_dir), json.dumps([prompts, responses])], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    assert max(abs(a - b) for a, b in zip(ours, theirs)) < 1e-5
