"""Memory of one role's process, estimated from the model's architecture: parameters, gradients, optimizer state,
communication buffers, activations, KV cache, runtime. Pure arithmetic on `Arch` numbers; no Ray, no weights.

Architecture numbers come from the model config: a local HF dir's config.json, the built-in table `KNOWN_CONFIGS` of
hub ids the gpu preset names (no hub access needed), or a config object (the testbed's tiny model). Parameter counts
are exact: the model is instantiated on the meta device (`with torch.device("meta")`), which allocates nothing.

    arch = arch_of(resolve_model("smollm2-135m"))  # umm_ray.pretrained
    mem = train_memory(arch, head="rm", dtype="fp32", seqs=16, seq_len=128, experts=2, top_k=2)
    mem.total, mem.parts()

Calibration (benchmarks/plan_calibration.py: SmolLM2-135M, 8 pairs x 128 tokens, fp32, CPU, peak RSS of the second
training step): dense measured 5.86 GiB, estimated 6.26 GiB; 2-expert UMM MoE measured 12.54 GiB, estimated 13.3 GiB.
The levers (benchmarks/rm_levers.py: a 6-layer random-init cut of SmolLM2-135M, 4 pairs x 128 tokens, CPU): estimate
over measured peak RSS 1.07 / 1.02 / 0.98 / 1.00 for dense fp32 / bf16 / fp32 + grad ckpt / bf16 + grad ckpt, and
1.09 / 1.07 for a 6+1-expert MoE in fp32 / bf16 + grad ckpt (the latter with AUTOCAST_MOE_HEAP_BYTES_PER_EXPERT_PARAM).
"""

from __future__ import annotations

import copy
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path

GiB = 2 ** 30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# Runtime of one worker process before any model: Python + torch + transformers (+ Ray worker) resident set, and on
# GPU the CUDA context and allocator slack on the device. Measured ~0.25 GiB RSS after imports alone on CPU; a Ray
# Train worker also holds Ray, the dataset shard and the tokenizer.
CPU_RUNTIME = int(0.75 * GiB)
GPU_RUNTIME = int(1.0 * GiB)

# Freed activations are not all reusable for the next allocations (allocator fragmentation, backward transients):
# measured on CPU as the second step's peak beyond params + grads + AdamW + the first forward's activations,
# +0.38 GiB (dense) and +0.81 GiB (MoE-2) on SmolLM2-135M, ~10% of the activations.
ALLOCATOR_SLACK = 0.10

# bf16 autocast of an upcycled MoE on CPU leaves glibc's heap fragmented beyond ALLOCATOR_SLACK: each expert's bf16
# weight gradient, its fp32 cast and the variable-size routed-row tensors are mid-sized transients. Measured on a
# 6-layer SmolLM2-135M cut upcycled to 6+1 experts (111M expert parameters), 2-8 pairs x 128 tokens: peak RSS
# 600-1150 MiB above the live bytes this module counts, i.e. 5.4-10.3 bytes per expert parameter (dense bf16 and
# fp32 MoE show none). With MALLOC_MMAP_THRESHOLD_=65536 the same run peaked at the estimate of live bytes (3509 vs
# 3522 MiB). The upper end is used: the plan's job is to stop a run before Ray's OOM killer does.
AUTOCAST_MOE_HEAP_BYTES_PER_EXPERT_PARAM = 10

# Built-in configs of the hub models the gpu preset names, from their public model cards' config.json.
KNOWN_CONFIGS: dict[str, dict] = {
    "Qwen/Qwen2.5-0.5B-Instruct": {
        "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936,
        "max_position_embeddings": 32768, "tie_word_embeddings": True, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "hidden_act": "silu", "max_window_layers": 21, "torch_dtype": "bfloat16"},
    "Skywork/Skywork-Reward-Llama-3.1-8B": {
        "model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "num_labels": 1,
        "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 131072,
        "tie_word_embeddings": False, "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
        "torch_dtype": "bfloat16"},
}


class PlanError(ValueError):
    """The plan cannot be made (unknown model, unreadable cluster file); the message names what and where."""


@dataclass(frozen=True)
class Arch:
    """The numbers memory depends on, for one backbone. Parameter counts are exact (meta-device instantiation)."""

    source: str
    family: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    backbone_params: int  # embeddings + decoder layers + final norm (AutoModel)
    lm_head_params: int  # 0 when tied to the embeddings
    score_params: int  # the one-label sequence-classification head
    ffn_params_per_layer: int  # one decoder layer's FFN: what MoE upcycling copies

    @property
    def gated(self) -> bool:
        return self.family in ("llama", "qwen2")  # SwiGLU FFN: gate, up, down

    def params(self, head: str, experts: int = 0, moe_layers: int | None = None) -> int:
        """Parameters of the model as a role holds it: head 'rm' (score head), 'lm' (LM head), 'base' (none);
        `experts` n > 0: upcycled to n normal experts + 1 shared (FFN x (n + 1)) plus the router (gate + noise), in
        `moe_layers` decoder layers (None = all; moe.upcycle_layers)."""
        n = self.backbone_params + {"rm": self.score_params, "lm": self.lm_head_params, "base": 0}[head]
        if experts:
            n += self.moe_layers(moe_layers) * (experts * self.ffn_params_per_layer + 2 * experts * self.hidden)
        return n

    def moe_layers(self, moe_layers: int | None) -> int:
        return self.layers if moe_layers is None else min(moe_layers, self.layers)

    def kv_bytes_per_token(self, dtype: str) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * DTYPE_BYTES[dtype]


def _hf_config(source: str, trust_remote_code: bool = False):
    from transformers import AutoConfig  # heavy: ~2 s; the built-in hub configs need none of it

    if source in KNOWN_CONFIGS:
        fields = dict(KNOWN_CONFIGS[source])
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    path = Path(source)
    if (path / "config.json").is_file():
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    known = ", ".join(KNOWN_CONFIGS)
    raise PlanError(f"model {source!r}: no config.json there and not a built-in hub id ({known}); give a local "
                    f"model directory (the plan never downloads)")


@functools.lru_cache(maxsize=32)
def arch_of(source: str, trust_remote_code: bool = False) -> Arch:
    """Arch of a local HF directory or a `KNOWN_CONFIGS` hub id."""
    return arch_from_config(_hf_config(str(source), trust_remote_code), str(source))


def arch_from_config(config, source: str) -> Arch:
    """Arch of an HF config object, counting parameters on the meta device (exact, allocates nothing)."""
    import torch  # heavy: the estimator itself needs no torch; only exact counts do
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification  # heavy: ~2 s

    config = copy.deepcopy(config)
    config.num_labels = 1
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = getattr(config, "eos_token_id", None) or 0

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        base = AutoModel.from_config(config)
        lm = AutoModelForCausalLM.from_config(config)
        rm = AutoModelForSequenceClassification.from_config(config)
    layers = getattr(base, "layers", None) or getattr(base, "h", None)
    if layers is None:
        raise PlanError(f"model {source!r}: cannot find the decoder layers of {type(base).__name__}")
    mlp = layers[0].mlp
    g = lambda *keys: next((getattr(config, k) for k in keys if getattr(config, k, None) is not None), None)  # noqa
    hidden = int(g("hidden_size", "n_embd"))
    heads = int(g("num_attention_heads", "n_head"))
    head_dim = int(g("head_dim") or hidden // heads)
    ffn = int(g("intermediate_size", "n_inner") or 4 * hidden)
    backbone = count(base)
    return Arch(source=source, family=config.model_type, layers=len(layers), hidden=hidden, ffn=ffn, heads=heads,
                kv_heads=int(g("num_key_value_heads") or heads), head_dim=head_dim, vocab=int(config.vocab_size),
                max_positions=int(g("max_position_embeddings", "n_positions") or 0), backbone_params=backbone,
                lm_head_params=count(lm) - backbone, score_params=count(rm) - backbone,
                ffn_params_per_layer=count(mlp))


@dataclass(frozen=True)
class Memory:
    """Bytes one process needs, by kind. `device` says where it lives: host RAM ('cpu') or one GPU ('gpu')."""

    device: str
    params: int = 0
    grads: int = 0
    optimizer: int = 0
    buffers: int = 0  # DDP gradient buckets, DeepSpeed reduce buckets, ZeRO-3 gathered layers
    activations: int = 0
    kv_cache: int = 0
    runtime: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.buffers + self.activations + self.kv_cache \
            + self.runtime

    def parts(self) -> dict[str, int]:
        d = asdict(self)
        return {k: v for k, v in d.items() if isinstance(v, int) and v}


def _layer_act_bytes(arch: Arch, seq_len: int, math_attention: bool, experts: int = 0, top_k: int = 0,
                     autocast: bool = False, dtype: str = "fp32") -> int:
    """Activation bytes one token leaves in one decoder layer for the backward pass.

    Attention block: norm in/out, q, k, v, rotary q/k, attention output, o-proj out, residual ~ 10 x hidden + k/v.
    Math attention (CPU with a padding mask) also keeps the probabilities, heads x seq_len. FFN: SwiGLU keeps gate,
    up, silu(gate) and their product (4 x ffn; GELU FFNs 2 x ffn). A shared-expert MoE runs the shared expert on
    every token and top_k routed experts, each with its gathered input, output, gated output and the index_add copy.
    Calibrated: SmolLM2-135M dense, fp32, 128 tokens: measured 12.7k elements/token/layer, this gives 13.4k.

    bf16 autocast (`autocast`, fp32 weights): what a matmul produces is bf16 (q, k, v, rotary, attention, o-proj out:
    7 of the 10 hidden-sized tensors; the FFN's 4 x ffn; probabilities), while the residual stream, the RMSNorm
    in/out and the MoE's gathered inputs, gated outputs and index_add copies stay fp32 (fp32 + bf16 is fp32).
    """
    f_mult = 4 if arch.gated else 2
    kv = 2 * arch.kv_heads * arch.head_dim
    probs = arch.heads * seq_len if math_attention else 0
    if not autocast:
        ffn = f_mult * arch.ffn
        if experts:
            ffn = f_mult * arch.ffn + 2 * arch.hidden + top_k * (f_mult * arch.ffn + 4 * arch.hidden) + 2 * experts
        return (10 * arch.hidden + kv + probs + ffn) * DTYPE_BYTES[dtype]
    narrow = 7 * arch.hidden + kv + probs + f_mult * arch.ffn * (1 + top_k if experts else 1)
    wide = 3 * arch.hidden + ((2 + 4 * top_k) * arch.hidden + 2 * experts if experts else 0)
    return narrow * DTYPE_BYTES["bf16"] + wide * 4


def activation_bytes(arch: Arch, seqs: int, seq_len: int, dtype: str, checkpointing: bool = False,
                     math_attention: bool = True, experts: int = 0, top_k: int = 0, autocast: bool = False,
                     moe_layers: int | None = None) -> int:
    """Activations kept for backward over one micro-batch, plus one layer's working set for the backward itself.

    With gradient checkpointing only each layer's input survives the forward (the residual stream: fp32 under
    autocast); one layer is recomputed at a time. `moe_layers` of the layers are upcycled (None = all).
    """
    tokens = seqs * seq_len
    dense = tokens * _layer_act_bytes(arch, seq_len, math_attention, 0, 0, autocast, dtype)
    moe = tokens * _layer_act_bytes(arch, seq_len, math_attention, experts, top_k, autocast, dtype) if experts \
        else dense
    n_moe = arch.moe_layers(moe_layers) if experts else 0
    stream = tokens * arch.hidden * (4 if autocast else DTYPE_BYTES[dtype])  # one layer's input / output
    kept = stream * arch.layers if checkpointing else moe * n_moe + dense * (arch.layers - n_moe)
    return kept + max(moe, dense) + stream  # + embeddings output


def budget_rows(rows: int, seq_len: int, budget: int, rows_per_item: int = 1) -> int:
    """Rows one micro-batch holds with a token budget (sft/rm/ppo.micro_batch_tokens; 0 = off: all `rows`), in the
    planner's worst case of every row `seq_len` long: budget // (rows_per_item x seq_len) items (a BT pair is 2 rows),
    at least one (a lone row longer than the budget runs alone), at most the batch. Activations scale with it."""
    if budget <= 0:
        return rows
    items = rows // rows_per_item
    return rows_per_item * min(items, max(1, budget // (rows_per_item * max(seq_len, 1))))


def logits_bytes(arch: Arch, tokens: int, dtype: str, train: bool) -> int:
    """LM-head logits over `tokens` positions: the dtype's logits and an fp32 log-softmax (and its grad in training)."""
    return tokens * arch.vocab * (DTYPE_BYTES[dtype] + 4 * (3 if train else 1))


def train_memory(arch: Arch, head: str, dtype: str, seqs: int, seq_len: int, *, experts: int = 0, top_k: int = 0,
                 merge: bool = False, world: int = 1, strategy: str = "ddp", zero_stage: int = 0,
                 checkpointing: bool = False, device: str = "cpu", lm_tokens: int = 0, twin_trunk: bool = False,
                 autocast: bool = False, moe_layers: int | None = None) -> Memory:
    """One training rank: AdamW, data parallel over `world` ranks with DDP or DeepSpeed ZeRO `zero_stage`.

    head: 'rm' (BT reward model), 'lm' (SFT), 'actor_critic' (PPO policy LM + a critic trunk and value head, as
    umm_ray.ppo.modeling builds it). experts: MoE upcycled to n experts; merge: the UMM merge stage (MoE weights
    frozen, only theta trains, and the merged FFN weights of every layer are kept for backward). lm_tokens: positions
    whose logits the loss reads (LM heads). Optimizer: AdamW's two fp32 moments, plus an fp32 master copy when the
    parameters are not fp32 or DeepSpeed runs (its ZeRO optimizer keeps its own fp32 partition either way);
    ZeRO 1 partitions that state over `world`, ZeRO 2 also the gradients, ZeRO 3 also the parameters.
    autocast: bf16 autocast over `dtype` fp32 parameters (rm.precision bf16): activations mostly bf16, plus the bf16
    copy of every weight a matmul uses, which autocast caches in the forward and autograd keeps for backward.
    moe_layers: how many decoder layers are upcycled (moe.upcycle_layers; None = all).
    """
    b = DTYPE_BYTES[dtype]
    if head == "actor_critic":
        n_params = arch.params("lm") + arch.params("base") + arch.hidden + 1
    else:
        n_params = arch.params(head, experts, moe_layers)
    trainable = arch.moe_layers(moe_layers) * experts if merge else n_params
    ds = strategy == "deepspeed"
    shard = lambda stage: world if ds and zero_stage >= stage else 1  # noqa: E731
    params = n_params * b // shard(3)
    grads = trainable * b // shard(2)
    optimizer = trainable * (8 + (4 if ds or dtype != "fp32" else 0)) // shard(1)
    if ds:  # reduce / all-gather buckets (DeepSpeed defaults 5e8 elements; 5e7 prefetch under ZeRO 3)
        buffers = min(trainable, int(5e8) if zero_stage < 3 else int(5e7)) * b
        if zero_stage == 3:  # one decoder layer gathered in full at a time
            buffers += (arch.backbone_params - arch.vocab * arch.hidden) // arch.layers * b
    else:  # DDP copies gradients into flat buckets when more than one rank exchanges them
        buffers = trainable * b if world > 1 else 0
    math_attention = device == "cpu"
    trunks = 2 if twin_trunk or head == "actor_critic" else 1
    acts = trunks * activation_bytes(arch, seqs, seq_len, dtype, checkpointing, math_attention,
                                     experts if not merge else 0, top_k, autocast, moe_layers)
    if merge:  # merged FFN weights of every merged layer, built each forward and kept for backward
        acts += arch.moe_layers(moe_layers) * arch.ffn_params_per_layer * (b + (2 if autocast else 0))
    if autocast:  # bf16 weight copies (autocast's cache; saved for backward); embeddings are looked up, not cast
        acts += (n_params - arch.vocab * arch.hidden) * DTYPE_BYTES["bf16"]
    if lm_tokens:
        acts += logits_bytes(arch, lm_tokens, dtype, train=True)
    acts = int(acts * (1 + ALLOCATOR_SLACK))
    if autocast and experts and not merge and device == "cpu":
        expert_params = arch.moe_layers(moe_layers) * experts * arch.ffn_params_per_layer
        acts += AUTOCAST_MOE_HEAP_BYTES_PER_EXPERT_PARAM * expert_params
    notes = (f"{'DeepSpeed ZeRO-' + str(zero_stage) if ds else 'DDP'} x{world}",
             "grad ckpt" if checkpointing else "no grad ckpt") + (("bf16 autocast",) if autocast else ())
    return Memory(device, params=params, grads=grads, optimizer=optimizer, buffers=buffers, activations=acts,
                  runtime=GPU_RUNTIME if device == "gpu" else CPU_RUNTIME, notes=notes)


def infer_memory(arch: Arch, head: str, dtype: str, seqs: int, seq_len: int, *, experts: int = 0, top_k: int = 0,
                 device: str = "cpu", lm_tokens: int = 0) -> Memory:
    """A frozen model answering batches (reference log-probs, reward scoring): weights plus one layer's working set
    for one batch (nothing is kept for backward) and the logits the caller reads."""
    b = DTYPE_BYTES[dtype]
    tokens = seqs * seq_len
    # Live at once inside one layer: residual, normed input, q/k/v, attention output (+ probabilities with math
    # attention on CPU), and the FFN's intermediate tensors of every expert that runs (shared + top_k).
    f_mult = 3 if arch.gated else 2
    ffn = f_mult * arch.ffn * (1 + top_k if experts else 1)
    per_token = 6 * arch.hidden + 2 * arch.kv_heads * arch.head_dim + ffn \
        + (arch.heads * seq_len if device == "cpu" else 0)
    acts = tokens * per_token * b + (logits_bytes(arch, lm_tokens, dtype, train=False) if lm_tokens else 0)
    return Memory(device, params=arch.params(head, experts) * b, activations=acts,
                  runtime=GPU_RUNTIME if device == "gpu" else CPU_RUNTIME)


@dataclass(frozen=True)
class KVPlan:
    """A vLLM engine's memory: its budget, what the weights and the profiling pass take, and the KV cache left."""

    memory: Memory
    budget: int  # gpu_memory_utilization x GPU memory (GPU); weights + explicit KV bytes + runtime (CPU)
    kv_tokens: int  # tokens the KV cache holds
    max_model_len: int

    @property
    def ok(self) -> bool:
        return self.kv_tokens >= self.max_model_len  # vLLM refuses to start when one full sequence does not fit


def vllm_memory(arch: Arch, dtype: str, utilization: float, *, device: str, device_bytes: int,
                max_model_len: int, max_num_batched_tokens: int = 8192, max_num_seqs: int = 256) -> KVPlan:
    """vLLM engine: on GPU it claims `utilization` x the GPU's memory for weights + profiled activations + KV cache;
    on CPU (umm_ray's RolloutActor) the KV cache is exactly `utilization` x node RAM and weights come on top.
    The profiling pass runs `max_num_batched_tokens` through one layer at a time and samples `max_num_seqs` logits."""
    b = DTYPE_BYTES[dtype]
    weights = arch.params("lm") * b
    profile = max_num_batched_tokens * (4 * arch.hidden + 3 * arch.ffn) * b + max_num_seqs * arch.vocab * 4 * 2
    per_token = arch.kv_bytes_per_token(dtype)
    if device == "gpu":
        budget = int(utilization * device_bytes)
        kv = max(0, budget - weights - profile)
        mem = Memory("gpu", params=weights, activations=profile, kv_cache=kv, runtime=GPU_RUNTIME,
                     notes=(f"budget {utilization:g} x GPU",))
    else:
        kv = int(utilization * device_bytes)
        mem = Memory("cpu", params=weights, activations=profile, kv_cache=kv, runtime=CPU_RUNTIME,
                     notes=(f"KV {utilization:g} x RAM",))
        budget = mem.total
    return KVPlan(mem, budget, kv // per_token, max_model_len)
