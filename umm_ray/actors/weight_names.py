"""How a policy's parameter names map onto a rollout engine's checkpoint names, and the checks a weight sync makes.

A live HF model's `named_parameters()` and the safetensors checkpoint an engine loaded from can differ: transformers
renames some tensors on save (GPT-NeoX's `lm_head` is `embed_out` on disk), and tied output embeddings are not
saved at all. `WeightNames` reads both namings once per engine and validates every sync against the checkpoint's
shapes, so a wrong or partial state dict stops with the names that differ instead of loading garbage.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from umm_ray.actors.weight_sync import Bucket, ReceivePlan


class WeightNames:
    """The checkpoint's tensor names and shapes, and how a live HF model's parameter names map onto them.

    A policy sends `named_parameters()` names; vLLM loads checkpoint names. They differ where transformers renames
    on save (GPT-NeoX: `lm_head.weight` in memory, `embed_out.weight` on disk). Tied aliases (a tied
    `lm_head.weight`) are accepted and dropped: they repeat the embedding. `tied` maps each alias to the tensor it
    repeats, for engines that must be sent it anyway (`with_tied`).
    """

    def __init__(self, model_path: str, trust_remote_code: bool = False):
        self.shapes = checkpoint_shapes(model_path)
        memory, tied = _memory_names(model_path, trust_remote_code)    # in-memory name -> checkpoint name
        self.to_checkpoint = {m: c for m, c in memory.items() if m != c}
        self.to_memory = {c: m for m, c in self.to_checkpoint.items()}
        self.aliases = {c for c in memory.values() if c not in self.shapes} if self.shapes else set()
        self.tied = {memory.get(a, a): memory.get(src, src) for a, src in tied.items()
                     if memory.get(a, a) in self.aliases}

    def with_tied(self, pairs: list[tuple[str, torch.Tensor]]) -> list[tuple[str, torch.Tensor]]:
        """`pairs` plus each tied alias carrying its source's tensor. vLLM on CPU keeps a repacked copy of the LM head
        that its layerwise reload only redoes when the head itself is sent: without this, a tied model's engine keeps
        the old head after a sync (SmolLM2-135M: log-probs off by 0.16 instead of 2e-5)."""
        given = dict(pairs)
        return pairs + [(alias, given[src]) for alias, src in self.tied.items() if src in given]

    def receive_plan(self, buckets: list[Bucket], memory_names: bool, where: str) -> ReceivePlan:
        """A sender's bucket layout checked like `canonical` checks a state dict (shapes against the checkpoint, on
        meta tensors), with each sent name's target: checkpoint names (vLLM, tied aliases sent again from their
        source), or the in-memory names of an HF model (`memory_names`; aliases dropped, the tie shares them)."""
        slots = [(s, b) for b in buckets for s in b.slots]
        metas = [(s.name, torch.empty(s.shape, dtype=b.torch_dtype, device="meta")) for s, b in slots]
        pairs = self.canonical(metas, where)
        kept = {name for name, _ in pairs}
        rename = {}
        for s, _ in slots:
            ckpt = self.to_checkpoint.get(s.name, s.name)
            rename[s.name] = None if ckpt not in kept else self.to_memory.get(ckpt, ckpt) if memory_names else ckpt
        tied = () if memory_names else tuple((a, src) for a, src in self.tied.items() if src in kept)
        return ReceivePlan(tuple(buckets), rename, tied)

    def canonical(self, named_tensors, where: str) -> list[tuple[str, torch.Tensor]]:
        """dict or (name, tensor) pairs in either naming -> validated checkpoint-named pairs, aliases dropped."""
        items = named_tensors.items() if isinstance(named_tensors, dict) else named_tensors
        pairs = [(self.to_checkpoint.get(name, name), t) for name, t in items]
        check_weights(pairs, self.shapes, self.aliases, where)
        return [(name, t) for name, t in pairs if name not in self.aliases]


def checkpoint_shapes(model_path: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the safetensors weights in `model_path` (headers only; {} when there are none)."""
    shapes = {}
    for file in sorted(Path(model_path).glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def _memory_names(model_path: str, trust_remote_code: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """(in-memory state-dict name -> checkpoint name, tied output-embedding name -> the input-embedding name it
    shares its tensor with), from a weightless (meta-device) copy of the model."""
    from transformers import AutoConfig, AutoModelForCausalLM  # heavy: ~2 s; only when weights are synced

    with torch.device("meta"):
        config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    tied = {}
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    if out is not None and inp is not None and out.weight is inp.weight:
        by_module = {m: n for n, m in model.named_modules()}
        tied[f"{by_module[out]}.weight"] = f"{by_module[inp]}.weight"
    try:
        from transformers.core_model_loading import revert_weight_conversion  # transformers >= 5
    except ImportError:
        return {name: name for name in model.state_dict()}, tied
    names = {}
    for name, t in model.state_dict().items():
        saved = list(revert_weight_conversion(model, {name: t}))
        names[name] = saved[0] if len(saved) == 1 else name
    return names, tied


def check_weights(pairs: list, shapes: dict[str, tuple[int, ...]], aliases: set[str], where: str) -> None:
    """Raise ValueError unless `pairs` covers every checkpoint tensor, with matching shapes, and nothing else.

    `aliases` may appear too (tied weights absent from the checkpoint). Name checks are skipped when `shapes` is
    empty (a checkpoint without safetensors files).
    """
    if not pairs:
        raise ValueError(f"{where}: got no tensors")
    for name, tensor in pairs:
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{where}: {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
    if not shapes:
        return
    given = dict(pairs)
    missing = sorted(set(shapes) - set(given))
    if missing:
        raise ValueError(f"{where}: {len(missing)} checkpoint tensors missing, e.g. {missing[:5]} "
                         "(send the full state dict)")
    unknown = sorted(k for k in given if k not in shapes and k not in aliases)
    if unknown:
        raise ValueError(f"{where}: {len(unknown)} names not in the checkpoint, e.g. {unknown[:5]}")
    for name, want in shapes.items():
        if tuple(given[name].shape) != want:
            raise ValueError(f"{where}: {name!r} has shape {tuple(given[name].shape)}, checkpoint has {want}")
