"""Ray Train tasks of DMoERM (run by `umm_ray.train.loop.fit`): the outer router and the three inner phases.

Each phase is ONE run over all tasks (and, in phase 2, all capabilities): an example carries its task index (and
capability index), and the forward pass scores each (task, capability) group of the batch with that task's backbone
running that group's adapter. A parameter only ever sees gradients from its own group's pairs, so this is the same
optimisation problem as training every inner model and every adapter in a run of its own, without paying a worker
group start per (task, capability).

    phase 1  trainable: each task's backbone + scalar head            data: 60% of the task's pairs, overall labels
    phase 2  trainable: the LoRA weights + head of every capability   data: capability labels
    phase 3  trainable: the aggregation MLPs (backbones in eval mode)  data: the other 40%, overall labels
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from umm_ray.algo.bt import bt_loss, pref_accuracy
from umm_ray.data.chat import check_mode
from umm_ray.data.tokenize import encode_texts
from umm_ray.models.dmoe import (
    TaskRouter,
    _hidden_size,
    add_aggregators,
    add_capabilities,
    load_dmoe,
    new_dmoe,
    save_dmoe,
)
from umm_ray.train.bt_task import load_dense_rm
from umm_ray.train.loop import TrainTask

PHASES = (1, 2, 3)


@dataclass(frozen=True)
class RouteExample:
    """A prompt and its task index (router training)."""

    prompt: str
    task: int


@dataclass(frozen=True)
class PairExample:
    """A preference pair for task `task`; `cap` is the capability index in phase 2, -1 otherwise."""

    prompt: str
    chosen: str
    rejected: str
    task: int
    cap: int = -1


class _TokenizerMixin:
    """Loads the tokenizer of `self.tok_source` lazily on the worker (tokenizers are not shipped pickled)."""

    tok_source: str
    _tok = None
    chat_template = "auto"  # model.chat_template: prompts rendered as the policy and the other RMs render them

    def _chat_key(self) -> dict:
        """The mode for fingerprints; the default stays out so checkpoints from before the option still resume."""
        return {} if self.chat_template == "auto" else {"chat_template": self.chat_template}

    def __getstate__(self):
        return {**self.__dict__, "_tok": None}

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer  # heavy: ~2 s; only when a model is loaded

            self._tok = AutoTokenizer.from_pretrained(self.tok_source)
            if self._tok.pad_token_id is None:
                self._tok.pad_token = self._tok.eos_token
        return self._tok


class RouterTask(_TokenizerMixin, TrainTask):
    """Cross-entropy training of the TaskRouter on prompts (prompt + eos, no response) and their task labels."""

    def __init__(self, source: str | Path, tasks: tuple[str, ...], max_len: int, seed: int = 0,
                 chat_template: str = "auto"):
        self.source = self.tok_source = str(source)
        self.tasks, self.max_len, self.seed = tuple(tasks), max_len, seed
        self.chat_template = check_mode(chat_template)

    def build(self) -> nn.Module:

        rm = load_dense_rm(self.source)
        router = TaskRouter(rm.base_model, len(self.tasks), _hidden_size(rm.config))
        with torch.no_grad():  # the same init new_dmoe gives the router
            router.head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(self.seed))
            router.head.bias.zero_()
        return router.float()

    def collate(self, examples: list[RouteExample]) -> dict[str, torch.Tensor]:

        ids, mask = encode_texts(self.tokenizer, [e.prompt for e in examples], [""] * len(examples), self.max_len,
                                 self.chat_template)
        return {"ids": ids, "mask": mask, "label": torch.tensor([e.task for e in examples])}

    def loss(self, model, raw, batch) -> tuple[torch.Tensor, dict]:
        logits = model(batch["ids"], batch["mask"])  # [B, n_tasks]
        loss = nn.functional.cross_entropy(logits, batch["label"])
        return loss, {"acc": (logits.argmax(-1) == batch["label"]).float().mean().item()}

    def save(self, raw: nn.Module, out_dir: Path) -> None:

        out_dir.mkdir(parents=True, exist_ok=True)
        save_model(raw, str(out_dir / "router.safetensors"))
        (out_dir / "tasks.txt").write_text("\n".join(self.tasks) + "\n")

    def fingerprint(self) -> dict:
        return {"task": "dmoe_router", "source": self.source, "tasks": list(self.tasks), "max_len": self.max_len,
                **self._chat_key()}


class PhaseNet(nn.Module):
    """Wraps a DMoERM for one phase: forward(ids, mask, task, cap) -> rewards [B], each row by its own task's inner
    model (phase 1: backbone + head; 2: capability `cap`'s adapter + head; 3: all K adapters + MLP)."""

    def __init__(self, dmoe: nn.Module, phase: int):
        super().__init__()
        self.dmoe, self.phase = dmoe, phase
        self.dmoe.requires_grad_(False)
        for inner in self.dmoe.inners.values():
            if phase == 1:
                inner.backbone.requires_grad_(True)
                inner.head.requires_grad_(True)
            elif phase == 2:
                for name, p in inner.backbone.named_parameters():
                    p.requires_grad_(".lora_" in name)
                inner.cap_heads.requires_grad_(True)
            else:
                inner.agg.requires_grad_(True)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.phase == 3:  # frozen experts give the MLP the same features they give at inference (no LoRA dropout)
            for inner in self.dmoe.inners.values():
                inner.backbone.eval()
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, task: torch.Tensor, cap: torch.Tensor) -> torch.Tensor:
        """ids/mask [B, T], task/cap [B] (indices) -> rewards [B]."""
        spec = self.dmoe.spec
        out = torch.zeros(ids.shape[0], device=ids.device)
        groups = torch.unique(torch.stack([task, cap], dim=-1), dim=0).tolist()
        for t, c in groups:
            rows = ((task == t) & (cap == c)).nonzero(as_tuple=True)[0]
            inner = self.dmoe.inners[spec.tasks[t]]
            g_ids, g_mask = ids[rows], mask[rows]
            if self.phase == 1:
                r = inner.base_reward(g_ids, g_mask)
            elif self.phase == 2:
                r = inner.capability_reward(spec.capabilities[c], g_ids, g_mask)
            else:
                with torch.no_grad():
                    feats = inner.features(g_ids, g_mask)  # [b, K*H]
                r = inner.agg(feats).squeeze(-1)
            out = out.index_put((rows,), r)
        return out


class PhaseTask(_TokenizerMixin, TrainTask):
    """Bradley–Terry training of one DMoERM phase over all tasks.

    phase 1: `source` is a dense RM / causal LM / backbone dir; 2: the phase-1 model dir; 3: the phase-2 model dir,
    with `router_dir` (a RouterTask output) supplying the trained router. Saves a DMoERM dir (`save_dmoe`).
    """

    find_unused_parameters = True  # a batch rarely holds every (task, capability) group

    def __init__(self, phase: int, source: str | Path, max_len: int, tok_source: str | Path,
                 tasks: tuple[str, ...] = (), capabilities: tuple[str, ...] = (), lora=None,
                 router_dir: str | Path | None = None, seed: int = 0, chat_template: str = "auto"):
        if phase not in PHASES:
            raise ValueError(f"PhaseTask: phase must be one of {PHASES}, got {phase!r}")
        if phase == 1 and not (tasks and capabilities and lora):
            raise ValueError("PhaseTask phase 1 needs tasks, capabilities and the LoRA spec")
        if phase == 3 and not router_dir:
            raise ValueError("PhaseTask phase 3 needs router_dir (the trained router)")
        self.phase, self.source, self.max_len, self.tok_source = phase, str(source), max_len, str(tok_source)
        self.tasks, self.capabilities, self.lora, self.seed = tuple(tasks), tuple(capabilities), lora, seed
        self.router_dir = str(router_dir) if router_dir else None
        self.chat_template = check_mode(chat_template)

    def build(self) -> PhaseNet:

        if self.phase == 1:
            model = new_dmoe(load_dense_rm(self.source), list(self.tasks), list(self.capabilities), self.lora,
                             seed=self.seed)
        else:
            model, _ = load_dmoe(self.source, with_tokenizer=False)
            if self.phase == 2:
                add_capabilities(model)
            else:

                add_aggregators(model, seed=self.seed)
                load_model(model.router, str(Path(self.router_dir) / "router.safetensors"), strict=True)
        return PhaseNet(model.train(), self.phase)

    def collate(self, examples: list[PairExample]) -> dict[str, torch.Tensor]:
        """ids/mask [2B, T]: the B chosen sequences, then the B rejected ones; task/cap [2B]."""

        prompts = [e.prompt for e in examples]
        ids, mask = encode_texts(self.tokenizer, prompts + prompts, [e.chosen for e in examples]
                                 + [e.rejected for e in examples], self.max_len, self.chat_template)
        task = torch.tensor([e.task for e in examples] * 2)
        cap = torch.tensor([e.cap for e in examples] * 2)
        return {"ids": ids, "mask": mask, "task": task, "cap": cap}

    def loss(self, model, raw, batch) -> tuple[torch.Tensor, dict]:

        r = model(batch["ids"], batch["mask"], batch["task"], batch["cap"])
        rc, rr = r.chunk(2)
        return bt_loss(rc, rr), {"acc": pref_accuracy(rc.detach(), rr.detach())}

    def save(self, raw: PhaseNet, out_dir: Path) -> None:

        save_dmoe(raw.dmoe, self.tokenizer, out_dir)

    def fingerprint(self) -> dict:
        lora = None if self.lora is None else [self.lora.r, self.lora.alpha, self.lora.dropout, list(self.lora.targets)]
        return {"task": f"dmoe_phase{self.phase}", "source": self.source, "max_len": self.max_len,
                "tasks": list(self.tasks), "capabilities": list(self.capabilities), "lora": lora,
                "router": self.router_dir, **self._chat_key()}
