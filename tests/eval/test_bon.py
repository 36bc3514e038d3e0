"""Best-of-N scoring on a real local Ray cluster with tiny testbed RMs (dense + an ensemble manifest) and the gold."""

import json
import random

import numpy as np
import pytest
import torch

from tests.fixtures import SMALL, save_tiny_rm, tiny_tokenizer, write_manifest
from umm_ray.algo.bon import bon_estimate
from umm_ray.algo.ensemble import aggregate
from umm_ray.config import Config
from umm_ray.eval.bon import BoNSamples, read_bon, run_bon, score_groups, score_samples
from umm_ray.reward_source import RewardSource
from umm_ray.testbed.gold import TestbedGold
from umm_ray.testbed.world import make_prompts, sft_responses


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """6 testbed prompts x 4 SFT responses, a tokenizer, two tiny RMs (seeds 0, 1) and an ensemble manifest."""
    root = tmp_path_factory.mktemp("bon_world")
    records = make_prompts(6, seed=0)
    rng = random.Random(0)
    samples = BoNSamples([r.prompt for r in records], [sft_responses(r, 4, rng) for r in records])
    tok = tiny_tokenizer([p for p in samples.prompts] + [x for rs in samples.responses for x in rs], 300)
    rms = {f"m{seed}": save_tiny_rm(root / f"rm{seed}", tok, seed=seed, **SMALL) for seed in (0, 1)}
    rms["nan"] = save_tiny_rm(root / "rm_nan", tok, seed=2, nan_head=True, **SMALL)  # every score is NaN
    manifest = write_manifest(root / "ensemble.json", ["rm0", "rm1"], aggregate="mean", lam=0.0)
    return {"samples": samples, "rms": rms, "manifest": manifest, "root": root}


def _sources(specs: dict[str, str]) -> dict[str, RewardSource]:
    return {k: RewardSource.parse(v) for k, v in specs.items()}


def test_samples_need_the_same_n():
    with pytest.raises(ValueError, match="same N"):
        BoNSamples(["a", "b"], [["x"], ["y", "z"]])


def test_scorers_share_one_task_per_core_on_a_single_cpu_node(ray_local):
    """ray_local is one CPU node: as many scoring tasks as this machine has cores, every scorer in exactly one."""
    from umm_ray.resources import usable_cores

    groups = score_groups(9)
    assert len(groups) == min(9, usable_cores()) and sorted(i for g in groups for i in g) == list(range(9))
    assert score_groups(1) == [[0]]


def test_score_samples_dense_ensemble_and_gold(ray_local, world):
    cfg = Config()
    samples = world["samples"]
    specs = {"dense": world["rms"]["m0"], "ens-mean": world["manifest"], "ens-wco": world["manifest"] + "#wco",
             "ens-uwo": world["manifest"] + "#uwo:0.5", "other": world["rms"]["m1"]}
    proxy, gold, tput = score_samples(cfg, samples, _sources(specs), RewardSource("testbed"))
    assert gold.shape == (6, 4) and all(v.shape == (6, 4) for v in proxy.values())
    flat_p, flat_r = samples.flat()
    np.testing.assert_allclose(gold.ravel(), TestbedGold().score(flat_p, flat_r))
    # The ensemble aggregates equal aggregating the two members' own scores.
    members = torch.tensor(np.stack([proxy["dense"].ravel(), proxy["other"].ravel()]))
    np.testing.assert_allclose(proxy["ens-mean"].ravel(), aggregate(members, "mean").numpy(), rtol=1e-6)
    np.testing.assert_allclose(proxy["ens-wco"].ravel(), aggregate(members, "wco").numpy(), rtol=1e-6)
    np.testing.assert_allclose(proxy["ens-uwo"].ravel(), aggregate(members, "uwo", 0.5).numpy(), rtol=1e-6)
    assert not np.allclose(proxy["dense"], proxy["other"])  # different seeds really are different RMs
    assert set(tput) == set(specs) | {"gold"} and all(v > 0 for v in tput.values())


def test_run_bon_on_given_samples_writes_outputs(ray_local, world, tmp_path):
    cfg = Config()
    curves = run_bon(cfg, "unused-policy", _sources({"dense": world["rms"]["m0"]}), RewardSource("testbed"),
                     out_dir=tmp_path, samples=world["samples"])
    c = curves["dense"]
    assert c.ns == [1, 2, 4] and c.n_prompts == 6 and c.n_samples == 4
    scores = json.loads((tmp_path / "scores.json").read_text())
    proxy, gold = np.array(scores["proxy"]["dense"]), np.array(scores["gold"])
    for i, n in enumerate(c.ns):
        expected = np.mean([bon_estimate(proxy[k], gold[k], n)[1] for k in range(6)])
        assert c.gold[i] == pytest.approx(expected)
    assert np.all(np.diff(c.proxy) >= -1e-9)  # the expected max of n proxy scores cannot fall with n
    back, meta = read_bon(tmp_path / "bon.json")
    assert back["dense"] == c and meta["n_samples"] == 4 and "dense" in meta["throughput_seq_per_s"]
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 6


def test_bad_rm_path_nan_scores_and_wrong_aggregate_are_named(ray_local, world):
    cfg = Config()
    gold = RewardSource("testbed")
    with pytest.raises(FileNotFoundError, match="RM 'ghost': .*missing does not exist"):
        score_samples(cfg, world["samples"], _sources({"ghost": str(world["root"] / "missing")}), gold)
    with pytest.raises(ValueError, match=r"RM 'broken' \(.*rm_nan\): non-finite scores at samples \[0, 1, 2"):
        score_samples(cfg, world["samples"], _sources({"broken": world["rms"]["nan"]}), RewardSource("testbed"))
    with pytest.raises(ValueError, match="RM 'd': aggregate 'wco' given but .* is not an ensemble"):
        score_samples(cfg, world["samples"], _sources({"d": world["rms"]["m0"] + "#wco"}), RewardSource("testbed"))
