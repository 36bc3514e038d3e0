"""DMoERM (Quan 2024, arXiv 2403.01197): a double-layer MoE reward model. Pure torch + transformers + peft.

Outer layer (sparse): `TaskRouter`, a backbone + Linear(H, n_tasks) read at the prompt's last token, sends each input
to exactly one task (hard top-1). Inner layer (dense), one `InnerRM` per task, all on one backbone copy per task:
    phase 1: backbone + scalar head                      r = head(h_last)                        [B]
    phase 2: K LoRA adapters (peft), one per capability  r_k = cap_heads[k](h_last with adapter k)   [B]
    phase 3: aggregation over the K adapters' features   r = MLP(concat_k h_last^(k))  with
             MLP = Linear(K*H, H) -> PReLU -> Linear(H, 1)
Inference costs one router pass per prompt plus K adapter passes of the chosen task's backbone per response.

A DMoERM directory (`save_dmoe`) holds umm_dmoe.json (the `DMoESpec`), config.json (the backbone's HF config,
architectures ["DMoERM"] so HF loaders refuse it clearly), model.safetensors (every weight: `router.*`,
`inners.<task>.*`), and the tokenizer. `load_dmoe` rebuilds the structure from the spec and loads strictly.
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from umm_ray.data.chat import check_mode
from umm_ray.data.tokenize import encode_texts
from umm_ray.models.families import DMOE_CONFIG_NAME, check_family, load_tokenizer_checked

__all__ = ["DMOE_CONFIG_NAME", "STAGES", "LoRASpec", "DMoESpec", "last_token_hidden", "TaskRouter", "InnerRM",
           "DMoERM", "new_dmoe", "add_capabilities", "add_aggregators", "save_dmoe", "load_dmoe", "is_dmoe_dir",
           "DMoEScorer", "load_scorer"]

WEIGHTS_NAME = "model.safetensors"
STAGES = ("phase1", "phase2", "final")  # what a saved model holds: heads only / + adapters / + aggregation MLPs


@dataclass(frozen=True)
class LoRASpec:
    """LoRA settings of every capability expert (the paper's: r 32, alpha 32, dropout 0.05 on q_proj / v_proj)."""

    r: int = 32
    alpha: float = 32.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q_proj", "v_proj")


@dataclass(frozen=True)
class DMoESpec:
    """The structure of a DMoERM: task names (router classes, in index order), capability names (the K experts of
    every task, in feature order), LoRA settings, how far training got, the backbone family."""

    tasks: tuple[str, ...]
    capabilities: tuple[str, ...]
    lora: LoRASpec
    stage: str
    family: str
    format: str = "umm_dmoe"
    version: int = 1

    def __post_init__(self):
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"DMoESpec: tasks must be distinct and non-empty, got {list(self.tasks)}")
        if not self.capabilities or len(set(self.capabilities)) != len(self.capabilities):
            raise ValueError(f"DMoESpec: capabilities must be distinct and non-empty, got {list(self.capabilities)}")
        if self.stage not in STAGES:
            raise ValueError(f"DMoESpec: stage {self.stage!r} is not one of {STAGES}")

    def with_stage(self, stage: str) -> DMoESpec:
        return DMoESpec(self.tasks, self.capabilities, self.lora, stage, self.family)

    def to_json(self) -> dict:
        return asdict(self) | {"lora": asdict(self.lora) | {"targets": list(self.lora.targets)}}

    @staticmethod
    def from_json(d: dict) -> DMoESpec:
        lora = LoRASpec(**{**d["lora"], "targets": tuple(d["lora"]["targets"])})
        return DMoESpec(**{**d, "tasks": tuple(d["tasks"]), "capabilities": tuple(d["capabilities"]), "lora": lora})


def last_token_hidden(backbone: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Final hidden state at each row's last real token.

    Args:
        backbone: an HF base model (LlamaModel, GPT2Model, ...). ids, mask: [B, T] (1 = real token; any padding side).

    Returns:
        h_last [B, H].
    """
    hidden = backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # [B, T, H]
    positions = torch.arange(ids.shape[1], device=ids.device)
    last = (positions * mask.to(positions.dtype)).argmax(dim=-1)  # rightmost real token
    return hidden[torch.arange(ids.shape[0], device=ids.device), last]


class TaskRouter(nn.Module):
    """The outer layer: backbone + Linear(H, n_tasks) on the prompt's last token; hard top-1 at inference."""

    def __init__(self, backbone: nn.Module, n_tasks: int, hidden: int):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden, n_tasks)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Task logits [B, n_tasks] for prompt-only inputs ids/mask [B, T]."""
        return self.head(last_token_hidden(self.backbone, ids, mask))


class InnerRM(nn.Module):
    """One task's inner model. `backbone` is shared by the phase-1 head and all K LoRA experts (one copy per task).

    Attributes appear by stage: `head` (phase 1), `cap_heads` + adapters named after the capabilities (phase 2;
    registered modules, so trained and saved), `agg` (final).
    """

    def __init__(self, backbone: nn.Module, head: nn.Linear):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.capabilities: tuple[str, ...] = ()
        self.cap_heads: nn.ModuleDict | None = None
        self.agg: nn.Sequential | None = None
        self._active: str | None = None

    def base_reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Phase-1 reward [B] (backbone without adapters)."""
        if self.capabilities:
            raise RuntimeError("base_reward: this inner model has LoRA experts; use capability_reward or reward")
        return self.head(last_token_hidden(self.backbone, ids, mask)).squeeze(-1)

    def activate(self, cap: str) -> None:
        """Make LoRA expert `cap` the one the backbone runs with. peft's set_adapter also flips requires_grad
        (only the active adapter trainable); the flags are restored, so which parameters train is decided once per
        phase, and a DDP wrapper built over them stays valid."""
        if cap not in self.capabilities:
            raise KeyError(f"unknown capability {cap!r}; this model has {list(self.capabilities)}")
        if cap == self._active:
            return
        from peft.functional import set_adapter  # heavy: peft loads accelerate internals; only with adapters

        flags = [(p, p.requires_grad) for p in self.backbone.parameters()]
        set_adapter(self.backbone, cap)
        for p, flag in flags:
            p.requires_grad_(flag)
        self._active = cap

    def cap_hidden(self, cap: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """h_last [B, H] of the backbone running LoRA expert `cap`."""
        self.activate(cap)
        return last_token_hidden(self.backbone, ids, mask)

    def capability_reward(self, cap: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Phase-2 reward [B] of expert `cap`: its own head on its own hidden state."""
        return self.cap_heads[cap](self.cap_hidden(cap, ids, mask)).squeeze(-1)

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The aggregation MLP's input [B, K*H]: the K experts' h_last, concatenated in capability order."""
        return torch.cat([self.cap_hidden(c, ids, mask) for c in self.capabilities], dim=-1)

    def reward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final reward [B] = MLP(features)."""
        if self.agg is None:
            raise RuntimeError("reward: this inner model has no aggregation MLP yet (phase 3 adds it)")
        return self.agg(self.features(ids, mask)).squeeze(-1)


class DMoERM(nn.Module):
    """Router + one InnerRM per task (`inners[task]`); `spec` describes the structure."""

    def __init__(self, router: TaskRouter, inners: dict[str, InnerRM], spec: DMoESpec, config):
        super().__init__()
        if tuple(inners) != spec.tasks:
            raise ValueError(f"DMoERM: inner models {list(inners)} do not match the spec's tasks {list(spec.tasks)}")
        self.router, self.inners, self.spec, self.config = router, nn.ModuleDict(inners), spec, config

    @torch.no_grad()
    def route(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Hard top-1 task index [B] for prompt-only inputs [B, T]."""
        return self.router(ids, mask).argmax(dim=-1)


def _hidden_size(config) -> int:
    return getattr(config, "hidden_size", None) or config.n_embd


def new_dmoe(rm: nn.Module, tasks: list[str], capabilities: list[str], lora: LoRASpec, seed: int = 0) -> DMoERM:
    """A phase-1 DMoERM from a dense reward model `rm` (HF *ForSequenceClassification, num_labels 1): every task and
    the router get a copy of its backbone; each task starts from its score head; the router head is N(0, 0.02) from
    a local generator seeded by `seed` (the global RNG is untouched)."""

    family = check_family(rm.config, type(rm).__name__)
    hidden = _hidden_size(rm.config)
    router = TaskRouter(copy.deepcopy(rm.base_model), len(tasks), hidden)
    with torch.no_grad():
        router.head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
        router.head.bias.zero_()
    inners = {t: InnerRM(copy.deepcopy(rm.base_model), copy.deepcopy(rm.score)) for t in tasks}
    config = copy.deepcopy(rm.config)
    config.architectures = ["DMoERM"]  # HF reward loaders then refuse the directory by name
    spec = DMoESpec(tuple(tasks), tuple(capabilities), lora, "phase1", family)
    return DMoERM(router, inners, spec, config).float()


def _check_targets(backbone: nn.Module, lora: LoRASpec, family: str) -> None:
    names = {n.rsplit(".", 1)[-1] for n, _ in backbone.named_modules()}
    missing = [t for t in lora.targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in backbone.named_modules()
                         if isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"})
        raise ValueError(f"dmoe.target_modules {missing} are not modules of the {family} backbone; its linear "
                         f"layers are {linear}")


def add_capabilities(model: DMoERM) -> DMoERM:
    """Phase 1 -> phase 2, in place: inject one LoRA adapter per capability (named after it) into every task's
    backbone, and give each a scalar head copied from the task's phase-1 head. LoRA B starts at zero, so every
    expert starts out scoring exactly like the phase-1 model."""
    from peft import (  # heavy: peft pulls in accelerate/transformers internals; only when adapters are built
        LoraConfig,
        inject_adapter_in_model,
    )

    spec = model.spec
    if spec.stage != "phase1":
        raise ValueError(f"add_capabilities: the model is at stage {spec.stage!r}, not 'phase1'")
    lcfg = LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                      target_modules=list(spec.lora.targets), bias="none")
    for inner in model.inners.values():
        _check_targets(inner.backbone, spec.lora, spec.family)
        with warnings.catch_warnings():  # "multiple adapters in the model": intended, one per capability
            warnings.filterwarnings("ignore", message=".*multiple adapters.*")
            for cap in spec.capabilities:
                inner.backbone = inject_adapter_in_model(lcfg, inner.backbone, adapter_name=cap)
        inner.capabilities = spec.capabilities
        inner.cap_heads = nn.ModuleDict({c: copy.deepcopy(inner.head) for c in spec.capabilities})
        inner._active = None
    model.spec = spec.with_stage("phase2")
    return model


def add_aggregators(model: DMoERM, seed: int = 0) -> DMoERM:
    """Phase 2 -> final, in place: each task gets MLP Linear(K*H, H) -> PReLU -> Linear(H, 1), initialised from a
    local generator seeded by `seed` (PyTorch's default Linear init, reproduced without the global RNG)."""
    spec = model.spec
    if spec.stage != "phase2":
        raise ValueError(f"add_aggregators: the model is at stage {spec.stage!r}, not 'phase2'")
    hidden, k = _hidden_size(model.config), len(spec.capabilities)
    gen = torch.Generator().manual_seed(seed)
    for inner in model.inners.values():
        agg = nn.Sequential(nn.Linear(k * hidden, hidden), nn.PReLU(), nn.Linear(hidden, 1))
        with torch.no_grad():
            for lin in (agg[0], agg[2]):
                bound = lin.in_features ** -0.5
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        inner.agg = agg
    model.spec = spec.with_stage("final")
    return model


def is_dmoe_dir(path) -> bool:
    """True if `path` is a directory written by `save_dmoe`."""
    return (Path(path) / DMOE_CONFIG_NAME).is_file()


def save_dmoe(model: DMoERM, tok, out_dir) -> Path:
    """Write umm_dmoe.json + config.json + model.safetensors (+ the tokenizer when given) to `out_dir`."""

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    meta = model.spec.to_json() | {"dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    (out / DMOE_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    save_model(model, str(out / WEIGHTS_NAME))
    if tok is not None:
        tok.save_pretrained(out)
    return out


def _read_spec(path: Path) -> tuple[DMoESpec, torch.dtype]:
    try:
        meta = json.loads((path / DMOE_CONFIG_NAME).read_text())
        dtype = getattr(torch, meta.pop("dtype", "float32"))
        spec = DMoESpec.from_json(meta)
    except (OSError, json.JSONDecodeError, TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"{path / DMOE_CONFIG_NAME}: not a valid umm_ray DMoERM spec ({e})") from e
    if spec.format != "umm_dmoe":
        raise ValueError(f"{path / DMOE_CONFIG_NAME}: format {spec.format!r} is not 'umm_dmoe'")
    return spec, dtype


def load_dmoe(path, with_tokenizer: bool = True) -> tuple[DMoERM, object]:
    """Load a directory written by `save_dmoe`, exactly (structure from the spec, strict safetensors load).

    Returns:
        (model in eval mode with every parameter frozen, tokenizer or None).
    """
    from transformers import AutoConfig, AutoModel  # heavy: ~2 s; only when a model is loaded


    path = Path(path)
    if not is_dmoe_dir(path):
        raise FileNotFoundError(f"{path}: not a DMoERM directory (no {DMOE_CONFIG_NAME})")
    spec, dtype = _read_spec(path)
    config = AutoConfig.from_pretrained(path)
    check_family(config, str(path))
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{path}: DMoERM checkpoint has no {WEIGHTS_NAME} (only safetensors are loaded)")
    tok = load_tokenizer_checked(path, config) if with_tokenizer else None
    hidden = _hidden_size(config)
    router = TaskRouter(AutoModel.from_config(config), len(spec.tasks), hidden)
    inners = {t: InnerRM(AutoModel.from_config(config), nn.Linear(hidden, 1, bias=False)) for t in spec.tasks}
    model = DMoERM(router, inners, spec.with_stage("phase1"), config).to(dtype)
    if spec.stage in ("phase2", "final"):
        add_capabilities(model)
    if spec.stage == "final":
        add_aggregators(model)
    load_model(model, str(path / WEIGHTS_NAME), strict=True)
    model.requires_grad_(False)
    return model.eval(), tok


class DMoEScorer:
    """A `Scorer` over a final DMoERM: each distinct prompt is routed once (prompt only), then every response is
    scored by its task's inner model (K adapter passes + the MLP), in length-sorted batches per task.

    `passes` counts sequences through a backbone since construction: {"router": n, "inner": n} (inner counts each
    of the K adapter passes).
    """

    def __init__(self, model: DMoERM, tok, max_len: int = 256, batch_size: int = 64, chat_template: str = "auto"):
        if model.spec.stage != "final":
            raise ValueError(f"DMoEScorer: the model is at stage {model.spec.stage!r}; only a 'final' DMoERM scores")
        self.model, self.tok, self.max_len, self.batch_size = model.eval(), tok, max_len, batch_size
        self.chat_template = check_mode(chat_template)  # model.chat_template: prompts rendered as in training
        self.passes = {"router": 0, "inner": 0}

    @torch.no_grad()
    def route(self, prompts: list[str]) -> list[str]:
        """The task each prompt is sent to."""

        device = next(self.model.parameters()).device
        out: list[str] = []
        for s in range(0, len(prompts), self.batch_size):
            chunk = prompts[s:s + self.batch_size]
            ids, mask = encode_texts(self.tok, chunk, [""] * len(chunk), self.max_len, self.chat_template)
            out += [self.model.spec.tasks[i] for i in self.model.route(ids.to(device), mask.to(device)).tolist()]
            self.passes["router"] += len(chunk)
        return out

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per (prompt, response) pair, in order."""

        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        self.model.eval()
        device = next(self.model.parameters()).device
        unique = list(dict.fromkeys(prompts))
        task_of = dict(zip(unique, self.route(unique)))
        out = [0.0] * len(prompts)
        k = len(self.model.spec.capabilities)
        for task in self.model.spec.tasks:
            idx = sorted((i for i, p in enumerate(prompts) if task_of[p] == task),
                         key=lambda i: len(prompts[i]) + len(responses[i]))
            inner = self.model.inners[task]
            for s in range(0, len(idx), self.batch_size):
                b = idx[s:s + self.batch_size]
                ids, mask = encode_texts(self.tok, [prompts[i] for i in b], [responses[i] for i in b], self.max_len,
                                         self.chat_template)
                for i, v in zip(b, inner.reward(ids.to(device), mask.to(device)).tolist()):
                    out[i] = v
                self.passes["inner"] += k * len(b)
        return out


def load_scorer(path, max_len: int = 256, batch_size: int = 64, device: str | torch.device = "cpu",
                chat_template: str = "auto") -> DMoEScorer:
    """A DMoEScorer from a directory written by `save_dmoe` (stage 'final'); no Ray needed."""
    model, tok = load_dmoe(path)
    return DMoEScorer(model.to(device), tok, max_len=max_len, batch_size=batch_size, chat_template=chat_template)
