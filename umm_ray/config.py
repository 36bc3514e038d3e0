"""Typed configuration: one dataclass per component, YAML storage, dotted CLI overrides.

Every field has a default that runs the tiny CPU preset and a help string. Values are validated when a config is
built, so a typo or a wrong type fails at start with a message naming the key, never hours into a run.

    cfg = load_config("conf.yaml", ["--ppo.kl_coef", "0.05", "--rm.kind", "umm"])
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from umm_ray.config_dmoe import DMoEConfig
from umm_ray.config_ensemble import EnsembleConfig
from umm_ray.config_compare import CompareConfig
from umm_ray.config_fields import ConfigError, is_int, opt
from umm_ray.config_levers import grad_checkpointing_opt, micro_batch_tokens_opt, ppo_precision_opt, precision_opt
from umm_ray.config_resources import ResourcesConfig
from umm_ray.config_rollout import RolloutConfig
from umm_ray.config_serve import ServeConfig
from umm_ray.data.chat import CHAT_MODES
from umm_ray.dtypes import DTYPES
from umm_ray.models.families import ARCH_FAMILIES
from umm_ray.resources import check_resources


PROXY_KINDS = ("auto", "dense", "umm", "moe", "ensemble", "dmoe", "remote")

# Keys that were renamed or moved: a config that still uses one stops with the new name instead of "unknown key".
RENAMED = {
    "testbed.val_frac": "rm.val_frac (the split fractions govern every preference file, not only the testbed's)",
    "testbed.test_frac": "rm.test_frac (the split fractions govern every preference file, not only the testbed's)",
    "model.policy_path": "sft.base_path (it only ever chose the model SFT starts from; the policy PPO / BoN start "
                         "from is ppo.policy_path / bon.policy_path)",
}


@dataclass
class RunConfig:
    output_dir: str = opt("runs/default", "Where every stage writes its outputs and checkpoints: a POSIX path (no "
                                          "s3:// URIs), made absolute on the driver; on a multi-node cluster a "
                                          "shared mount every node sees (cluster.yaml: /mnt/shared/runs/NAME), "
                                          "checked at start.")
    seed: int = opt(0, "Global seed; everything is deterministic given it.")
    ray_address: str = opt("auto", "Ray address; 'auto' joins a running cluster (or starts a local one when none is "
                                   "running), 'local' always starts a fresh in-process one.")
    num_cpus_per_actor: float = opt(1.0, "Logical CPUs of every role whose resources.<role>_cpus is -1.", lo=0)
    num_gpus_per_actor: float = opt(0.0, "GPUs of every role whose resources.<role>_gpus is -1 (0 on CPU).", lo=0)
    keep_checkpoints: bool = opt(False, "Keep a finished stage's resume state (Ray Train checkpoints under its "
                                        "ray_train/, PPO's checkpoints/: weights and optimizer state). Off: deleted "
                                        "once the stage is done, as only an interrupted stage resumes from it.")


@dataclass
class TestbedConfig:
    n_prompts: int = opt(3000, "Prompts generated for the embedded instruction world.", lo=16)
    vocab_size: int = opt(1024, "Size of the locally trained tokenizer's vocabulary.", lo=64)
    # 0.1 / 0.1, not 0.25 / 0.3: noisier labels left PPO nothing to gain before it hacked (docs/ppo-sweep.md).
    label_noise: float = opt(0.1, "Probability a gold preference label is flipped.", lo=0.0, hi=0.5)
    label_length_bias: float = opt(0.1, "Probability the labeller picks the longer response whatever gold says "
                                        "(human raters' length bias; the shortcut proxies learn).", lo=0.0, hi=1.0)
    n_pairs: int = opt(2000, "Preference pairs sampled from the SFT policy (split by rm.val_frac/rm.test_frac).",
                       lo=8)


@dataclass
class ModelConfig:
    family: str = opt("llama", "Backbone family of the tiny testbed models.", choices=ARCH_FAMILIES)
    hidden_size: int = opt(128, "Tiny model hidden size (head_dim is fixed at 64).", lo=64)
    num_layers: int = opt(2, "Tiny model depth.", lo=1)
    intermediate_size: int = opt(256, "Tiny model FFN width.", lo=8)
    max_seq_len: int = opt(256, "Context length (prompt + response tokens).", lo=16)
    trust_remote_code: bool = opt(False, "Allow a checkpoint's own modelling code (HF trust_remote_code) wherever a "
                                         "model or tokenizer is loaded: SFT, RM training, the PPO policy, reference, "
                                         "reward and rollout actors, pairs, BoN, serving (off: safe default).")
    chat_template: str = opt("auto", "How prompts become model input, the same in SFT, rollout, PPO log-probs, RM "
                                     "training and scoring, BoN, an HF gold and serving: 'auto' renders each prompt "
                                     "through the tokenizer's chat template when it has one (a user turn + the "
                                     "assistant header; the testbed's tokenizer has none, so there it is 'none'), "
                                     "'none' uses the raw prompt text.", choices=CHAT_MODES)


@dataclass
class SFTConfig:
    base_path: str = opt("", "Causal LM (HF name or dir) the SFT stage fine-tunes; empty = the testbed's tiny base "
                             "model. PPO/BoN start from ppo.policy_path / bon.policy_path (default: the SFT output).")
    epochs: int = opt(2, "Passes over the SFT responses.", lo=1)
    batch_size: int = opt(32, "Per-worker batch size.", lo=1)
    lr: float = opt(3e-3, "AdamW learning rate.", lo=0)
    num_workers: int = opt(2, "Ray Train workers (DDP over gloo on CPU).", lo=1)
    strategy: str = opt("ddp", "Distributed strategy inside Ray Train (deepspeed = ZeRO-1).",
                        choices=("ddp", "deepspeed"))
    checkpoint_every: int = opt(200, "Save a resumable checkpoint every K optimizer steps.", lo=1)
    precision: str = precision_opt("SFT training", "sft/eval.json")
    grad_checkpointing: bool = grad_checkpointing_opt("the SFT model", "sft/eval.json")
    micro_batch_tokens: int = micro_batch_tokens_opt("SFT", "each per-worker batch", "the loss is a mean over tokens")


@dataclass
class RMConfig:
    kind: str = opt("dense", "Reward model kind to train (dmoe: the DMoERM baseline, see the dmoe section).",
                    choices=("dense", "moe", "umm", "ensemble", "dmoe"))
    base_path: str = opt("", "Backbone to start from (HF name/path); empty = <run.output_dir>/sft/model (the testbed's "
                             "untrained base model when there is none).")
    data: str = opt("testbed", "Preference data: 'testbed', a .jsonl/.jsonl.gz file, or a hub dataset name.")
    data_on_error: str = opt("raise", "Bad preference rows: stop naming file:line, or skip and report counts.",
                             choices=("raise", "skip"))
    eval_data: str = opt("", "Extra held-out preference data for accuracy (e.g. HH harmless test.jsonl.gz).")
    epochs: int = opt(2, "Passes over the preference pairs.", lo=1)
    batch_size: int = opt(32, "Per-worker batch size (pairs).", lo=1)
    lr: float = opt(1e-3, "AdamW learning rate.", lo=0)
    num_workers: int = opt(2, "Ray Train workers per run.", lo=1)
    strategy: str = opt("ddp", "Distributed strategy inside Ray Train.", choices=("ddp", "deepspeed"))
    zero_stage: int = opt(1, "DeepSpeed ZeRO stage when rm.strategy is deepspeed (2 also shards gradients; 3 is not "
                             "offered: it would need a parameter gather before the final HF save).", choices=(0, 1, 2))
    precision: str = opt("fp32", "Compute precision of RM training (dense, moe, umm, ensemble): 'bf16' = bfloat16 "
                                 "autocast of forward/backward with fp32 master weights, gradients and AdamW state "
                                 "(CPU with AMX/AVX-512 BF16 or CUDA; ~2.5x faster for SmolLM2-135M on CPU, about "
                                 "half the activation memory). Reported in eval.json.", choices=("fp32", "bf16"))
    grad_checkpointing: bool = opt(False, "Gradient checkpointing of every decoder layer of the RM backbone "
                                          "(after upcycling for moe/umm): activations of one layer at a time are "
                                          "kept, the rest recomputed in backward (~30% slower, much less memory). "
                                          "Reported in eval.json.")
    checkpoint_every: int = opt(100, "Save a resumable checkpoint every K optimizer steps.", lo=1)
    micro_batch_tokens: int = micro_batch_tokens_opt("RM training (BT kinds)", "each per-worker batch of pairs",
                                                     "BT loss is a mean over pairs; a pair's two rows stay together")
    share_prompt: bool = opt(False, "RM training (BT kinds): a preference pair is one row holding its prompt once, "
                                    "then the chosen and the rejected response, each attending to the prompt and "
                                    "itself only (position ids continue the prompt), instead of two rows that both "
                                    "encode the prompt: the same rewards and gradients on fewer tokens (~35% fewer "
                                    "on HH harmless pairs). Reported in eval.json.", keyed_at_default=False)
    max_len: int = opt(256, "Truncate prompt+response to this many tokens.", lo=8)
    val_frac: float = opt(0.1, "Fraction of preference pairs held out for validation, by seed (the testbed's "
                               "pairs stage and rm.data alike).", lo=0.0, hi=0.5)
    test_frac: float = opt(0.2, "Fraction of preference pairs held out for testing, by seed (the testbed's pairs "
                                "stage and rm.data alike).", lo=0.0, hi=0.5)
    split_seed: int = opt(-1, "Seed of the train/val/test split of rm.data; -1 = run.seed. jobs.compare pins it to "
                              "run.seed for every seed of compare.seeds, so all seeds' RMs share one split.", lo=-1)

    def data_split_seed(self, run_seed: int) -> int:
        """The seed rm.data is split with: split_seed, or run.seed when it is -1."""
        return run_seed if self.split_seed < 0 else self.split_seed


@dataclass
class MoEConfig:
    num_experts: int = opt(4, "Normal experts per layer (the shared expert is extra).", lo=2)
    top_k: int = opt(2, "Normal experts active per token.", lo=1)
    aux_loss_coef: float = opt(1.0, "Weight of the load-balancing loss (already scaled by 0.01 per layer).", lo=0)
    noisy_gating: bool = opt(True, "Noisy top-k routing during training.")
    upcycle_layers: list = opt([], "Decoder-layer indices (0-based) to upcycle to MoE, e.g. [0, 2] or 0,2; [] = all "
                                   "layers. Fewer layers = fewer parameters (each adds num_experts FFN copies); the "
                                   "merge still gives the dense shape. Checked against the backbone's depth before "
                                   "training; reported in eval.json.")

    def __post_init__(self):
        # CLI/comma lists arrive as strings ('0,2' -> ['0', '2']); integers are what the layer indices are
        self.upcycle_layers = [int(i) if isinstance(i, str) and is_int(i) else i for i in self.upcycle_layers]


@dataclass
class MergeConfig:
    alpha: float = opt(0.5, "Shared-expert rate in the merge (fixed, not learned).", lo=0.0, hi=1.0)
    epochs: int = opt(1, "Passes over the preference data while learning theta.", lo=1)
    lr: float = opt(5e-2, "Learning rate for the merge coefficients theta.", lo=0)


@dataclass
class RewardConfig:
    proxy: str = opt("auto", "Proxy RM of PPO, BoN and serve_rm: 'auto' = whatever reward.proxy_path holds; "
                             "dense/umm/moe/ensemble/dmoe = reward.proxy_path must hold that kind (else stop), and "
                             "when it is empty jobs.train_rm's output <run.output_dir>/rm_<kind>/model (ensemble: "
                             "manifest.json); 'remote' = the endpoint at reward.remote_url (PPO, BoN).",
                     choices=PROXY_KINDS)
    proxy_path: str = opt("", "The proxy RM: a dense/umm/moe/dmoe checkpoint dir or an ensemble manifest (.json, "
                              "optionally '#wco' / '#uwo:0.1'); see reward.proxy.")
    gold: str = opt("testbed", "Gold scorer: 'testbed', an HF RM dir or hub id (owner/name: safetensors only, "
                               "downloaded once per node into the HF cache), or 'remote'.")
    remote_url: str = opt("", "URL of a Ray Serve reward endpoint, used where reward.proxy or reward.gold is 'remote'.")
    remote_token: str = opt("", "Bearer token for the remote endpoint.")
    batch_size: int = opt(64, "Scoring batch size.", lo=1)
    proxy_dtype: str = opt("auto", "Weights/compute dtype of the proxy RM actors: 'auto' = bf16 on GPU, fp32 on CPU; "
                                   "scores are float32 either way.",
                           choices=DTYPES, keyed_at_default=False)
    gold_dtype: str = opt("auto", "Weights/compute dtype of an HF gold RM (actors and the pairs stage's labeller): "
                                  "'auto' = bf16 on GPU, fp32 on CPU; scores are float32 either way.",
                          choices=DTYPES, keyed_at_default=False)


@dataclass
class PPOConfig:
    steps: int = opt(40, "PPO iterations (rollout + update).", lo=1)
    rollout_batch_size: int = opt(128, "Prompts per iteration.", lo=1)
    micro_batch_size: int = opt(16, "Per-rank micro batch in the update.", lo=1)
    ppo_epochs: int = opt(1, "Update passes per rollout batch.", lo=1)
    update_threads: int = opt(0, "Torch threads of each policy rank during the update only; 0 = as many as in its "
                                 "rollout-time forward (the whole part of resources.policy_cpus). The update runs "
                                 "while the other roles wait, the forward beside the reference and reward models, "
                                 "so on a CPU node a 1-CPU rank can update on idle cores (docs/ppo-sweep.md).",
                              lo=0, keyed_at_default=False)
    actor_lr: float = opt(1e-4, "Policy learning rate (docs/ppo-sweep.md: why 1e-4 at 128 prompts a step).", lo=0)
    critic_lr: float = opt(1e-4, "Value head learning rate.", lo=0)
    kl_coef: float = opt(0.0, "Initial KL penalty beta (0 = none).", lo=0)
    kl_target: float = opt(0.0, "Target KL for the adaptive controller (0 = fixed beta).", lo=0)
    kl_horizon: int = opt(10000, "Adaptive KL controller horizon.", lo=1)
    clip_eps: float = opt(0.2, "Policy ratio clip.", lo=0)
    value_clip: float = opt(0.2, "Value clip.", lo=0)
    gamma: float = opt(1.0, "Discount.", lo=0, hi=1)
    lam: float = opt(0.95, "GAE lambda.", lo=0, hi=1)
    entropy_coef: float = opt(0.0, "Entropy bonus.", lo=0)
    reward_clip: float = opt(10.0, "Clip proxy scores to [-c, c].", lo=0)
    normalize_reward: bool = opt(True, "Running normalisation of proxy scores.")
    world_size: int = opt(1, "PolicyActor ranks (DeepSpeed data parallel).", lo=1)
    zero_stage: int = opt(0, "DeepSpeed ZeRO stage.", choices=(0, 1, 2, 3))
    checkpoint_every: int = opt(10, "Checkpoint every K steps.", lo=1)
    resume: bool = opt(True, "Resume from the latest checkpoint in output_dir if one exists.")
    vf_coef: float = opt(0.5, "Weight of the value loss in the joint policy + critic loss.", lo=0)
    max_grad_norm: float = opt(1.0, "Gradient clipping (DeepSpeed gradient_clipping; 0 = off).", lo=0)
    keep_checkpoints: int = opt(2, "How many recent PPO checkpoints to keep.", lo=1)
    whiten_advantages: bool = opt(True, "Whiten advantages over the batch before the update.")
    policy_path: str = opt("", "Policy to start from (HF causal LM dir); empty = <run.output_dir>/sft/model.")
    prompts: str = opt("", "PPO prompts (jsonl / hub name); empty = <run.output_dir>/prepare/prompts_ppo.jsonl.")
    reference_dtype: str = opt("auto", "Weights/compute dtype of the reference model: 'auto' = bf16 on GPU, fp32 on "
                                       "CPU.", choices=DTYPES, keyed_at_default=False)
    gold_every: int = opt(1, "Score the gold every K steps (1 = every step): steps 1, K+1, 2K+1, ... and the last; "
                             "metrics and curves have gold only on those steps.", lo=1, keyed_at_default=False)
    precision: str = ppo_precision_opt()
    grad_checkpointing: bool = grad_checkpointing_opt("the policy and the critic trunk", "summary.json")
    micro_batch_tokens: int = micro_batch_tokens_opt("the PPO update", "each ppo.micro_batch_size optimizer batch",
                                                     "the losses are means over the response masks")


@dataclass
class BoNConfig:
    n_prompts: int = opt(64, "Prompts for Best-of-N.", lo=1)
    n_samples: int = opt(32, "Samples N per prompt; n = 1, 2, 4, ... <= N are reported.", lo=1)
    policy_path: str = opt("", "Policy to sample from; empty = <run.output_dir>/sft/model (jobs.compare: the policy "
                               "PPO starts from, i.e. ppo.policy_path when set).")
    prompts: str = opt("", "Prompt file or dataset; empty = <run.output_dir>/prepare/prompts_bon.jsonl (jobs.compare "
                           "with rm.data set: ppo.prompts).")
    rms: list = opt([], "Proxy RMs as name=path[#aggregate[:lambda]] (ensemble manifests); empty = the proxy that "
                        "reward.proxy / reward.proxy_path name.")


@dataclass
class Config:
    """The root config; each job reads the parts it needs."""

    run: RunConfig = field(default_factory=RunConfig)
    testbed: TestbedConfig = field(default_factory=TestbedConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rm: RMConfig = field(default_factory=RMConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    bon: BoNConfig = field(default_factory=BoNConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    dmoe: DMoEConfig = field(default_factory=DMoEConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


# ---------------------------------------------------------------------------------------------------------------------
# Machinery: build from dicts, validate, dotted overrides, YAML.


def _fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _suggest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _coerce(path: str, value: Any, typ: Any) -> Any:
    """Convert a YAML/CLI value to the field's declared type or raise ConfigError naming the key."""
    if isinstance(typ, str):
        typ = {"int": int, "float": float, "str": str, "bool": bool, "list": list}[typ]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{path}: expected a bool, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and is_int(value))):
            raise ConfigError(f"{path}: expected an int, got {value!r}")
        return int(value)
    if typ is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if typ is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    if typ is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        return value
    return value


def _check_bounds(path: str, value: Any, meta: typing.Mapping) -> None:
    if meta.get("choices") is not None and value not in meta["choices"]:
        raise ConfigError(f"{path}: {value!r} is not one of {list(meta['choices'])}")
    if meta.get("lo") is not None and value < meta["lo"]:
        raise ConfigError(f"{path}: {value!r} is below the minimum {meta['lo']}")
    if meta.get("hi") is not None and value > meta["hi"]:
        raise ConfigError(f"{path}: {value!r} is above the maximum {meta['hi']}")


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, validating every key, type and bound."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if f"{prefix}{key}" in RENAMED:
            raise ConfigError(f"config key '{prefix}{key}' was renamed: use {RENAMED[prefix + key]}")
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_suggest(key, fields)}")
    kwargs = {}
    for name, f in fields.items():
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None) or _is_section(cls, name):
            kwargs[name] = from_dict(_section_type(cls, name), data.get(name), prefix=f"{path}.")
        elif name in data:
            kwargs[name] = _coerce(path, data[name], f.type)
    obj = cls(**kwargs)
    validate(obj, prefix)
    return obj


def _section_type(cls: type, name: str) -> type:
    return typing.get_type_hints(cls)[name]


def _is_section(cls: type, name: str) -> bool:
    t = _section_type(cls, name)
    return isinstance(t, type) and dataclasses.is_dataclass(t)


def validate(obj: Any, prefix: str = "") -> None:
    """Check bounds and choices of every leaf field and cross-field rules; raise ConfigError naming the key."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, f"{prefix}{f.name}.")
        else:
            _check_bounds(f"{prefix}{f.name}", value, f.metadata)
    if isinstance(obj, MoEConfig) and obj.top_k > obj.num_experts:
        raise ConfigError(f"{prefix}top_k: {obj.top_k} exceeds {prefix}num_experts={obj.num_experts}")
    if isinstance(obj, MoEConfig):
        bad = [i for i in obj.upcycle_layers if not isinstance(i, int) or isinstance(i, bool) or i < 0]
        if bad or len(set(obj.upcycle_layers)) != len(obj.upcycle_layers):
            raise ConfigError(f"{prefix}upcycle_layers: {obj.upcycle_layers!r} must be distinct layer indices >= 0 "
                              f"([] = all layers)")
    if isinstance(obj, ServeConfig) and obj.min_replicas > obj.max_replicas:
        raise ConfigError(f"{prefix}min_replicas: {obj.min_replicas} exceeds {prefix}max_replicas={obj.max_replicas}")
    if isinstance(obj, RMConfig) and obj.val_frac + obj.test_frac >= 1.0:
        raise ConfigError(f"{prefix}val_frac + {prefix}test_frac: {obj.val_frac} + {obj.test_frac} leaves no "
                          f"training pairs")
    if isinstance(obj, Config):
        check_resources(obj)
    if isinstance(obj, ModelConfig) and obj.hidden_size % 64:
        raise ConfigError(f"{prefix}hidden_size: {obj.hidden_size} must be a multiple of 64 (head_dim 64)")


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def parse_overrides(args: list[str]) -> dict:
    """Turn ['--a.b', '1', '--c.d=x'] into {'a': {'b': '1'}, 'c': {'d': 'x'}} (values stay strings)."""
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: overrides look like --section.key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"override --{key} has no value")
            value = args[i + 1]
            i += 1
        node = out
        parts = key.replace("-", "_").split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
        i += 1
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None, cls: type = Config,
                base: dict | None = None) -> Any:
    """Load YAML (optional), apply a preset dict `base` below it and dotted overrides above it, then validate."""
    data = dict(base or {})
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        data = _merge(data, loaded)
    data = _merge(data, parse_overrides(overrides or []))
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line of help per key: `section.key (type, default): help`."""
    lines = []
    for f in dataclasses.fields(cls):
        if _is_section(cls, f.name):
            lines += describe(_section_type(cls, f.name), f"{prefix}{f.name}.")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"--{prefix}{f.name} ({f.type}, default {default!r}): {f.metadata.get('help', '')}")
    return lines
