"""Per-role Ray resources and colocation: the `resources` section of `Config`.

Each role (PPO policy ranks, rollout engines, reference, proxy reward actors, gold reward actor, Ray Train workers of
SFT and RM training) has its own CPUs, GPUs (fractional shares allowed), memory and accelerator type. -1 inherits
`run.num_cpus_per_actor` / `run.num_gpus_per_actor`, so a config that sets only those behaves as before; the values are
resolved, and checked against each other, in one place: `umm_ray.resources.role_resources`.
Kept in its own module (config.py is near its size limit), declared with the shared `opt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from umm_ray.config_fields import opt

__all__ = ["ResourcesConfig", "RESOURCE_ROLES", "COLOCATE"]

RESOURCE_ROLES = ("policy", "rollout", "reference", "proxy", "gold", "train")
COLOCATE = ("none", "actor_ref", "all")

_GPU = ("GPUs each {what} asks Ray for; a fraction (e.g. 0.5) shares a GPU with other actors; -1 = "
        "run.num_gpus_per_actor.")
_CPU = "Logical CPUs each {what} asks Ray for; -1 = run.num_cpus_per_actor."
_MEM = "Host memory (GiB) each {what} reserves in Ray's `memory` resource (scheduling only); 0 = none reserved."
_ACC = ("Ray accelerator type each {what} must run on (e.g. A100, A100-80G, A10G, H100: the node resource "
        "accelerator_type:<X>); '' = any node with the GPUs asked for.")


_POLICY = "PPO policy+critic rank (PolicyActor)"
_ROLLOUT = "rollout engine (RolloutActor)"
_REFERENCE = "PPO reference actor"
_PROXY = "proxy reward actor (PPO: one per ensemble member; BoN: its scoring task)"
_GOLD = "gold reward actor (PPO) or gold scoring task (BoN)"
_TRAIN = "Ray Train worker of SFT and RM training"


@dataclass
class ResourcesConfig:
    policy_gpus: float = opt(-1.0, _GPU.format(what=_POLICY), lo=-1)
    policy_cpus: float = opt(-1.0, _CPU.format(what=_POLICY) + " Also the rank's torch threads (the whole part, at "
                             "least 1).", lo=-1)
    policy_memory_gb: float = opt(0.0, _MEM.format(what=_POLICY), lo=0)
    policy_accelerator: str = opt("", _ACC.format(what=_POLICY))
    rollout_gpus: float = opt(-1.0, _GPU.format(what=_ROLLOUT), lo=-1)
    rollout_cpus: float = opt(-1.0, _CPU.format(what=_ROLLOUT), lo=-1)
    rollout_memory_gb: float = opt(0.0, _MEM.format(what=_ROLLOUT), lo=0)
    rollout_accelerator: str = opt("", _ACC.format(what=_ROLLOUT))
    reference_gpus: float = opt(-1.0, _GPU.format(what=_REFERENCE), lo=-1)
    reference_cpus: float = opt(-1.0, _CPU.format(what=_REFERENCE), lo=-1)
    reference_memory_gb: float = opt(0.0, _MEM.format(what=_REFERENCE), lo=0)
    reference_accelerator: str = opt("", _ACC.format(what=_REFERENCE))
    proxy_gpus: float = opt(-1.0, _GPU.format(what=_PROXY), lo=-1)
    proxy_cpus: float = opt(-1.0, _CPU.format(what=_PROXY), lo=-1)
    proxy_memory_gb: float = opt(0.0, _MEM.format(what=_PROXY), lo=0)
    proxy_accelerator: str = opt("", _ACC.format(what=_PROXY))
    gold_gpus: float = opt(-1.0, _GPU.format(what=_GOLD), lo=-1)
    gold_cpus: float = opt(-1.0, _CPU.format(what=_GOLD), lo=-1)
    gold_memory_gb: float = opt(0.0, _MEM.format(what=_GOLD), lo=0)
    gold_accelerator: str = opt("", _ACC.format(what=_GOLD))
    train_gpus: float = opt(-1.0, _GPU.format(what=_TRAIN), lo=-1)
    train_cpus: float = opt(-1.0, _CPU.format(what=_TRAIN) + " Also the worker's torch threads (the whole part, "
                            "at least 1): on a 2-core node, rm.num_workers 1 with train_cpus 2 trains on 2 threads "
                            "with no gradient all-reduce.", lo=-1)
    train_memory_gb: float = opt(0.0, _MEM.format(what=_TRAIN), lo=0)
    train_accelerator: str = opt("", _ACC.format(what=_TRAIN))
    colocate: str = opt("none", "Share GPUs between PPO roles (OpenRLHF's colocate_actor_ref / colocate_all_models): "
                                "'none' = every role has its own devices; 'actor_ref' = one placement group of "
                                "ppo.world_size bundles of one whole GPU (or their CPUs) each, bundle i holding "
                                "policy rank i, bundle 0 also the reference (resources.policy_gpus + "
                                "resources.reference_gpus <= 1); 'all' = the rollout engines join too (engine i in "
                                "bundle i, rollout.num_engines <= ppo.world_size); GPU engines then sleep between "
                                "rollouts (rollout.sleep_mode); size rollout.gpu_memory_utilization to the share "
                                "left.", choices=COLOCATE)
