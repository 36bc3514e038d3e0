"""Upcycling a dense reward model into a shared-expert MoE reward model, and saving/loading the MoE.

`upcycle` replaces every decoder layer's FFN (or only the layers moe.upcycle_layers names) by a `SharedExpertMoE`
whose n + 1 experts are exact copies of it; attention, norms, embeddings and the score head are untouched, so at
initialisation the MoE RM scores exactly like the dense RM. The MoE checkpoint is a directory: the base HF
`config.json`, `umm_moe.json` (expert settings and the upcycled layers), the weights as `model.safetensors`, and the
tokenizer.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_model, save_file
from torch import nn

from umm_ray.models.families import (FFN_PARTS, MOE_CONFIG_NAME, check_family, check_reward_config,
                                     load_tokenizer_checked)
from umm_ray.models.moe import SharedExpertMoE, moe_aux_loss, moe_layers, validate_moe_args

__all__ = ["MoESpec", "upcycle", "check_upcycle_layers", "save_moe", "load_moe", "moe_aux_loss", "decoder_layers",
           "is_moe_dir", "MOE_CONFIG_NAME"]

WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class MoESpec:
    """What `upcycle` did to a model; stored on the model as `model.umm_moe` and saved as umm_moe.json."""

    num_experts: int
    top_k: int
    noisy: bool
    family: str
    format: str = "umm_moe"
    version: int = 1
    layers: tuple[int, ...] | None = None  # decoder layers upcycled; None (files written before the key) = all

    def __post_init__(self):
        if self.layers is not None:  # umm_moe.json stores a list
            object.__setattr__(self, "layers", tuple(int(i) for i in self.layers))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of an HF model of a supported family (`.layers` for llama/qwen2/gpt_neox, `.h` for gpt2)."""
    base = model.base_model
    layers = getattr(base, "layers", None)
    if layers is None:
        layers = getattr(base, "h", None)
    if layers is None:
        raise ValueError(f"{type(model).__name__}: cannot find decoder layers (.layers or .h) on {type(base).__name__}")
    return layers


def _check_ffn(mlp: nn.Module, family: str, layer_idx: int) -> None:
    missing = [p for p in FFN_PARTS[family] if not hasattr(mlp, p)]
    if missing:
        raise ValueError(f"layer {layer_idx}: FFN {type(mlp).__name__} lacks {missing} expected for family {family}")


def check_upcycle_layers(layers, depth: int) -> tuple[int, ...]:
    """The sorted decoder-layer indices to upcycle: all `depth` layers for None or [], else `layers` validated.

    Raises:
        ValueError naming `moe.upcycle_layers` for a non-integer, negative, repeated or out-of-range index.
    """
    if not layers:
        return tuple(range(depth))
    bad = [i for i in layers if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < depth]
    if bad:
        raise ValueError(f"moe.upcycle_layers: {bad} are not layer indices of this {depth}-layer model (valid: 0.."
                         f"{depth - 1}; [] = all layers)")
    if len(set(layers)) != len(layers):
        raise ValueError(f"moe.upcycle_layers: {list(layers)} repeats a layer index")
    return tuple(sorted(layers))


def upcycle(rm: nn.Module, num_experts: int, top_k: int, noisy: bool = True, seed: int = 0,
            inplace: bool = False, layers=None) -> nn.Module:
    """Turn a dense reward model into a shared-expert MoE reward model.

    Args:
        rm: an HF `*ForSequenceClassification` model of a supported family (llama, qwen2, gpt_neox, gpt2).
        num_experts: normal experts per layer n >= 2 (the shared expert E_0 is extra).
        top_k: normal experts active per token, 1 <= top_k <= n.
        noisy: noisy top-k routing in training mode.
        seed: seeds the router weights W_g ~ N(0, 0.02) (a local generator; the global RNG is untouched).
        inplace: modify `rm` itself instead of a deep copy.
        layers: indices of the decoder layers to upcycle (moe.upcycle_layers); None or [] = every layer. The others
            keep their dense FFN (fewer parameters: each upcycled layer adds n FFN copies and a router).

    Returns:
        The MoE reward model (same class as `rm`), with `model.umm_moe` set to its `MoESpec`.
    """
    validate_moe_args(num_experts, top_k)
    family = check_family(rm.config, type(rm).__name__)
    if moe_layers(rm):
        raise ValueError(f"{type(rm).__name__} is already a MoE model; upcycle a dense reward model")
    chosen = check_upcycle_layers(layers, len(decoder_layers(rm)))  # before the deep copy: a bad index costs nothing
    model = rm if inplace else copy.deepcopy(rm)
    decoder = decoder_layers(model)
    gen = torch.Generator().manual_seed(seed)
    hidden = model.config.hidden_size
    for i in chosen:  # in layer order, so with all layers the router draws match the pre-`layers` behaviour
        _check_ffn(decoder[i].mlp, family, i)
        decoder[i].mlp = SharedExpertMoE(decoder[i].mlp, hidden, num_experts, top_k, noisy=noisy, generator=gen)
    model.umm_moe = MoESpec(num_experts, top_k, noisy, family, layers=chosen)
    return model


def is_moe_dir(path) -> bool:
    """True if `path` is a directory written by `save_moe`."""
    return (Path(path) / MOE_CONFIG_NAME).is_file()


def save_moe(model: nn.Module, tok, out_dir) -> Path:
    """Save a MoE reward model: base HF config.json + umm_moe.json + model.safetensors (+ tokenizer if given).

    Returns:
        The directory path.
    """
    spec = getattr(model, "umm_moe", None)
    if spec is None or not moe_layers(model):
        raise ValueError(f"save_moe: {type(model).__name__} is not an upcycled MoE model (use upcycle() first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)
    meta = asdict(spec) | {"dtype": str(next(model.parameters()).dtype).removeprefix("torch.")}
    (out / MOE_CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    save_file(_own_storage_state_dict(model), str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    if tok is not None:
        tok.save_pretrained(out)
    return out


def _own_storage_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict safetensors can write: a tied parameter (one Parameter under two names) once, as
    `save_model` would, and a tensor that is a view into a larger buffer copied out. DeepSpeed ZeRO 1/2 makes every
    parameter a view into one flat buffer, which safetensors refuses to save ("None is covering the entire
    storage"); only those are copied, so a plain model costs no extra memory."""
    out, seen = {}, set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        t = t.detach()
        out[name] = t.clone() if t.untyped_storage().nbytes() != t.numel() * t.element_size() else t
    return out


def _read_spec(path: Path) -> tuple[MoESpec, torch.dtype]:
    try:
        meta = json.loads((path / MOE_CONFIG_NAME).read_text())
        dtype = getattr(torch, meta.pop("dtype", "float32"))
        spec = MoESpec(**meta)
    except (OSError, json.JSONDecodeError, TypeError, AttributeError) as e:
        raise ValueError(f"{path / MOE_CONFIG_NAME}: not a valid umm_ray MoE config ({e})") from e
    if spec.format != "umm_moe":
        raise ValueError(f"{path / MOE_CONFIG_NAME}: format {spec.format!r} is not 'umm_moe'")
    return spec, dtype


def load_moe(path, dtype: torch.dtype | None = None, with_tokenizer: bool = True):
    """Load a directory written by `save_moe`, exactly (strict safetensors load; no pickle).

    Args:
        path: the MoE directory.
        dtype: parameter dtype (None keeps the saved one); the model is built in it and the weights load straight
            into it, so no copy in another dtype is ever held.
        with_tokenizer: also load and check the tokenizer saved there.

    Returns:
        (model, tokenizer) — tokenizer is None when `with_tokenizer` is False.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification  # heavy: ~2 s; upcycle() never needs it

    path = Path(path)
    spec, saved_dtype = _read_spec(path)
    config = AutoConfig.from_pretrained(path)
    check_reward_config(config, str(path))
    if not (path / WEIGHTS_NAME).is_file():
        raise FileNotFoundError(f"{path}: MoE checkpoint has no {WEIGHTS_NAME} (only safetensors are loaded)")
    tok = load_tokenizer_checked(path, config) if with_tokenizer else None
    model = AutoModelForSequenceClassification.from_config(config, dtype=dtype or saved_dtype)
    upcycle(model, spec.num_experts, spec.top_k, noisy=spec.noisy, inplace=True, layers=spec.layers)
    load_model(model, str(path / WEIGHTS_NAME), strict=True)
    model.umm_moe = spec
    return model.eval(), tok
