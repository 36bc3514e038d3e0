"""PolicyActor: one data-parallel rank of the policy + critic under DeepSpeed ZeRO (stage 0/1/2/3), and its group.

Each rank is a Ray actor that joins a torch.distributed process group (gloo on CPU, NCCL on GPU) at a shared master
address/port that rank 0 picks. The driver talks to the ranks through `PolicyGroup`, whose methods fan a call out to
every rank and `ray.get` the results explicitly. Every method that touches parameters is collective under ZeRO-3, so
the group always calls all ranks, with equal-sized shards.

    group = PolicyGroup(policy_path, cfg.ppo, seed=0)
    logp, values = group.forward_logprobs_values(batch)      # Tensor[B, R] each
    stats = group.train_step(experience, step)               # mean over ranks
    weights = group.state_dict_ref()                          # ObjectRef of {hf_name: tensor}, from rank 0
    # (or rank 0 broadcasts buckets to the engines: sync_layout / join_weight_sync / broadcast_weights, ppo/sync.py)
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import warnings
from pathlib import Path

import ray
import torch

from umm_ray.actors.placement import in_group, make_placement_group, release
from umm_ray.actors.weight_sync import Bucket, SyncGroup, pack, plan_buckets
from umm_ray.algo.ppo import joint_loss
from umm_ray.config import PPOConfig
from umm_ray.dtypes import warn_if_slow_bf16
from umm_ray.model_hub import local_model
from umm_ray.ppo.experience import (Experience, PolicyBatch, micro_batches, per_token_over_micro_batches, shard,
                                    token_budget_pieces)
from umm_ray.ppo.modeling import gather_logprobs, load_actor_critic
from umm_ray.resources import PPOLayout, RoleResources
from umm_ray.train.collective import max_over_ranks
from umm_ray.train.levers import adamw, deepspeed_autocast, enable_grad_checkpointing, import_deepspeed, worker_threads

DS_TAG = "ds"  # DeepSpeed checkpoint tag inside a checkpoint directory


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def weights_dtype(ppo: PPOConfig, gpu: bool) -> torch.dtype:
    """The dtype the policy + critic are loaded in: bf16 only for ppo.precision 'auto' on GPU (DeepSpeed's bf16
    mode); 'bf16' autocasts over fp32 weights, which stay the masters."""
    return torch.bfloat16 if ppo.precision == "auto" and gpu else torch.float32


def deepspeed_config(ppo: PPOConfig, world_size: int, gpu: bool) -> dict:
    """The DeepSpeed config: one optimizer step per micro-batch on each rank (global batch = micro x world);
    ppo.precision bf16 adds the torch_autocast section (fp32 masters), 'auto' keeps DeepSpeed's bf16 mode on GPU."""
    bf16 = weights_dtype(ppo, gpu) == torch.bfloat16
    if ppo.precision == "bf16" and not gpu:
        warn_if_slow_bf16("ppo.precision")  # an AVX2-only CPU runs bf16 ~20x slower than fp32
    return {**deepspeed_autocast("bf16" if ppo.precision == "bf16" else "fp32"),
        "train_micro_batch_size_per_gpu": ppo.micro_batch_size,
        "gradient_accumulation_steps": 1,
        "train_batch_size": ppo.micro_batch_size * world_size,
        "gradient_clipping": ppo.max_grad_norm,
        "zero_optimization": {"stage": ppo.zero_stage},
        "bf16": {"enabled": bf16},
        # We pass a torch AdamW; without this DeepSpeed insists on its own CPU Adam when it sees no GPU.
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10 ** 9,
        "wall_clock_breakdown": False,
    }


class PolicyActor:
    """One rank. Create through `PolicyGroup` (it wires the ranks together); every public method is a Ray call."""

    def __init__(self, policy_path: str, ppo: PPOConfig, rank: int, world_size: int, seed: int = 0,
                 temperature: float = 1.0, trust_remote_code: bool = False, num_threads: int = 1):
        torch.set_num_threads(num_threads)
        self.num_threads = num_threads
        # DeepSpeed still calls torch.distributed's deprecated all_gather_into_tensor; one warning per call is noise.
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")
        self.path, self.ppo, self.rank, self.world_size = policy_path, ppo, rank, world_size
        self.seed, self.temperature, self.trust_remote_code = seed, temperature, trust_remote_code
        self.name = f"PolicyActor[rank {rank}/{world_size}]"
        self.engine = None

    def master_address(self) -> tuple[str, int]:
        """(ip, free port) of this node; called on rank 0 to set up the rendezvous."""
        return ray.util.get_node_ip_address(), _free_port()

    def init(self, master_addr: str, master_port: int) -> int:
        """Join the process group, load the models, build the DeepSpeed engine. Collective: call on all ranks at once.

        Returns the number of trainable parameters (policy + critic).
        """
        deepspeed = import_deepspeed()  # heavy: probes accelerators and builds op registries on import

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK="0")
        gpu = torch.cuda.is_available()
        deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo", auto_mpi_discovery=False, verbose=False)
        return self.reset()

    def reset(self, policy_path: str | None = None) -> int:
        """(Re)load policy + critic from `policy_path` (default: the current one) with a fresh optimizer and DeepSpeed
        engine, seeded as at start: the rank is then as if newly started, so one group can serve several PPO runs.
        Collective. Returns the number of trainable parameters (policy + critic)."""
        deepspeed = import_deepspeed()  # heavy: probes accelerators and builds op registries on import

        self.path = policy_path or self.path
        self.engine = None  # drop the previous engine (and its optimizer state) before building the next
        gc.collect()
        gpu = torch.cuda.is_available()
        torch.manual_seed(self.seed)  # the value head's initialisation
        # a hub id loads from this node's snapshot (one download per node, under the cache lock)
        model, self.tokenizer = load_actor_critic(local_model(self.path, "ppo.policy_path"),
                                                  dtype=weights_dtype(self.ppo, gpu),
                                                  trust_remote_code=self.trust_remote_code)
        if self.ppo.grad_checkpointing:  # policy and critic trunk; before DeepSpeed wraps the model
            enable_grad_checkpointing(model, key="ppo.grad_checkpointing")
        critic_params = list(model.critic.parameters()) + list(model.value_head.parameters())
        groups = [{"params": list(model.policy.parameters()), "lr": self.ppo.actor_lr},
                  {"params": critic_params, "lr": self.ppo.critic_lr}]
        optimizer = adamw(groups, self.ppo.actor_lr, 0.0, betas=(0.9, 0.95), eps=1e-8)
        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer,
                                               config=deepspeed_config(self.ppo, self.world_size, gpu))
        self.device = self.engine.device
        return sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())

    def _forward(self, mb: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        ids = mb.input_ids.to(self.device)
        return self.engine(ids, mb.attention_mask.to(self.device), mb.position_ids.to(self.device),
                           mb.prompt_width, self.temperature)

    @torch.no_grad()
    def forward_logprobs_values(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probs and values of this rank's shard under the current weights.

        Returns:
            (logprobs, values): Tensor[b, R] each on CPU, zero at padding.
        """
        self.engine.eval()

        def logprobs_values(mb: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
            logits, values = self._forward(mb)
            return gather_logprobs(logits, mb.response_ids.to(self.device)), values

        return per_token_over_micro_batches(batch, self.ppo.micro_batch_size, logprobs_values)

    def train_step(self, exp: Experience, step: int) -> dict[str, float]:
        """`ppo_epochs` passes over this rank's shard, one optimizer step per micro-batch (all ranks in lockstep).

        Returns:
            Means over micro-batches: policy_loss, value_loss, clip_frac, entropy, approx_kl, grad_norm.
        """
        self.engine.train()
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step * self.world_size + self.rank)
        totals: dict[str, float] = {}
        n = 0
        # ppo.update_threads: the update runs while the other roles wait, so it may use more threads than the
        # rollout-time forward, which shares the cores with the reference and the reward models
        torch.set_num_threads(self.ppo.update_threads or self.num_threads)
        try:
            for _ in range(self.ppo.ppo_epochs):
                for mb in micro_batches(exp, self.ppo.micro_batch_size, gen):
                    for k, v in self._update(mb).items():
                        totals[k] = totals.get(k, 0.0) + v
                    n += 1
        finally:
            torch.set_num_threads(self.num_threads)
        return {k: v / n for k, v in totals.items()}

    def _update(self, mb: Experience) -> dict[str, float]:
        """One optimizer step on one micro-batch: in token-budget pieces when ppo.micro_batch_tokens > 0, their
        losses weighted by their share of the response tokens, so the gradients add up to the whole micro-batch's."""
        pieces = self._pieces(mb) if self.ppo.micro_batch_tokens > 0 else [(mb, 1.0)]
        stats: dict[str, float] = {}
        for k, (piece, weight) in enumerate(pieces):
            if len(pieces) > 1:  # reduce gradients (and let step() update) only after the last piece
                self.engine.set_gradient_accumulation_boundary(k == len(pieces) - 1)
            loss, piece_stats = self._loss(piece)
            self.engine.backward(loss if len(pieces) == 1 else loss * weight)
            for name, v in piece_stats.items():
                stats[name] = stats.get(name, 0.0) + weight * v
        # ZeRO-1/2/3 report the (pre-clip) global norm; stage 0 does not, so measure the all-reduced grads here.
        own_norm = self._grad_norm() if self.ppo.zero_stage == 0 else None
        self.engine.step()
        grad_norm = own_norm if own_norm is not None else self.engine.get_global_grad_norm()
        return {**stats, "grad_norm": float(grad_norm) if grad_norm is not None else 0.0}

    def _pieces(self, mb: Experience) -> list[tuple[Experience, float]]:
        """Token-budget pieces of one micro-batch; every rank runs as many as the rank that needs most (ZeRO's
        collectives run per forward / backward), splitting its own further."""
        pieces = token_budget_pieces(mb, self.ppo.micro_batch_tokens)
        if self.world_size == 1:
            return pieces
        return token_budget_pieces(mb, self.ppo.micro_batch_tokens, count=max_over_ranks(len(pieces)))

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        """The joint PPO loss of one (piece of a) micro-batch (token means over its response mask) and its stats."""
        logits, values = self._forward(mb)  # ppo.precision bf16: the engine's forward autocasts (torch_autocast)
        d = self.device
        p = self.ppo
        loss, stats = joint_loss(logits, gather_logprobs(logits, mb.response_ids.to(d)), values,
                                 mb.old_logprobs.to(d), mb.advantages.to(d), mb.old_values.to(d), mb.returns.to(d),
                                 mb.response_mask.to(d), clip_eps=p.clip_eps, value_clip=p.value_clip,
                                 vf_coef=p.vf_coef, entropy_coef=p.entropy_coef)
        if not torch.isfinite(loss):
            raise RuntimeError(f"{self.name}: non-finite PPO loss (policy {stats['policy_loss']}, value "
                               f"{stats['value_loss']})")
        return loss, stats

    def _grad_norm(self) -> float:
        grads = [p.grad.detach().float() for p in self.engine.module.parameters() if p.grad is not None]
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()

    def _gathered(self, module: torch.nn.Module):
        """Yield (name, full tensor) for every parameter; under ZeRO-3 each is all-gathered (collective)."""
        deepspeed = import_deepspeed()  # heavy: probes accelerators and builds op registries on import

        for name, p in module.named_parameters():
            if hasattr(p, "ds_id"):
                with deepspeed.zero.GatheredParameters([p], modifier_rank=None):
                    yield name, p.data.detach()
            else:
                yield name, p.data.detach()

    def state_dict_for_sync(self) -> dict[str, torch.Tensor] | None:
        """Rank 0: the full policy weights as {HF parameter name: CPU tensor} (vLLM's `load_weights` naming).

        Collective under ZeRO-3 (every rank must call); ranks other than 0 return None. The critic is not included.
        """
        out = {}
        for name, t in self._gathered(self.engine.module.policy):
            if self.rank == 0:
                out[name] = t.to("cpu", copy=True)
        return out if self.rank == 0 else None

    # ---- weight sync over a collective group (umm_ray.actors.weight_sync; the driver side is umm_ray.ppo.sync) ----

    def sync_layout(self, bucket_bytes: int) -> list[Bucket]:
        """The policy's parameters (HF names, full shapes even when ZeRO-3 partitions them) packed into buckets of
        at most `bucket_bytes`. Same on every rank; each keeps it for `broadcast_weights`."""
        meta = [(n, tuple(getattr(p, "ds_shape", p.shape)), p.dtype)
                for n, p in self.engine.module.policy.named_parameters()]
        self._sync_buckets = plan_buckets(meta, bucket_bytes)
        return self._sync_buckets

    def join_weight_sync(self, host: str, port: int, world_size: int, backend: str) -> None:
        """Rank 0 joins the weight-sync group as its rank 0 and hosts its store at (host, port); other ranks do
        nothing (they only take part in ZeRO-3 gathers). Blocks until every member has joined."""
        self.leave_weight_sync()
        if self.rank == 0:
            self._sync = SyncGroup(host, port, 0, world_size, backend)

    def broadcast_weights(self) -> int:
        """Send the policy weights bucket by bucket (rank 0); under ZeRO-3 each bucket's parameters are all-gathered
        first, so every rank must call. Returns the bytes sent (0 on other ranks)."""
        deepspeed = import_deepspeed()  # heavy: probes accelerators and builds op registries on import

        params = dict(self.engine.module.policy.named_parameters())
        sent = 0
        for bucket in self._sync_buckets:
            ps = [params[s.name] for s in bucket.slots]
            with deepspeed.zero.GatheredParameters([p for p in ps if hasattr(p, "ds_id")], modifier_rank=None):
                if self.rank == 0:
                    self._sync.broadcast(pack(bucket, [p.data for p in ps], self._sync.device))
                    sent += bucket.nbytes
        return sent

    def leave_weight_sync(self) -> None:
        """Drop this rank's weight-sync group (no-op when it has none)."""
        if getattr(self, "_sync", None) is not None:
            self._sync.close()
        self._sync = None

    def param_digest(self) -> float:
        """Sum over every gathered parameter (policy + critic), float64: ranks must agree after each step."""
        total = torch.zeros((), dtype=torch.float64)
        for _, t in self._gathered(self.engine.module):
            total += t.double().sum().cpu()
        return float(total)

    def save_checkpoint(self, ckpt_dir: str) -> None:
        """DeepSpeed engine state (weights, optimizer, scheduler, per-rank ZeRO partitions). Collective."""
        self.engine.save_checkpoint(ckpt_dir, tag=DS_TAG, save_latest=False)

    def load_checkpoint(self, ckpt_dir: str) -> None:
        """Restore what `save_checkpoint` wrote, optimizer state included. Collective."""
        if not (Path(ckpt_dir) / DS_TAG).is_dir():
            raise FileNotFoundError(f"{self.name}: no DeepSpeed checkpoint '{DS_TAG}' in {ckpt_dir}")
        path, _ = self.engine.load_checkpoint(ckpt_dir, tag=DS_TAG, load_optimizer_states=True,
                                              load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"{self.name}: DeepSpeed could not load the checkpoint in {ckpt_dir}")

    def save_hf(self, out_dir: str) -> None:
        """Save the policy as a standard HF checkpoint (+ tokenizer) from rank 0. Collective under ZeRO-3."""
        state = self.state_dict_for_sync()
        if self.rank == 0:
            self.engine.module.policy.save_pretrained(out_dir, state_dict=state)
            self.tokenizer.save_pretrained(out_dir)

    def peak_memory_mb(self) -> float:
        """Peak resident memory of this process (CPU: ru_maxrss; GPU: max allocated), MiB."""
        if torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2 ** 20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PolicyGroup:
    """`world_size` PolicyActor ranks in one placement group (STRICT_PACK on GPUs, PACK on CPU); each method calls
    every rank (explicit ray.get). `layout` (umm_ray.resources.ppo_layout) sets the group's bundles when colocated
    roles share them: they join `self.pg` at the bundles the layout names."""

    def __init__(self, policy_path: str, ppo: PPOConfig, seed: int = 0, temperature: float = 1.0,
                 claim: RoleResources | None = None, trust_remote_code: bool = False, layout: PPOLayout | None = None):
        n = ppo.world_size
        self.world_size = n
        claim = claim or RoleResources("policy", 1.0, 0.0)
        if layout is None:  # ranks alone, one bundle each (a NCCL group is never split over nodes on GPUs)
            layout = PPOLayout(tuple(claim.bundle() for _ in range(n)), tuple(("policy",) for _ in range(n)),
                               "STRICT_PACK" if claim.gpus > 0 else "PACK")
        if len(layout.bundles) != n:
            raise ValueError(f"PolicyGroup: layout has {len(layout.bundles)} bundles for ppo.world_size={n}")
        self.layout = layout
        self.pg = make_placement_group("policy", list(layout.bundles), strategy=layout.strategy)
        cls = ray.remote(PolicyActor)
        self.ranks = [cls.options(**claim.bundle_options(), scheduling_strategy=in_group(self.pg, r),
                                  name=None).remote(policy_path, ppo, r, n, seed, temperature, trust_remote_code,
                                                    worker_threads(claim.cpus))
                      for r in range(n)]
        addr, port = ray.get(self.ranks[0].master_address.remote())
        self.num_params = ray.get([a.init.remote(addr, port) for a in self.ranks])[0]

    def reset(self, policy_path: str) -> None:
        """Every rank back to `policy_path` with fresh optimizer state (`PolicyActor.reset`)."""
        ray.get([a.reset.remote(policy_path) for a in self.ranks])

    def forward_logprobs_values(self, batch: PolicyBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Whole batch -> (logprobs, values) Tensor[B, R] each, computed data-parallel over the ranks."""
        return self.collect_forward(self.submit_forward(batch))

    def submit_forward(self, batch: PolicyBatch) -> list[ray.ObjectRef]:
        """Start `forward_logprobs_values` on every rank's shard; `collect_forward` waits for it (the driver runs the
        reference and the reward models meanwhile)."""
        return [a.forward_logprobs_values.remote(s) for a, s in zip(self.ranks, shard(batch, self.world_size))]

    @staticmethod
    def collect_forward(refs: list[ray.ObjectRef]) -> tuple[torch.Tensor, torch.Tensor]:
        """The ranks' (logprobs, values) shards -> Tensor[B, R] each, in batch order."""
        outs = ray.get(refs)
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def train_step(self, exp: Experience, step: int) -> dict[str, float]:
        """One PPO update over the whole experience batch; returns stats averaged over ranks."""
        stats = ray.get([a.train_step.remote(s, step) for a, s in zip(self.ranks, shard(exp, self.world_size))])
        return {k: sum(s[k] for s in stats) / len(stats) for k in stats[0]}

    def state_dict_ref(self) -> ray.ObjectRef:
        """ObjectRef of rank 0's {HF name: tensor}; pass it straight to `RolloutActor.update_weights.remote`."""
        refs = [a.state_dict_for_sync.remote() for a in self.ranks]
        ray.get(refs[1:])  # the other ranks only take part in the gathers
        return refs[0]

    def param_digests(self) -> list[float]:
        return ray.get([a.param_digest.remote() for a in self.ranks])

    def save_checkpoint(self, ckpt_dir: str) -> None:
        ray.get([a.save_checkpoint.remote(ckpt_dir) for a in self.ranks])

    def load_checkpoint(self, ckpt_dir: str) -> None:
        ray.get([a.load_checkpoint.remote(ckpt_dir) for a in self.ranks])

    def save_hf(self, out_dir: str) -> None:
        ray.get([a.save_hf.remote(out_dir) for a in self.ranks])

    def peak_memory_mb(self) -> list[float]:
        return ray.get([a.peak_memory_mb.remote() for a in self.ranks])

    def shutdown(self) -> None:
        for a in self.ranks:
            ray.kill(a)
        release(self.pg)
