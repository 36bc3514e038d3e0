"""The placement plan: every role of a config, its devices and memory, and whether each stage fits the cluster.

A stage is what runs at once (the SFT workers; one reward model's Ray Train workers and its concurrent evaluation;
all ensemble members; PPO's policy ranks, rollout engines, reference, proxy and gold actors). For every role the plan
says how many actors, what each asks Ray for, the model it holds (exact parameter count) in which dtype, and its
memory by kind (umm_ray.plan_memory); `place` (umm_ray.plan_cluster) then checks each stage against the cluster's
node types. Dtypes are what the code does today: Ray Train stages in fp32 weights (reward training in bf16 autocast
with rm.precision bf16), PPO ranks in bf16 on GPU (fp32 on CPU); the reference, rollout engines, proxy and gold reward
actors in their configured dtype (ppo.reference_dtype, rollout.dtype, reward.proxy_dtype / gold_dtype; 'auto' = bf16
on GPU, fp32 on CPU, `umm_ray.dtypes.resolve_dtype`). Gradient checkpointing: reward training when
rm.grad_checkpointing is on, elsewhere
off; `--checkpointing` in jobs.plan shows what it would change everywhere. moe.upcycle_layers sets how many layers
the MoE roles upcycle.

    plan = make_plan(cfg, local_cluster())
    plan.ok, plan.stages[0].roles[0].memory.total
    check_fits(cfg, "rm_umm", source=path)   # in a training job: raises DoesNotFit with the numbers
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from umm_ray.config import Config
from umm_ray.data.chat import prompts_ids
from umm_ray.dtypes import resolve_dtype
from umm_ray.plan_cluster import Bundle, Cluster, Group, NodeType, Placement, local_cluster, place
from umm_ray.plan_memory import (CPU_RUNTIME, KNOWN_CONFIGS, Arch, GiB, KVPlan, Memory, PlanError, arch_from_config,
                                 arch_of, infer_memory, train_memory, vllm_memory)

log = logging.getLogger(__name__)

TESTBED = "testbed tiny model"
ROLES = ("sft", "rm_dense", "rm_moe", "rm_umm", "rm_ensemble", "ppo")


class DoesNotFit(RuntimeError):
    """A stage cannot be placed on the cluster; the message names the role and the numbers."""


@dataclass(frozen=True)
class Role:
    """`count` actors of one kind in one stage, each asking Ray for `cpus`/`gpus` and holding `memory`."""

    stage: str
    name: str
    count: int
    cpus: float
    gpus: float
    group: str
    strategy: str
    model: str
    params: int
    dtype: str
    memory: Memory
    detail: str = ""
    kv: KVPlan | None = None

    def bundle(self) -> Bundle:
        m = self.memory
        if m.device == "gpu":  # the host side of a GPU process: runtime, plus the weights while loading
            return Bundle(self.name, self.cpus, self.gpus, CPU_RUNTIME + m.params, m.total)
        return Bundle(self.name, self.cpus, self.gpus, m.total)


@dataclass(frozen=True)
class StagePlan:
    name: str
    roles: tuple[Role, ...]
    placement: Placement | None = None

    def groups(self) -> list[Group]:
        by: dict[str, list] = {}
        strategy = {}
        for r in self.roles:
            for i in range(r.count):
                key = r.group.format(i=i)
                by.setdefault(key, []).append(r.bundle())
                strategy[key] = r.strategy
        return [Group(k, tuple(v), strategy[k]) for k, v in by.items()]

    def problems(self) -> list[str]:
        out = [f"{self.name}: {r.name}: vLLM KV cache holds {r.kv.kv_tokens} tokens, fewer than max_model_len "
               f"{r.kv.max_model_len} (raise rollout.gpu_memory_utilization)" for r in self.roles
               if r.kv is not None and not r.kv.ok]
        if self.placement is not None and not self.placement.ok:
            out.append(f"{self.name}: {self.placement.failure}")
        return out


@dataclass(frozen=True)
class Plan:
    cluster: Cluster
    stages: tuple[StagePlan, ...]

    @property
    def problems(self) -> list[str]:
        return [p for s in self.stages for p in s.problems()]

    @property
    def ok(self) -> bool:
        return not self.problems


# ---------------------------------------------------------------------------------------------------------------------
# Models of a config.


def testbed_arch(cfg: Config) -> Arch:
    """The testbed's tiny model as the prepare stage builds it (vocab = testbed.vocab_size)."""
    from umm_ray.testbed.models import tiny_config  # imports transformers (~2 s): only for testbed presets

    m = cfg.model
    config = tiny_config(m.family, vocab_size=cfg.testbed.vocab_size, hidden_size=m.hidden_size,
                         num_layers=m.num_layers, intermediate_size=m.intermediate_size, max_seq_len=m.max_seq_len)
    return arch_from_config(config, TESTBED)


def model_arch(cfg: Config, source: str | Path | None) -> Arch:
    """Arch of `source` (local dir or built-in hub id); the testbed tiny model when empty, or when it is a stage
    output of this run not written yet (e.g. <run.output_dir>/sft/model: the SFT stage trains the testbed model)."""
    if source and (str(source) in KNOWN_CONFIGS or (Path(source) / "config.json").is_file()):
        return arch_of(str(source), cfg.model.trust_remote_code)
    out = Path(cfg.run.output_dir).resolve()
    if source and out not in Path(source).resolve().parents:
        raise PlanError(f"model {source}: no config.json there and not a built-in hub id ({', '.join(KNOWN_CONFIGS)})")
    return testbed_arch(cfg)


def rm_source(cfg: Config) -> str:
    return cfg.rm.base_path or cfg.ppo.policy_path or cfg.sft.base_path or ""


def policy_source(cfg: Config) -> str:
    return cfg.ppo.policy_path or cfg.sft.base_path or ""


# ---------------------------------------------------------------------------------------------------------------------
# Roles per stage.


def _gpu(cfg: Config) -> bool:
    return cfg.run.num_gpus_per_actor > 0


def _rm_train_role(cfg: Config, stage: str, name: str, arch: Arch, *, experts: int = 0, merge: bool = False,
                   group: str = "{stage}", strategy: str = "PACK", checkpointing: bool = False,
                   seq_len: int | None = None) -> Role:
    r, dev = cfg.rm, "gpu" if _gpu(cfg) else "cpu"
    top_k = min(cfg.moe.top_k, experts) if experts else 0
    T = seq_len or r.max_len
    n_moe = len(cfg.moe.upcycle_layers) or None if experts else None  # [] = all layers
    mem = train_memory(arch, "rm", "fp32", 2 * r.batch_size, T, experts=experts, top_k=top_k, merge=merge,
                       world=r.num_workers, strategy=r.strategy, zero_stage=r.zero_stage,
                       checkpointing=checkpointing or r.grad_checkpointing, device=dev,
                       autocast=r.precision == "bf16", moe_layers=n_moe)
    what = f"MoE {experts}+1 experts top-{top_k}" if experts and not merge else \
        f"merge of {experts}+1 experts (theta only)" if merge else "dense"
    if n_moe:
        what += f" in {n_moe} of {arch.layers} layers"
    return Role(stage, name, r.num_workers, 1.0, 1.0 if _gpu(cfg) else 0.0, group.format(stage=stage, i="{i}"),
                strategy, arch.source, arch.params("rm", experts, n_moe), "fp32", mem,
                f"{what}; {'; '.join(mem.notes)}; {2 * r.batch_size} seqs x {T}")


def _eval_task(cfg: Config, stage: str, arch: Arch, experts: int = 0, seq_len: int | None = None) -> Role:
    """evaluate_initial: a 1-CPU Ray task scoring the untrained model while the workers train (no GPU)."""
    top_k = min(cfg.moe.top_k, experts) if experts else 0
    mem = infer_memory(arch, "rm", "fp32", 64, seq_len or cfg.rm.max_len, experts=experts, top_k=top_k, device="cpu")
    n_moe = len(cfg.moe.upcycle_layers) or None if experts else None
    return Role(stage, "initial eval task", 1, 1.0, 0.0, f"{stage}/eval", "PACK", arch.source,
                arch.params("rm", experts, n_moe), "fp32", mem, "64 seqs per batch, concurrent with training")


def rm_stages(cfg: Config, kind: str, arch: Arch, experts: list[int], checkpointing: bool = False,
              seq_len: int | None = None) -> list[StagePlan]:
    """The stages of one reward-model kind: dense | moe | umm | ensemble. `seq_len`: the longest training row in
    tokens when known (batches pad to their longest row), else rm.max_len."""
    ck = {"checkpointing": checkpointing, "seq_len": seq_len}
    if kind == "dense":
        return [StagePlan("rm_dense", (_rm_train_role(cfg, "rm_dense", "RM worker", arch, **ck),
                                   _eval_task(cfg, "rm_dense", arch, seq_len=seq_len)))]
    if kind == "ensemble":
        k = cfg.ensemble.members
        role = _rm_train_role(cfg, "rm_ensemble", "ensemble member worker", arch, group="member{i}",
                              strategy=cfg.ensemble.placement, **ck)
        return [StagePlan("rm_ensemble", tuple(replace(role, name=f"member {i} worker", group=f"member{i}")
                                           for i in range(k)))]
    out = []
    for n in experts:
        s = f"rm_moe[{n}]"
        out.append(StagePlan(s, (_rm_train_role(cfg, s, "RM worker", arch, experts=n, **ck),
                             _eval_task(cfg, s, arch, experts=n, seq_len=seq_len))))
        if kind == "umm":
            s = f"rm_merge[{n}]"
            out.append(StagePlan(s, (_rm_train_role(cfg, s, "merge worker", arch, experts=n, merge=True, **ck),)))
    return out


def sft_stage(cfg: Config, checkpointing: bool = False) -> StagePlan:
    s, dev = cfg.sft, "gpu" if _gpu(cfg) else "cpu"
    arch = model_arch(cfg, cfg.sft.base_path)
    T = cfg.model.max_seq_len
    mem = train_memory(arch, "lm", "fp32", s.batch_size, T, world=s.num_workers, strategy=s.strategy, zero_stage=1,
                       checkpointing=checkpointing, device=dev, lm_tokens=s.batch_size * T)
    role = Role("sft", "SFT worker", s.num_workers, 1.0, 1.0 if _gpu(cfg) else 0.0, "sft", "PACK", arch.source,
                arch.params("lm"), "fp32", mem, f"{'; '.join(mem.notes)}; {s.batch_size} seqs x {T}")
    return StagePlan("sft", (role,))


def _proxy(cfg: Config) -> tuple[int, int]:
    """(actors, experts) of the largest proxy PPO runs against: ensemble members, or one (MoE when unmerged)."""
    ensembles = cfg.reward.proxy == "ensemble" or any(str(p).startswith("ensemble") for p in cfg.compare.ppo_rms)
    return (cfg.ensemble.members if ensembles else 1), (cfg.moe.num_experts if cfg.reward.proxy == "moe" else 0)


def ppo_stage(cfg: Config, gpu_bytes: int, checkpointing: bool = False) -> StagePlan:
    """Policy ranks (policy + critic under DeepSpeed), rollout engines, reference, proxy and gold reward actors."""
    p, ro, gpu = cfg.ppo, cfg.rollout, _gpu(cfg)
    dev, cpus, gpus = ("gpu" if gpu else "cpu"), cfg.run.num_cpus_per_actor, cfg.run.num_gpus_per_actor
    pol = model_arch(cfg, policy_source(cfg))
    lm_dtype = "bf16" if gpu else "fp32"
    device = "cuda" if gpu else "cpu"
    ro_dtype, ref_dtype = resolve_dtype(ro.dtype, device), resolve_dtype(p.reference_dtype, device)
    proxy_dtype = resolve_dtype(cfg.reward.proxy_dtype, device)
    gold_dtype = resolve_dtype(cfg.reward.gold_dtype, device)
    T, R = cfg.model.max_seq_len, ro.max_new_tokens
    mem = train_memory(pol, "actor_critic", lm_dtype, p.micro_batch_size, T, world=p.world_size,
                       strategy="deepspeed", zero_stage=p.zero_stage, checkpointing=checkpointing, device=dev,
                       lm_tokens=p.micro_batch_size * R)
    roles = [Role("ppo", "policy+critic rank", p.world_size, cpus, gpus, "policy", "PACK", pol.source,
                  pol.params("lm") + pol.params("base") + pol.hidden + 1, lm_dtype, mem,
                  f"policy {pol.params('lm') / 1e6:.1f}M + critic trunk {pol.params('base') / 1e6:.1f}M + value "
                  f"head, one DeepSpeed engine; {'; '.join(mem.notes)}; {p.micro_batch_size} seqs x {T}")]
    if ro.backend == "vllm":
        # the engine's context, as `make_engine` gives it: model.max_seq_len, not the checkpoint's full context
        ctx = min(T, pol.max_positions) if pol.max_positions else T
        kv = vllm_memory(pol, ro_dtype, ro.gpu_memory_utilization, device=dev, device_bytes=gpu_bytes,
                         max_model_len=ctx)
        # an engine asks for tensor_parallel_size GPUs when > 1 (`ppo.roles.engine_gpus`)
        eng_gpus = float(ro.tensor_parallel_size) if ro.tensor_parallel_size > 1 else gpus
        roles.append(Role("ppo", "rollout engine (vLLM)", ro.num_engines, cpus, eng_gpus, "engine{i}", "PACK",
                          pol.source, pol.params("lm"), ro_dtype, kv.memory,
                          f"KV cache {kv.memory.kv_cache / GiB:.1f} GiB = {kv.kv_tokens} tokens "
                          f"({kv.kv_tokens // ctx} x max_model_len {ctx})", kv))
    else:
        m = infer_memory(pol, "lm", ro_dtype, 64, T, device=dev, lm_tokens=64)
        roles.append(Role("ppo", "rollout engine (HF)", ro.num_engines, cpus, gpus, "engine{i}", "PACK", pol.source,
                          pol.params("lm"), ro_dtype, m, "64 seqs per generate call"))
    ref = infer_memory(pol, "lm", ref_dtype, p.micro_batch_size, T, device=dev, lm_tokens=p.micro_batch_size * R)
    roles.append(Role("ppo", "reference", 1, cpus, gpus, "reference", "PACK", pol.source, pol.params("lm"), ref_dtype,
                      ref, f"{p.micro_batch_size} seqs x {T}"))
    n_proxy, experts = _proxy(cfg)
    rm = model_arch(cfg, rm_source(cfg))
    top_k = min(cfg.moe.top_k, experts) if experts else 0
    pm = infer_memory(rm, "rm", proxy_dtype, cfg.reward.batch_size, cfg.rm.max_len, experts=experts, top_k=top_k,
                      device=dev)
    roles.append(Role("ppo", "proxy RM actor", n_proxy, cpus, gpus, "proxy", cfg.ensemble.placement if n_proxy > 1
                      else "PACK", rm.source, rm.params("rm", experts), proxy_dtype, pm,
                      f"{cfg.reward.batch_size} seqs x {cfg.rm.max_len}"))
    gold = cfg.reward.gold
    if gold in ("testbed", "remote"):
        gm = Memory("cpu", runtime=CPU_RUNTIME, notes=("programmatic",))
        roles.append(Role("ppo", f"gold ({gold})", 1, cpus, gpus, "gold", "PACK", gold, 0, "-", gm,
                          "no model weights"))
    else:
        ga = model_arch(cfg, gold)
        gm = infer_memory(ga, "rm", gold_dtype, cfg.reward.batch_size, cfg.rm.max_len, device=dev)
        roles.append(Role("ppo", "gold RM actor", 1, cpus, gpus, "gold", "PACK", ga.source, ga.params("rm"), gold_dtype,
                          gm, f"{cfg.reward.batch_size} seqs x {cfg.rm.max_len}"))
    return StagePlan("ppo", tuple(roles))


def smallest_gpu(cluster: Cluster) -> int:
    mems = [t.gpu_memory for t in cluster.node_types if t.gpus]
    return min(mems) if mems else 0


def make_stages(cfg: Config, cluster: Cluster, which: tuple[str, ...] = ROLES, source: str | Path | None = None,
                checkpointing: bool = False, rm_seq_len: int | None = None) -> list[StagePlan]:
    """The stages of `which` roles (see ROLES); `source` overrides the reward models' backbone, `rm_seq_len` their
    row length (default rm.max_len)."""
    rm = model_arch(cfg, source if source is not None else rm_source(cfg))
    # The whole pipeline (jobs.compare) trains a UMM per compare.expert_counts; a single job uses moe.num_experts.
    whole = set(which) == set(ROLES)
    umm_experts = sorted({cfg.moe.num_experts, *cfg.compare.expert_counts}) if whole else [cfg.moe.num_experts]
    out: list[StagePlan] = []
    for w in which:
        if w == "sft":
            out.append(sft_stage(cfg, checkpointing))
        elif w == "ppo":
            ram = max(t.ram for t in cluster.node_types)
            out.append(ppo_stage(cfg, smallest_gpu(cluster) if _gpu(cfg) else ram, checkpointing))
        elif w.startswith("rm_"):
            kind = w[3:]
            exp = umm_experts if kind == "umm" else [cfg.moe.num_experts]
            if kind == "moe" and "rm_umm" in which:
                continue  # the UMM stages include the MoE training of every expert count
            out += rm_stages(cfg, kind, rm, exp, checkpointing, rm_seq_len)
        else:
            raise PlanError(f"unknown role {w!r}; one of {', '.join(ROLES)}")
    return out


def make_plan(cfg: Config, cluster: Cluster, which: tuple[str, ...] = ROLES, source: str | Path | None = None,
              checkpointing: bool = False, rm_seq_len: int | None = None) -> Plan:
    """Every stage of `which` with its placement on `cluster`."""
    stages = make_stages(cfg, cluster, which, source, checkpointing, rm_seq_len)
    return Plan(cluster, tuple(replace(s, placement=place(s.groups(), cluster)) for s in stages))


# ---------------------------------------------------------------------------------------------------------------------
# The check a training job runs at start.


def running_cluster() -> Cluster | None:
    """The cluster this process runs on, when it can be judged from here: this machine when Ray is not up or runs
    on this machine alone (logical CPUs from Ray). None for multi-node or autoscaling clusters, whose node types only
    the launcher file knows (check those with `python -m jobs.plan --cluster cluster.yaml`)."""
    import ray  # ray: the estimator itself stays importable (and testable) without it

    if not ray.is_initialized():
        return local_cluster()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if len(nodes) != 1 or nodes[0].get("NodeManagerAddress") != ray.util.get_node_ip_address():
        return None
    res = nodes[0].get("Resources", {})
    cluster = local_cluster(logical_cpus=res.get("CPU"))
    if res.get("GPU"):
        import torch  # torch: only to read a GPU's memory

        gpu = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
        t = cluster.node_types[0]
        cluster = replace(cluster, node_types=(NodeType(t.name, t.cpus, int(res["GPU"]), t.ram, gpu, "local GPU",
                                                        1, 1, True),))
    return cluster


def longest_row(source: str | Path, pairs: list, max_len: int, chat_template: str = "auto") -> int:
    """Tokens of the longest prompt + response (+ EOS) among `pairs`, capped at `max_len`: what the fullest batch
    pads to (as umm_ray.data.tokenize encodes them: prompts rendered by the model.chat_template mode)."""
    from transformers import AutoTokenizer  # heavy: ~2 s; only when a training job checks its rows

    if not pairs:
        return max_len
    tok = AutoTokenizer.from_pretrained(str(source))
    count = lambda texts: [len(x) for x in tok(texts, add_special_tokens=False)["input_ids"]]  # noqa: E731
    prompts = [len(x) for x in prompts_ids(tok, [p.prompt for p in pairs], chat_template)]
    chosen, rejected = (count([getattr(p, k) for p in pairs]) for k in ("chosen", "rejected"))
    return min(max_len, max(p + max(c, r) + 1 for p, c, r in zip(prompts, chosen, rejected)))


def check_fits(cfg: Config, role: str, *, source: str | Path | None = None, pairs: list | None = None,
               cluster: Cluster | None = None) -> Plan:
    """Stop before any worker starts when `role`'s stages cannot fit the cluster (Ray's OOM killer would end them
    minutes later with no word on why). `role` is one of ROLES; `source` the backbone a reward stage starts from;
    `pairs` its training pairs (their longest row sets the sequence length; rm.max_len without them).

    Raises:
        DoesNotFit: naming the stage, the role and its memory by kind.
    """
    if role not in ROLES:
        raise PlanError(f"check_fits: role {role!r} is not one of {', '.join(ROLES)}")
    cluster = cluster or running_cluster()
    if cluster is None:
        log.info("check_fits(%s): multi-node cluster; run `python -m jobs.plan --cluster <file>` to check it", role)
        return Plan(local_cluster(), ())
    seq_len = longest_row(source, pairs, cfg.rm.max_len, cfg.model.chat_template) if pairs and source else None
    plan = make_plan(cfg, cluster, (role,), source, rm_seq_len=seq_len)
    if not plan.ok:
        raise DoesNotFit(explain(plan) + _batch_hint(cfg, role, cluster, source, seq_len))
    return plan


def _batch_hint(cfg: Config, role: str, cluster: Cluster, source, seq_len: int | None) -> str:
    """The largest rm.batch_size (halving from the configured one) with which a reward stage would fit."""
    if not role.startswith("rm_"):
        return ""
    hint = ""
    if not cfg.rm.grad_checkpointing:  # the lever that keeps the batch: activations of one layer at a time
        ck = replace(cfg, rm=replace(cfg.rm, grad_checkpointing=True))
        if make_plan(ck, cluster, (role,), source, rm_seq_len=seq_len).ok:
            hint = "\n  --rm.grad_checkpointing true would fit (same batch, ~30% slower steps)"
    b = cfg.rm.batch_size // 2
    while b >= 1:
        smaller = replace(cfg, rm=replace(cfg.rm, batch_size=b))
        if make_plan(smaller, cluster, (role,), source, rm_seq_len=seq_len).ok:
            return f"{hint}\n  --rm.batch_size {b} would fit (now {cfg.rm.batch_size})"
        b //= 2
    return hint + ("\n  no rm.batch_size fits: shorten rm.max_len, use fewer experts, upcycle fewer layers "
                   "(moe.upcycle_layers), rm.strategy deepspeed with rm.zero_stage 2, or larger nodes")


def explain(plan: Plan) -> str:
    """Why a plan does not fit: the problems, then each role of the failing stages with its memory by kind."""
    lines = [f"the run cannot fit {plan.cluster.source}:"] + [f"  {p}" for p in plan.problems]
    for s in plan.stages:
        if s.problems():
            seen = set()
            for r in s.roles:
                if (r.memory, r.detail) not in seen:  # ensemble members are alike: one line for all
                    seen.add((r.memory, r.detail))
                    lines.append(f"  {s.name}: {r.count} x {r.name}: {fmt_memory(r.memory)}; {r.detail}")
    lines.append("  lower that stage's batch size / max_len / workers / experts, or use larger nodes")
    return "\n".join(lines)


def fmt_memory(m: Memory) -> str:
    parts = " + ".join(f"{k} {v / GiB:.2f}" for k, v in m.parts().items())
    return f"{m.total / GiB:.2f} GiB {'per GPU' if m.device == 'gpu' else 'RAM'} each ({parts})"


def bt_step_estimate(source: str | Path, experts: int = 0, top_k: int = 2, pairs: int = 8, max_len: int = 128,
                     precision: str = "fp32", checkpointing: bool = False, moe_layers: int | None = None,
                     arch: Arch | None = None) -> Memory:
    """One process training a BT reward model on CPU (no DDP), fp32 weights, `precision` 'bf16' = autocast: what
    benchmarks/plan_calibration measures. `arch` instead of `source` for a model built from a config."""
    arch = arch or arch_of(str(source))
    return train_memory(arch, "rm", "fp32", 2 * pairs, max_len, experts=experts,
                        top_k=min(top_k, experts) if experts else 0, world=1, device="cpu",
                        checkpointing=checkpointing, autocast=precision == "bf16", moe_layers=moe_layers)
