"""Per-role resources: resolution and inheritance, the rank-group rules, colocation layouts, stage keys at defaults,
and a real Ray cluster placing a colocated policy group (ranks and reference in the same bundle, on the same GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.common import PRESETS
from umm_ray import stages as S
from umm_ray.config import ConfigError, load_config
from umm_ray.graph import compare_rms
from umm_ray.pipeline import declared_reads
from umm_ray.resources import GiB, RoleResources, ppo_layout, resource_reads, role_resources, train_resources

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_reproduce_the_run_keys_for_every_role():
    cfg = load_config()
    for role in ("policy", "rollout", "reference", "proxy", "gold", "train"):
        assert role_resources(cfg, role) == RoleResources(role, 1.0, 0.0)
    assert role_resources(cfg, "gold").options() == {"num_cpus": 1.0, "num_gpus": 0.0}  # as before: no extra keys
    layout = ppo_layout(cfg)
    assert layout.bundles == ({"CPU": 1.0},) and layout.strategy == "PACK" and not layout.slots
    assert train_resources(cfg) == {"use_gpu": False, "worker": RoleResources("train", 1.0, 0.0),
                                    "placement_strategy": "PACK"}


def test_roles_inherit_run_values_unless_set():
    cfg = load_config(None, ["--run.num_gpus_per_actor", "1", "--run.num_cpus_per_actor", "3",
                             "--resources.gold_gpus", "1", "--resources.gold_memory_gb", "2",
                             "--resources.gold_accelerator", "A100-80G", "--resources.proxy_gpus", "0.25",
                             "--resources.train_cpus", "6"])
    assert role_resources(cfg, "policy") == RoleResources("policy", 3.0, 1.0)
    assert role_resources(cfg, "proxy") == RoleResources("proxy", 3.0, 0.25)
    gold = role_resources(cfg, "gold")
    assert gold == RoleResources("gold", 3.0, 1.0, 2 * GiB, "A100-80G")
    assert gold.options() == {"num_cpus": 3.0, "num_gpus": 1.0, "memory": 2 * GiB, "accelerator_type": "A100-80G"}
    assert gold.bundle() == {"CPU": 3.0, "GPU": 1.0, "memory": float(2 * GiB), "accelerator_type:A100-80G": 0.001}
    assert role_resources(cfg, "train").cpus == 6.0
    # a GPU rank group must not be split over nodes: STRICT_PACK, for the policy and for Ray Train workers
    assert ppo_layout(cfg).strategy == "STRICT_PACK"
    assert train_resources(cfg, "SPREAD")["placement_strategy"] == "STRICT_PACK"


@pytest.mark.parametrize("args, key", [
    (["--run.num_gpus_per_actor", "0.5", "--ppo.world_size", "2", "--sft.num_workers", "1", "--rm.num_workers", "1"],
     r"resources.policy_gpus \(inherited from run.num_gpus_per_actor\): 0.5 .*ppo.world_size=2"),
    (["--resources.train_gpus", "0.5", "--sft.num_workers", "2"], r"resources.train_gpus: 0.5 .*sft.num_workers=2"),
    (["--resources.gold_gpus", "1.5"], "resources.gold_gpus: 1.5 GPUs per actor; above one GPU it must be a whole"),
    (["--resources.colocate", "actor_ref", "--resources.policy_gpus", "0.75", "--resources.reference_gpus", "0.5"],
     r"colocate=actor_ref: bundle 0 holds policy, reference .* = 1.25 > 1"),
    (["--resources.colocate", "all", "--rollout.num_engines", "2"], "rollout.num_engines=2 exceeds ppo.world_size=1"),
    (["--resources.colocate", "actor_ref", "--resources.policy_accelerator", "A100",
      "--resources.reference_accelerator", "H100"], "different accelerator types"),
])
def test_bad_resources_stop_at_load_naming_the_key(args, key):
    with pytest.raises(ConfigError, match=key):
        load_config(None, args)


def test_fractional_rank_shares_are_fine_when_colocation_gives_each_rank_a_gpu():
    cfg = load_config(None, ["--resources.colocate", "all", "--ppo.world_size", "2", "--rollout.num_engines", "2",
                             "--resources.policy_gpus", "0.5", "--resources.reference_gpus", "0.2",
                             "--resources.rollout_gpus", "0.3", "--resources.policy_cpus", "2"])
    layout = ppo_layout(cfg)
    assert layout.strategy == "STRICT_PACK" and layout.members == (("policy", "reference", "rollout"),
                                                                   ("policy", "rollout"))
    assert [b["GPU"] for b in layout.bundles] == [1.0, 1.0]  # whole GPUs: no two ranks on one device
    assert [b["CPU"] for b in layout.bundles] == [4.0, 3.0]
    assert (layout.slot("reference", 0), layout.slot("rollout", 1), layout.slot("proxy", 0)) == (0, 1, None)
    # on CPU the same layout shares CPUs only, and packs loosely as before
    cpu = load_config(None, ["--resources.colocate", "actor_ref"])
    assert ppo_layout(cpu).bundles == ({"CPU": 2.0},) and ppo_layout(cpu).strategy == "PACK"


def _stage_reads(cfg) -> dict[str, tuple[str, ...]]:
    proxy = S.Proxy(S.RewardSource("x/model"), "rm_dense", "dense")
    return {"sft": declared_reads(S.sft, cfg), "pairs": declared_reads(S.pairs, cfg),
            **{f"rm_{k}": declared_reads(S.train_rm, cfg, k, {}) for k, _ in compare_rms(cfg)},
            "bon": declared_reads(S.bon, cfg, {"dense": proxy}), "ppo": declared_reads(S.ppo, cfg, proxy)}


def test_stage_keys_read_resources_only_when_set():
    base = _stage_reads(load_config())
    assert not [k for reads in base.values() for k in reads if k.startswith("resources")]  # tiny keys unchanged
    cfg = load_config(None, ["--resources.gold_accelerator", "A100", "--resources.train_gpus", "0",
                             "--resources.colocate", "actor_ref"])
    reads = _stage_reads(cfg)
    assert "resources.gold_accelerator" in reads["ppo"] and "resources.gold_accelerator" in reads["bon"]
    assert "resources.colocate" in reads["ppo"] and "resources.colocate" not in reads["bon"]
    assert "resources.train_gpus" in reads["sft"] and "resources.train_gpus" in reads["rm_dense"]
    assert not [k for k in reads["pairs"] if k.startswith("resources")]
    assert resource_reads(cfg, "rollout") == ()


def test_gpu_preset_resolves():
    cfg = load_config(None, [], base=PRESETS["gpu"])
    assert role_resources(cfg, "gold").accelerator == "A100-80G"
    layout = ppo_layout(cfg)
    assert layout.strategy == "STRICT_PACK" and len(layout.bundles) == cfg.ppo.world_size
    assert set(layout.slots) == {"reference", "rollout"}


PROBE = textwrap.dedent("""
    import json, sys, types
    import ray
    from umm_ray.actors.placement import in_group, make_placement_group
    from umm_ray.config import load_config
    from umm_ray.ppo.roles import colocated
    from umm_ray.resources import ppo_layout, role_resources

    # two (logical) GPUs of type A100: Ray hands out GPU ids and accelerator types without a real device
    ray.init(address="local", num_cpus=6, num_gpus=2, resources={"accelerator_type:A100": 1},
             include_dashboard=False, log_to_driver=False)
    cfg = load_config(None, sys.argv[1:])

    @ray.remote
    class Probe:
        def where(self):
            ctx = ray.get_runtime_context()
            return {"node": ctx.get_node_id(), "gpus": [str(g) for g in ray.get_gpu_ids()],
                    "pg": ctx.get_placement_group_id()}

    layout = ppo_layout(cfg)  # as PolicyGroup builds its group, and start_roles places the reference
    pg = make_placement_group("policy", list(layout.bundles), layout.strategy, timeout_s=300)
    policy = types.SimpleNamespace(layout=layout, pg=pg)
    ranks = [Probe.options(**role_resources(cfg, "policy").bundle_options(), scheduling_strategy=in_group(pg, r))
             .remote() for r in range(cfg.ppo.world_size)]
    ref = Probe.options(**colocated(cfg, policy, "reference")).remote()
    print("RESULT " + json.dumps({"strategy": layout.strategy, "ranks": ray.get([r.where.remote() for r in ranks]),
                                  "reference": ray.get(ref.where.remote())}))
""")


@pytest.mark.slow
def test_colocated_actor_ref_shares_a_bundle_gpu_on_a_real_cluster(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    args = ["--resources.colocate", "actor_ref", "--ppo.world_size", "2", "--resources.policy_gpus", "0.75",
            "--resources.reference_gpus", "0.25", "--resources.policy_accelerator", "A100"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_agent_register_timeout_ms": "180000"}
    proc = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=900)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    r0, r1, ref = out["ranks"][0], out["ranks"][1], out["reference"]
    assert out["strategy"] == "STRICT_PACK"
    assert r0["pg"] == r1["pg"] == ref["pg"] and r0["node"] == r1["node"] == ref["node"]
    assert ref["gpus"] == r0["gpus"] and r0["gpus"] != r1["gpus"]  # reference beside rank 0; ranks never share
