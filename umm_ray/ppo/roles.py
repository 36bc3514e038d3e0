"""The PPO run's roles and the driver's calls into them: start-up, generation over engines, weight sync, resume.

Kept out of `jobs/ppo.py` so the driver reads as the loop itself (docs/design.md §3).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import ray
import torch
from tqdm import tqdm

from umm_ray.actors.placement import in_group
from umm_ray.actors.policy import PolicyGroup
from umm_ray.actors.reference import ReferenceActor
from umm_ray.actors.reward import RewardGroup, RewardSpec
from umm_ray.actors.rollout import RolloutActor
from umm_ray.config import Config
from umm_ray.ppo.experience import pad_ragged
from umm_ray.ppo.sync import CollectiveSync
from umm_ray.ppo.state import DriverState, latest_checkpoint, load_driver_state, restore_rng
from umm_ray.records import Rollout
from umm_ray.resources import ppo_layout, role_resources

log = logging.getLogger(__name__)


def engine_gpus(cfg: Config) -> float:
    """GPUs one rollout engine asks Ray for: rollout.tensor_parallel_size when it is > 1 (vLLM shards the policy over
    that many GPUs of its actor), else the rollout role's resources (`role_resources(cfg, "rollout")`).

    Raises:
        ValueError: tensor_parallel_size > 1 on a CPU configuration (no GPU for the rollout role), with the HF
            backend, or with engines colocated in the policy's one-GPU bundles (resources.colocate all).
    """
    ro, gpus = cfg.rollout, role_resources(cfg, "rollout").gpus
    if ro.tensor_parallel_size == 1:
        return gpus
    if ro.backend != "vllm":
        raise ValueError(f"rollout.tensor_parallel_size={ro.tensor_parallel_size} needs rollout.backend vllm (the HF "
                         "backend does not shard the model)")
    if gpus <= 0:
        raise ValueError(f"rollout.tensor_parallel_size={ro.tensor_parallel_size} needs that many GPUs per rollout "
                         "engine, but resources.rollout_gpus (run.num_gpus_per_actor when -1) is 0 (a CPU run): use "
                         "1 on CPU")
    if "rollout" in ppo_layout(cfg).slots:
        raise ValueError(f"rollout.tensor_parallel_size={ro.tensor_parallel_size} cannot share the policy ranks' "
                         "one-GPU bundles (resources.colocate all): use colocate actor_ref or none")
    return float(ro.tensor_parallel_size)


def engine_sleeps(cfg: Config) -> bool:
    """Whether rollout engines sleep between rollouts (rollout.sleep_mode): 'auto' = when they share the policy
    ranks' GPUs (resources.colocate all, engines on a GPU)."""
    mode = cfg.rollout.sleep_mode
    if mode != "auto":
        return mode == "on"
    return "rollout" in ppo_layout(cfg).slots and role_resources(cfg, "rollout").gpus > 0


def make_engine(cfg: Config, policy_path: str, seed: int | None = None, placement: dict | None = None):
    """One RolloutActor (vLLM or HF backend, rollout.* settings) holding a copy of `policy_path`; `seed` defaults to
    run.seed; `placement` (from `colocated`) puts it into a bundle of the policy's placement group; its context is
    model.max_seq_len, at most the checkpoint's positions (vLLM sizes its KV cache for it, not for the checkpoint's
    full context). PPO, Best-of-N and the pairs stage all start their engines here."""
    ro = cfg.rollout
    # resources: the one place an engine's Ray request is made (engine_gpus: tensor parallelism needs tp GPUs)
    opts = placement or {**role_resources(cfg, "rollout").options(), "num_gpus": engine_gpus(cfg)}
    actor = ray.remote(RolloutActor).options(**opts)
    return actor.remote(str(policy_path), backend=ro.backend, max_new_tokens=ro.max_new_tokens,
                        temperature=ro.temperature, top_p=ro.top_p, gpu_memory_utilization=ro.gpu_memory_utilization,
                        seed=cfg.run.seed if seed is None else seed, trust_remote_code=cfg.model.trust_remote_code,
                        chat_template=cfg.model.chat_template, dtype=ro.dtype, enforce_eager=ro.enforce_eager,
                        tensor_parallel_size=ro.tensor_parallel_size, max_seq_len=cfg.model.max_seq_len,
                        sleep_mode=engine_sleeps(cfg))


def generate(engines: list, prompts: list[str], seed: int) -> Rollout:
    """One response per prompt, prompts split into contiguous shards over the engines (order kept)."""
    k = len(engines)
    bounds = [len(prompts) * i // k for i in range(k + 1)]
    refs = [e.generate.remote(prompts[a:b], n=1, seed=seed + i)
            for i, (e, a, b) in enumerate(zip(engines, bounds, bounds[1:])) if b > a]
    parts = ray.get(refs)
    out = Rollout([], [], [], [], [])
    for p in parts:
        out.prompts += p.prompts
        out.responses += p.responses
        out.prompt_ids += p.prompt_ids
        out.response_ids += p.response_ids
        out.response_logprobs = None if p.response_logprobs is None or out.response_logprobs is None \
            else out.response_logprobs + p.response_logprobs
    if out.prompts != prompts:
        raise RuntimeError(f"RolloutActors returned {len(out.prompts)} responses for {len(prompts)} prompts, or out "
                           f"of order")
    return out


# ---- weight sync: rollout.weight_sync picks the path; the collective group is set up once per Roles ----

def sync_weights(policy: PolicyGroup, engines: list, link: CollectiveSync | None = None) -> list:
    """Policy rank 0's weights -> every rollout engine: through `link`'s group when given (buckets broadcast by
    gloo/NCCL), else rank 0's full state dict -> object store -> `update_weights` on each engine. Returns each
    engine's `SyncStats`."""
    if link is not None:
        return link.sync()
    ref = policy.state_dict_ref()
    return ray.get([e.update_weights.remote(ref) for e in engines])


def weight_link(cfg: Config, policy: PolicyGroup, engines: list) -> CollectiveSync | None:
    """The collective weight-sync group of these roles (None with rollout.weight_sync = object_store). NCCL when the
    policy and vLLM engines are all on GPUs, gloo (through CPU memory) otherwise."""
    if cfg.rollout.weight_sync != "collective":
        return None
    gpu = (role_resources(cfg, "policy").gpus > 0 and role_resources(cfg, "rollout").gpus > 0
           and cfg.rollout.backend == "vllm")
    return CollectiveSync(policy, engines, cfg.rollout.sync_bucket_mb, backend="nccl" if gpu else "gloo")


def sync_gap(roll: Rollout, logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """|engine log-prob - policy log-prob| over the sampled tokens: ~0 when the weight sync worked (temperature 1)."""
    if roll.response_logprobs is None:
        return {}
    diff = (pad_ragged(roll.response_logprobs, logp.shape[1]) - logp).abs() * mask
    return {"rollout_logprob_gap": (diff.sum() / mask.sum()).item(), "rollout_logprob_gap_max": diff.max().item()}


@dataclass
class Roles:
    """The actor groups of one PPO run (docs/design.md §3)."""

    policy: PolicyGroup
    engines: list
    reference: ray.actor.ActorHandle
    proxy: RewardGroup
    gold: RewardGroup
    link: CollectiveSync | None = None  # the weight-sync group (`weight_link`), None for the object-store path
    sleep: bool = False  # engines sleep after each rollout (`engine_sleeps`); the next sync wakes them

    def shutdown(self) -> None:
        if self.link is not None:
            self.link.close()
        for a in self.engines + [self.reference]:
            ray.kill(a)
        self.policy.shutdown()
        self.proxy.shutdown()
        self.gold.shutdown()


def proxy_group(cfg: Config, members: list[RewardSpec]) -> RewardGroup:
    """The proxy's reward actors: one per spec (an ensemble member each, or a whole ensemble: ensemble.score_actors),
    placed by ensemble.placement (PACK for a single actor)."""
    return RewardGroup(members, cfg.ensemble.placement if len(members) > 1 else "PACK",
                       role_resources(cfg, "proxy"))


def colocated(cfg: Config, policy: PolicyGroup, role: str, i: int = 0) -> dict | None:
    """`.options(...)` putting actor `i` of `role` into its bundle of the policy's placement group when
    resources.colocate shares it (umm_ray.resources.ppo_layout); None when the role has its own devices."""
    slot = policy.layout.slot(role, i)
    if slot is None:
        return None
    return {**role_resources(cfg, role).bundle_options(), "scheduling_strategy": in_group(policy.pg, slot)}


def start_roles(cfg: Config, policy_path: str, members: list[RewardSpec], gold: RewardSpec) -> Roles:
    """Start every actor and wait until all have loaded their models (load errors surface before step 1).

    Reward actors are stateless and restart on failure (the call is retried); a rollout engine or a policy rank that
    dies stops the run with the last checkpoint intact (their weights are not recoverable from the actor alone).
    """
    temp, trust = cfg.rollout.temperature or 1.0, cfg.model.trust_remote_code
    engine_gpus(cfg)  # a tensor-parallel size the run cannot have stops before any actor starts
    layout = ppo_layout(cfg)
    if "rollout" in layout.slots and not engine_sleeps(cfg):  # say so: they hold weights and KV cache all the time
        log.warning("resources.colocate=all: rollout engines share the policy GPUs without sleeping between rollouts "
                    "(rollout.sleep_mode %s); rollout.gpu_memory_utilization must leave room for the policy rank and "
                    "reference", cfg.rollout.sleep_mode)
    policy = PolicyGroup(policy_path, cfg.ppo, seed=cfg.run.seed, temperature=temp,
                         claim=role_resources(cfg, "policy"), trust_remote_code=trust, layout=layout)
    engines = [make_engine(cfg, policy_path, placement=colocated(cfg, policy, "rollout", i))
               for i in range(cfg.rollout.num_engines)]
    ref_opts = colocated(cfg, policy, "reference") or role_resources(cfg, "reference").options()
    reference = ray.remote(ReferenceActor).options(**ref_opts).remote(
        policy_path, cfg.ppo.micro_batch_size, temp, trust_remote_code=trust, dtype=cfg.ppo.reference_dtype)
    proxy = proxy_group(cfg, members)
    gold_group = RewardGroup([gold], "PACK", role_resources(cfg, "gold"))
    ray.get([e.ready.remote() for e in engines] + [reference.ready.remote()])
    proxy.ready()
    gold_group.ready()
    roles = Roles(policy, engines, reference, proxy, gold_group, sleep=engine_sleeps(cfg))
    roles.link = weight_link(cfg, policy, engines)  # weight sync, set up once the engines are ready (see above)
    return roles


class RolePool:
    """Keeps one run's actors for the next PPO run that shares its policy, gold and settings.

    The compare job runs PPO several times from the same SFT policy, differing only in the proxy. Instead of starting
    every role per run (vLLM engine, DeepSpeed ranks, reference, gold: most of a short CPU run), the pool resets the
    policy ranks to the starting weights with fresh optimizer state, re-syncs the engines from them, and swaps only
    the proxy group. A run that fails shuts the pool's actors down, so the next run starts clean.

        pool = RolePool()
        run_ppo(..., pool=pool); run_ppo(..., pool=pool)   # the second run reuses the roles
        pool.shutdown()
    """

    def __init__(self):
        self.roles: Roles | None = None
        self.key: str | None = None
        self.last_reused = False  # whether the last `acquire` reused running actors

    @staticmethod
    def _key(cfg: Config, policy_path: str, gold: RewardSpec) -> str:
        # Everything the policy ranks, engines, reference and gold were built from; the proxy is swapped instead.
        # The KL penalty is applied by the driver only, so the two PPO regimes of the compare job share the actors.
        ppo = dataclasses.replace(cfg.ppo, kl_coef=0.0, kl_target=0.0, kl_horizon=1)
        return repr((policy_path, gold, ppo, cfg.rollout, cfg.run, cfg.resources, cfg.model.trust_remote_code))

    def acquire(self, cfg: Config, policy_path: str, members: list[RewardSpec], gold: RewardSpec) -> Roles:
        """Roles for a run starting from `policy_path`: reused and reset when the key matches, else started fresh."""
        key = self._key(cfg, policy_path, gold)
        if self.roles is None or key != self.key:
            self.shutdown()
            self.roles, self.key = start_roles(cfg, policy_path, members, gold), key
            self.last_reused = False
            return self.roles
        roles = self.roles
        roles.policy.reset(policy_path)
        sync_weights(roles.policy, roles.engines, roles.link)  # the same group: the layout outlives a reset
        if roles.proxy.specs != members:
            roles.proxy.shutdown()
            roles.proxy = proxy_group(cfg, members)
            roles.proxy.ready()
        self.last_reused = True
        return roles

    def shutdown(self) -> None:
        """Stop the kept actors (also after a failed run, whose actors' state is not trusted)."""
        if self.roles is not None:
            self.roles.shutdown()
        self.roles, self.key = None, None


def resume_state(cfg: Config, out: Path, policy: PolicyGroup, engines: list,
                 link: CollectiveSync | None = None) -> DriverState:
    """Load the latest checkpoint into the policy ranks and the rollout engines; a fresh DriverState otherwise."""
    ckpt = latest_checkpoint(out) if cfg.ppo.resume else None
    if ckpt is None:
        return DriverState(data_seed=cfg.run.seed)
    state = load_driver_state(ckpt)
    if state.data_seed != cfg.run.seed:
        raise ValueError(f"{ckpt}: checkpoint was made with run.seed={state.data_seed}, config has {cfg.run.seed}; "
                         f"use a fresh run.output_dir or the same seed")
    policy.load_checkpoint(str(ckpt))
    sync_weights(policy, engines, link)
    restore_rng(state.rng)
    tqdm.write(f"ppo: resumed from {ckpt} (step {state.step})")
    return state
