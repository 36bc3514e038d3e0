"""The placement plan: every role of a config, its devices and memory, and whether each stage fits the cluster.

A stage is what runs at once (the SFT workers; one reward model's Ray Train workers and its concurrent evaluation;
all ensemble members; PPO's policy ranks, rollout engines, reference, proxy and gold actors). For every role the plan
says how many actors, what each asks Ray for, the model it holds (exact parameter count) in which dtype, and its
memory by kind (umm_ray.plan_memory); `place` (umm_ray.plan_cluster) then checks each stage against the cluster's
node types. Dtypes are what the code does today: Ray Train stages in fp32 weights (SFT / reward training in bf16
autocast with sft.precision / rm.precision bf16), PPO ranks in bf16 on GPU with ppo.precision 'auto' (fp32 weights
otherwise, autocast with 'bf16'); the reference, rollout engines, proxy and gold reward actors in their configured
dtype (ppo.reference_dtype, rollout.dtype, reward.proxy_dtype / gold_dtype; 'auto' = bf16 on GPU, fp32 on CPU,
`umm_ray.dtypes.resolve_dtype`). Gradient checkpointing: where sft/rm/ppo.grad_checkpointing is on, elsewhere off;
`--checkpointing` in jobs.plan shows what it would change everywhere. sft/rm/ppo.micro_batch_tokens bound the rows
whose activations one training step keeps (`budget_rows`). moe.upcycle_layers sets how many layers the MoE roles
upcycle.

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
from umm_ray.plan_cluster import (Bundle, Cluster, Group, NodeType, Placement, accelerator_matches, local_cluster,
                                  members_at_once, place)
from umm_ray.plan_memory import (CPU_RUNTIME, KNOWN_CONFIGS, Arch, GiB, KVPlan, Memory, PlanError, arch_from_config,
                                 arch_of, budget_rows, infer_memory, train_memory, vllm_memory)
from umm_ray.resources import RoleResources, ppo_layout, role_resources, train_placement

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
    accelerator: str = ""  # Ray accelerator type the role asks for ('' = any)
    colocated: bool = False  # actor i shares bundle i of the `group` placement group (resources.colocate)
    whole_gpu: bool = False  # its bundles hold a whole GPU whatever its share (the group colocated roles join)

    def bundle(self) -> Bundle:
        m = self.memory
        gpus = 1.0 if self.whole_gpu and self.gpus else self.gpus
        if m.device == "gpu":  # the host side of a GPU process: runtime, plus the weights while loading
            return Bundle(self.name, self.cpus, gpus, CPU_RUNTIME + m.params, m.total, self.accelerator)
        return Bundle(self.name, self.cpus, gpus, m.total, 0, self.accelerator)

    @property
    def placement(self) -> str:
        """What the role asks Ray for, in words: its group and strategy, or the bundles it shares."""
        if self.colocated:
            return f"in {self.group} bundle{'s 0..' + str(self.count - 1) if self.count > 1 else ' 0'}"
        acc = f" on {self.accelerator}" if self.accelerator else ""
        return f"{self.group.replace('{i}', '<i>')} {self.strategy}{acc}"


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
                if r.colocated:  # joins bundle i of its group: one whole GPU, shared by fractions
                    by[key][i] = _share(by[key][i], r.bundle())
                    continue
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


def _share(a: Bundle, b: Bundle) -> Bundle:
    """Two colocated claims as one bundle: CPUs and memory add up, the GPU is one whole device (shares <= 1)."""
    return Bundle(f"{a.role}+{b.role}", a.cpus + b.cpus, 1.0 if a.gpus or b.gpus else 0.0,
                  a.host_memory + b.host_memory, a.gpu_memory + b.gpu_memory, a.accelerator or b.accelerator)


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


def _dev(claim: RoleResources) -> str:
    return "gpu" if claim.gpus > 0 else "cpu"


def _rm_train_role(cfg: Config, stage: str, name: str, arch: Arch, *, experts: int = 0, merge: bool = False,
                   group: str = "{stage}", strategy: str = "PACK", checkpointing: bool = False,
                   seq_len: int | None = None) -> Role:
    r, w = cfg.rm, role_resources(cfg, "train")
    top_k = min(cfg.moe.top_k, experts) if experts else 0
    n_moe = len(cfg.moe.upcycle_layers) or None if experts else None  # [] = all layers
    # chosen + rejected rows; share_prompt: one row per pair, at worst (nothing shared) 2 x max_len long
    per_pair, T = (1, 2 * (seq_len or r.max_len)) if r.share_prompt else (2, seq_len or r.max_len)
    seqs = per_pair * r.batch_size
    rows = budget_rows(seqs, T, r.micro_batch_tokens, rows_per_item=per_pair)
    mem = train_memory(arch, "rm", "fp32", rows, T, experts=experts, top_k=top_k, merge=merge,
                       world=r.num_workers, strategy=r.strategy, zero_stage=r.zero_stage,
                       checkpointing=checkpointing or r.grad_checkpointing, device=_dev(w),
                       autocast=r.precision == "bf16", moe_layers=n_moe)
    what = f"MoE {experts}+1 experts top-{top_k}" if experts and not merge else \
        f"merge of {experts}+1 experts (theta only)" if merge else "dense"
    if n_moe:
        what += f" in {n_moe} of {arch.layers} layers"
    return Role(stage, name, r.num_workers, w.cpus, w.gpus, group.format(stage=stage, i="{i}"),
                train_placement(cfg, strategy), arch.source, arch.params("rm", experts, n_moe), "fp32", mem,
                f"{what}; {'; '.join(mem.notes)}; {_rows(seqs, rows)} x {T}", accelerator=w.accelerator)


def _eval_task(cfg: Config, stage: str, arch: Arch, experts: int = 0, seq_len: int | None = None) -> Role:
    """evaluate_initial: a 1-CPU Ray task scoring the untrained model while the workers train (no GPU)."""
    top_k = min(cfg.moe.top_k, experts) if experts else 0
    mem = infer_memory(arch, "rm", "fp32", 64, seq_len or cfg.rm.max_len, experts=experts, top_k=top_k, device="cpu")
    n_moe = len(cfg.moe.upcycle_layers) or None if experts else None
    return Role(stage, "initial eval task", 1, 1.0, 0.0, f"{stage}/eval", "PACK", arch.source,
                arch.params("rm", experts, n_moe), "fp32", mem, "64 seqs per batch, concurrent with training")


def rm_stages(cfg: Config, kind: str, arch: Arch, experts: list[int], checkpointing: bool = False,
              seq_len: int | None = None, cluster: Cluster | None = None) -> list[StagePlan]:
    """The stages of one reward-model kind: dense | moe | umm | ensemble. `seq_len`: the longest training row in
    tokens when known (batches pad to their longest row), else rm.max_len."""
    ck = {"checkpointing": checkpointing, "seq_len": seq_len}
    if kind == "dense":
        return [StagePlan("rm_dense", (_rm_train_role(cfg, "rm_dense", "RM worker", arch, **ck),
                                   _eval_task(cfg, "rm_dense", arch, seq_len=seq_len)))]
    if kind == "ensemble":
        k = members_at_once(cfg.ensemble.worker_group, cfg.ensemble.members, cluster)  # shared: one at a time
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
    s, w = cfg.sft, role_resources(cfg, "train")
    dev = _dev(w)
    arch = model_arch(cfg, cfg.sft.base_path)
    T = cfg.model.max_seq_len
    rows = budget_rows(s.batch_size, T, s.micro_batch_tokens)
    mem = train_memory(arch, "lm", "fp32", rows, T, world=s.num_workers, strategy=s.strategy, zero_stage=1,
                       checkpointing=checkpointing or s.grad_checkpointing, device=dev, lm_tokens=rows * T,
                       autocast=s.precision == "bf16")
    role = Role("sft", "SFT worker", s.num_workers, w.cpus, w.gpus, "sft", train_placement(cfg), arch.source,
                arch.params("lm"), "fp32", mem, f"{'; '.join(mem.notes)}; {_rows(s.batch_size, rows)} x {T}",
                accelerator=w.accelerator)
    return StagePlan("sft", (role,))


def _rows(batch: int, rows: int) -> str:
    """How a role's batch is described: '8 seqs', or '2 of 8 seqs per token-budget micro-batch'."""
    return f"{batch} seqs" if rows == batch else f"{rows} of {batch} seqs per token-budget micro-batch"


def _proxy(cfg: Config) -> tuple[int, int]:
    """(actors, experts) of the largest proxy PPO runs against: ensemble members, or one (MoE when unmerged)."""
    ensembles = cfg.reward.proxy == "ensemble" or any(str(p).startswith("ensemble") for p in cfg.compare.ppo_rms)
    return (cfg.ensemble.members if ensembles else 1), (cfg.moe.num_experts if cfg.reward.proxy == "moe" else 0)


def ppo_stage(cfg: Config, cluster: Cluster, checkpointing: bool = False) -> StagePlan:
    """Policy ranks (policy + critic under DeepSpeed), rollout engines, reference, proxy and gold reward actors, each
    with its resources.* claim; colocated roles (resources.colocate) join the policy group's whole-GPU bundles."""
    p, ro = cfg.ppo, cfg.rollout
    c = {r: role_resources(cfg, r) for r in ("policy", "rollout", "reference", "proxy", "gold")}
    layout = ppo_layout(cfg)
    co = {r for r in layout.slots}
    pol = model_arch(cfg, policy_source(cfg))
    pc = c["policy"]
    rank_dtype = "bf16" if pc.gpus > 0 and p.precision == "auto" else "fp32"  # ppo.precision: PolicyActor's weights

    def dtype(key: str, role: str) -> str:  # inference precision per role ('auto': bf16 on a GPU, else fp32)
        return resolve_dtype(key, "cuda" if c[role].gpus > 0 else "cpu")
    ro_dtype, ref_dtype = dtype(ro.dtype, "rollout"), dtype(p.reference_dtype, "reference")
    proxy_dtype, gold_dtype = dtype(cfg.reward.proxy_dtype, "proxy"), dtype(cfg.reward.gold_dtype, "gold")
    T, R = cfg.model.max_seq_len, ro.max_new_tokens
    rows = budget_rows(p.micro_batch_size, T, p.micro_batch_tokens)
    mem = train_memory(pol, "actor_critic", rank_dtype, rows, T, world=p.world_size, strategy="deepspeed",
                       zero_stage=p.zero_stage, checkpointing=checkpointing or p.grad_checkpointing,
                       device=_dev(pc), lm_tokens=rows * R, autocast=p.precision == "bf16")
    roles = [Role("ppo", "policy+critic rank", p.world_size, pc.cpus, pc.gpus, "policy", layout.strategy, pol.source,
                  pol.params("lm") + pol.params("base") + pol.hidden + 1, rank_dtype, mem,
                  f"policy {pol.params('lm') / 1e6:.1f}M + critic trunk {pol.params('base') / 1e6:.1f}M + value "
                  f"head, one DeepSpeed engine; {'; '.join(mem.notes)}; {_rows(p.micro_batch_size, rows)} x {T}",
                  accelerator=pc.accelerator, whole_gpu=bool(co))]

    def where(role: str) -> dict:
        claim = c[role]
        if role in co:  # the policy group's bundles pin the accelerator
            return {"group": "policy", "strategy": layout.strategy, "colocated": True, "accelerator": pc.accelerator}
        return {"group": {"rollout": "engine{i}"}.get(role, role), "strategy": "PACK",
                "accelerator": claim.accelerator}

    rc = c["rollout"]
    if ro.backend == "vllm":
        if ro.tensor_parallel_size > 1:  # an engine asks for tensor_parallel_size GPUs (`ppo.roles.engine_gpus`)
            rc = replace(rc, gpus=float(ro.tensor_parallel_size))
        # the engine's context, as `make_engine` gives it: model.max_seq_len, not the checkpoint's full context
        ctx = min(T, pol.max_positions) if pol.max_positions else T
        kv = vllm_memory(pol, ro_dtype, ro.gpu_memory_utilization, device=_dev(rc),
                         device_bytes=_device_bytes(cluster, rc, where("rollout")["accelerator"]), max_model_len=ctx)
        roles.append(_role("rollout engine (vLLM)", ro.num_engines, rc, pol.source, pol.params("lm"), ro_dtype,
                           kv.memory, f"KV cache {kv.memory.kv_cache / GiB:.1f} GiB = {kv.kv_tokens} tokens "
                           f"({kv.kv_tokens // ctx} x max_model_len {ctx})", where("rollout"), kv))
    else:
        m = infer_memory(pol, "lm", ro_dtype, 64, T, device=_dev(rc), lm_tokens=64)
        roles.append(_role("rollout engine (HF)", ro.num_engines, rc, pol.source, pol.params("lm"), ro_dtype, m,
                           "64 seqs per generate call", where("rollout")))
    ref = infer_memory(pol, "lm", ref_dtype, p.micro_batch_size, T, device=_dev(c["reference"]),
                       lm_tokens=p.micro_batch_size * R)
    roles.append(_role("reference", 1, c["reference"], pol.source, pol.params("lm"), ref_dtype, ref,
                       f"{p.micro_batch_size} seqs x {T}", where("reference")))
    n_proxy, experts = _proxy(cfg)
    rm = model_arch(cfg, rm_source(cfg))
    top_k = min(cfg.moe.top_k, experts) if experts else 0
    pm = infer_memory(rm, "rm", proxy_dtype, cfg.reward.batch_size, cfg.rm.max_len, experts=experts, top_k=top_k,
                      device=_dev(c["proxy"]))
    proxy_where = {**where("proxy"), "strategy": cfg.ensemble.placement if n_proxy > 1 else "PACK"}
    roles.append(_role("proxy RM actor", n_proxy, c["proxy"], rm.source, rm.params("rm", experts), proxy_dtype, pm,
                       f"{cfg.reward.batch_size} seqs x {cfg.rm.max_len}", proxy_where))
    gold = cfg.reward.gold
    if gold in ("testbed", "remote"):
        gm = Memory("cpu", runtime=CPU_RUNTIME, notes=("programmatic",))
        roles.append(_role(f"gold ({gold})", 1, c["gold"], gold, 0, "-", gm, "no model weights", where("gold")))
    else:
        ga = model_arch(cfg, gold)
        gm = infer_memory(ga, "rm", gold_dtype, cfg.reward.batch_size, cfg.rm.max_len, device=_dev(c["gold"]))
        roles.append(_role("gold RM actor", 1, c["gold"], ga.source, ga.params("rm"), gold_dtype, gm,
                           f"{cfg.reward.batch_size} seqs x {cfg.rm.max_len}", where("gold")))
    return StagePlan("ppo", tuple(roles))


def _role(name: str, count: int, claim: RoleResources, model: str, params: int, dtype: str, memory: Memory,
          detail: str, where: dict, kv: KVPlan | None = None) -> Role:
    return Role("ppo", name, count, claim.cpus, claim.gpus, where["group"], where["strategy"], model, params, dtype,
                memory, detail, kv, accelerator=where["accelerator"], colocated=where.get("colocated", False))


def _device_bytes(cluster: Cluster, claim: RoleResources, accelerator: str) -> int:
    """Memory of the device a role runs on: the smallest GPU it may land on (of its accelerator type when pinned), or
    the largest node's RAM on CPU (vLLM on CPU sizes its KV cache from RAM)."""
    if claim.gpus <= 0:
        return max(t.ram for t in cluster.node_types)
    mems = [t.gpu_memory for t in cluster.node_types if t.gpus and accelerator_matches(accelerator, t.accelerator)]
    return min(mems) if mems else smallest_gpu(cluster)


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
            out.append(ppo_stage(cfg, cluster, checkpointing))
        elif w.startswith("rm_"):
            kind = w[3:]
            exp = umm_experts if kind == "umm" else [cfg.moe.num_experts]
            if kind == "moe" and "rm_umm" in which:
                continue  # the UMM stages include the MoE training of every expert count
            out += rm_stages(cfg, kind, rm, exp, checkpointing, rm_seq_len, cluster)
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
        # the type Ray reports (accelerator_type:<X>), so a role pinned to it fits here
        acc = next((k.split(":", 1)[1] for k in res if k.startswith("accelerator_type:")), "local GPU")
        cluster = replace(cluster, node_types=(NodeType(t.name, t.cpus, int(res["GPU"]), t.ram, gpu, acc,
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
    if not cfg.rm.micro_batch_tokens:  # also keeps the batch and the update: fewer pairs' activations at a time
        n, T = cfg.rm.batch_size // 2, seq_len or cfg.rm.max_len
        while n >= 1:
            budget = replace(cfg, rm=replace(cfg.rm, micro_batch_tokens=2 * n * T))
            if make_plan(budget, cluster, (role,), source, rm_seq_len=seq_len).ok:
                hint += (f"\n  --rm.micro_batch_tokens {2 * n * T} would fit (same batch and update, {n} pairs at "
                         "a time)")
                break
            n //= 2
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
