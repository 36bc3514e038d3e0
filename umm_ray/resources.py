"""What each role asks Ray for, resolved from the `resources` section in one place, and how colocated roles share
placement-group bundles. No Ray import: actor creation sites (umm_ray.ppo.roles, umm_ray.actors.policy, reward,
umm_ray.train.*, umm_ray.eval.bon, umm_ray.testbed.pairs) and the planner (umm_ray.plan) read the same answers.

    rr = role_resources(cfg, "gold")            # RoleResources(cpus, gpus, memory, accelerator)
    ray.remote(RewardActor).options(**rr.options())
    layout = ppo_layout(cfg)                    # the policy placement group's bundles, strategy, colocated slots

Rules (ConfigError naming the key): a rank group of more than one rank (PPO policy ranks, SFT / RM Ray Train
workers) must not give a rank a fraction of a GPU, which could put two NCCL ranks on one device, unless colocation
gives each rank its own whole-GPU bundle; more than one GPU per rank must be a whole number; colocated roles'
GPU shares in one bundle add up to at most one GPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from umm_ray.config_fields import ConfigError
from umm_ray.config_resources import RESOURCE_ROLES, ResourcesConfig

if TYPE_CHECKING:  # umm_ray.config imports this module to validate a Config's resources
    from umm_ray.config import Config

__all__ = ["RoleResources", "PPOLayout", "role_resources", "ppo_layout", "train_placement", "train_resources",
           "resource_reads", "check_resources"]

GiB = 2 ** 30
# A placement-group bundle pins an accelerator type by holding a sliver of the node resource Ray advertises for it
# (the same amount Ray's own `accelerator_type=` actor option asks for).
ACCELERATOR_SHARE = 0.001


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity): on a single node, the real parallelism behind Ray's
    logical CPUs, which may be more (the demo's head claims 8 on a 2-core machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class RoleResources:
    """One actor's (or Ray Train worker's) claim: logical CPUs, GPUs (may be fractional), host memory in bytes
    (0 = none reserved) and the accelerator type it must run on ('' = any)."""

    role: str
    cpus: float
    gpus: float
    memory: int = 0
    accelerator: str = ""

    def options(self) -> dict:
        """Keyword arguments of `ray.remote(...).options(...)` for an actor outside any placement group."""
        out = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        if self.memory:
            out["memory"] = self.memory
        if self.accelerator:
            out["accelerator_type"] = self.accelerator
        return out

    def bundle_options(self) -> dict:
        """`.options(...)` of an actor placed in a bundle: the bundle already pins the accelerator type."""
        out = {"num_cpus": self.cpus, "num_gpus": self.gpus}
        return {**out, "memory": self.memory} if self.memory else out

    def bundle(self) -> dict[str, float]:
        """This claim as a placement-group bundle (zero-valued entries left out: Ray rejects a GPU: 0 on CPU)."""
        out = {"CPU": float(self.cpus)}
        if self.gpus > 0:
            out["GPU"] = float(self.gpus)
        if self.memory:
            out["memory"] = float(self.memory)
        if self.accelerator:
            out[f"accelerator_type:{self.accelerator}"] = ACCELERATOR_SHARE
        return out


def _declared(r: ResourcesConfig, role: str) -> tuple[float, float, float, str]:
    """(gpus, cpus, memory_gb, accelerator) of `role` as configured (-1 = inherit)."""
    table = {
        "policy": (r.policy_gpus, r.policy_cpus, r.policy_memory_gb, r.policy_accelerator),
        "rollout": (r.rollout_gpus, r.rollout_cpus, r.rollout_memory_gb, r.rollout_accelerator),
        "reference": (r.reference_gpus, r.reference_cpus, r.reference_memory_gb, r.reference_accelerator),
        "proxy": (r.proxy_gpus, r.proxy_cpus, r.proxy_memory_gb, r.proxy_accelerator),
        "gold": (r.gold_gpus, r.gold_cpus, r.gold_memory_gb, r.gold_accelerator),
        "train": (r.train_gpus, r.train_cpus, r.train_memory_gb, r.train_accelerator),
    }
    if role not in table:
        raise ValueError(f"role_resources: unknown role {role!r}; one of {', '.join(RESOURCE_ROLES)}")
    return table[role]


def _raw(cfg: Config, role: str) -> RoleResources:
    gpus, cpus, memory_gb, accelerator = _declared(cfg.resources, role)
    return RoleResources(role, cfg.run.num_cpus_per_actor if cpus < 0 else cpus,
                         cfg.run.num_gpus_per_actor if gpus < 0 else gpus, int(memory_gb * GiB), accelerator)


def _key(cfg: Config, role: str, what: str) -> str:
    """The key a resolved value came from: resources.<role>_<what>, or the run.* default it inherited."""
    own = f"resources.{role}_{what}"
    gpus, cpus, _, _ = _declared(cfg.resources, role)
    if (gpus if what == "gpus" else cpus) >= 0:
        return own
    return f"{own} (inherited from run.num_{what}_per_actor)"


def role_resources(cfg: Config, role: str) -> RoleResources:
    """The resolved claim of one role: policy | rollout | reference | proxy | gold | train (see ResourcesConfig).

    Raises:
        ConfigError: the configuration breaks one of the module's rules; the message names the key.
    """
    check_resources(cfg)
    return _raw(cfg, role)


def _rank_groups(cfg: Config) -> list[tuple[str, int, str]]:
    """(role, ranks, what) of every NCCL rank group."""
    return [("policy", cfg.ppo.world_size, "ppo.world_size"),
            ("train", max(cfg.sft.num_workers, cfg.rm.num_workers),
             "sft.num_workers" if cfg.sft.num_workers >= cfg.rm.num_workers else "rm.num_workers")]


def check_resources(cfg: Config) -> None:
    """Raise ConfigError (naming the key) when the resources of `cfg` would misplace ranks or overfill a GPU."""
    for role in RESOURCE_ROLES:
        g = _raw(cfg, role).gpus
        if g > 1 and g != int(g):
            raise ConfigError(f"{_key(cfg, role, 'gpus')}: {g:g} GPUs per actor; above one GPU it must be a whole "
                              f"number")
    colocated = cfg.resources.colocate != "none"
    for role, ranks, what in _rank_groups(cfg):
        g = _raw(cfg, role).gpus
        if ranks > 1 and 0 < g < 1 and not (colocated and role == "policy"):
            raise ConfigError(f"{_key(cfg, role, 'gpus')}: {g:g} of a GPU per rank with {what}={ranks}: two NCCL "
                              f"ranks of one group could share a GPU; use whole GPUs (or resources.colocate, which "
                              f"gives each policy rank its own GPU to share with other roles)")
    if colocated:
        layout = _layout(cfg)
        for i, roles in enumerate(layout.members):
            total = sum(_raw(cfg, r).gpus for r in roles)
            if total > 1 + 1e-9:
                parts = " + ".join(f"{_key(cfg, r, 'gpus')} {_raw(cfg, r).gpus:g}" for r in roles)
                raise ConfigError(f"resources.colocate={cfg.resources.colocate}: bundle {i} holds {', '.join(roles)} "
                                  f"on one GPU, but {parts} = {total:g} > 1")
        accs = {_raw(cfg, r).accelerator for r in _colocated_roles(cfg)} - {""}
        if len(accs) > 1:
            raise ConfigError(f"resources.colocate={cfg.resources.colocate}: colocated roles ask for different "
                              f"accelerator types {sorted(accs)} (resources.*_accelerator)")


def _colocated_roles(cfg: Config) -> tuple[str, ...]:
    return {"none": (), "actor_ref": ("policy", "reference"),
            "all": ("policy", "reference", "rollout")}[cfg.resources.colocate]


@dataclass(frozen=True)
class PPOLayout:
    """The PPO policy placement group: one bundle per rank, the roles each bundle holds (`members[i]`, policy rank
    i first), its strategy, and for colocated roles the bundle index of each of their actors (`slots`)."""

    bundles: tuple[dict, ...]
    members: tuple[tuple[str, ...], ...]
    strategy: str
    slots: dict = field(default_factory=dict)

    def slot(self, role: str, i: int) -> int | None:
        """Bundle index of actor `i` of `role` when it is colocated in the policy group; None when it is not."""
        idx = self.slots.get(role)
        return None if idx is None else idx[i]


def _layout(cfg: Config) -> PPOLayout:
    n, mode = cfg.ppo.world_size, cfg.resources.colocate
    pol = _raw(cfg, "policy")
    if mode == "none":
        # STRICT_PACK on GPUs: a NCCL group that the autoscaler splits over nodes is slow or hangs
        return PPOLayout(tuple(pol.bundle() for _ in range(n)), tuple(("policy",) for _ in range(n)),
                         "STRICT_PACK" if pol.gpus > 0 else "PACK")
    members = [["policy"] for _ in range(n)]
    slots = {"reference": [0]}
    members[0].append("reference")
    if mode == "all":
        k = cfg.rollout.num_engines
        if k > n:
            raise ConfigError(f"resources.colocate=all: rollout.num_engines={k} exceeds ppo.world_size={n} (one "
                              f"engine per policy bundle at most)")
        slots["rollout"] = list(range(k))
        for i in range(k):
            members[i].append("rollout")
    bundles = []
    acc = next((a for a in (_raw(cfg, r).accelerator for r in _colocated_roles(cfg)) if a), "")
    for roles in members:
        claims = [_raw(cfg, r) for r in roles]
        # The bundle is a whole GPU: a fractional bundle could share its device with another rank's bundle.
        b = RoleResources("+".join(roles), sum(c.cpus for c in claims), 1.0 if any(c.gpus > 0 for c in claims)
                          else 0.0, sum(c.memory for c in claims), acc)
        bundles.append(b.bundle())
    strategy = "STRICT_PACK" if any("GPU" in b for b in bundles) else "PACK"
    return PPOLayout(tuple(bundles), tuple(tuple(m) for m in members), strategy, slots)


def ppo_layout(cfg: Config) -> PPOLayout:
    """The policy placement group of a PPO run, with the roles resources.colocate puts into its bundles."""
    check_resources(cfg)
    return _layout(cfg)


def train_placement(cfg: Config, requested: str = "PACK") -> str:
    """Placement strategy of a Ray Train worker group: STRICT_PACK on GPUs (one NCCL group on one node), else the
    `requested` one (PACK, or ensemble.placement for ensemble members)."""
    return "STRICT_PACK" if role_resources(cfg, "train").gpus > 0 else requested


def train_resources(cfg: Config, requested: str = "PACK") -> dict:
    """The TrainSpec fields of a Ray Train stage (SFT, RM training): use_gpu, worker claim, placement_strategy."""
    claim = role_resources(cfg, "train")
    return {"use_gpu": claim.gpus > 0, "worker": claim, "placement_strategy": train_placement(cfg, requested)}


def resource_reads(cfg: Config, *roles: str) -> tuple[str, ...]:
    """The `resources.*` keys of `roles` that a stage's cache key must include: those set away from their defaults
    (at their defaults a stage resolves to run.num_*_per_actor, which stages read already, so existing runs keep
    their keys); resources.colocate too when the policy is among `roles` and it is set."""
    defaults = ResourcesConfig()
    names = [f.name for f in fields(ResourcesConfig) if f.name.split("_")[0] in roles]
    if "policy" in roles:
        names.append("colocate")
    return tuple(f"resources.{n}" for n in names if getattr(cfg.resources, n) != getattr(defaults, n))
