"""Learnable merge of a shared-expert MoE reward model back into one dense reward model (UMM-RM eq. 8-9).

Per layer a learnable theta in R^n (zeros at start) and a fixed shared-expert rate alpha in [0, 1]. Every FFN weight
and bias W is merged as

    W_merged = alpha * W_0 + (1 - alpha) * sum_i softmax(theta)_i * W_i

and rebuilt in every forward pass (through `torch.func.functional_call`), so the BT loss reaches theta. Only theta
trains. `bake` writes the final weights into plain FFN modules: the result is the original HF class with exactly the
dense parameter count, and `export_merged` saves it as a standard HF checkpoint.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from umm_ray.models.families import MERGE_META
from umm_ray.models.moe import SharedExpertMoE, moe_layers
from umm_ray.models.upcycle import decoder_layers

__all__ = ["merge_weights", "MergedFFN", "make_mergeable", "merge_coefficients", "bake", "export_merged",
           "validate_alpha", "MERGE_META"]



def validate_alpha(alpha) -> float:
    """Return alpha as a float, or raise a ValueError naming it unless it is a number in [0, 1]."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ValueError(f"merge.alpha must be a number in [0, 1], got {alpha!r}") from None
    if isinstance(alpha, bool) or math.isnan(a) or not 0.0 <= a <= 1.0:
        raise ValueError(f"merge.alpha must be in [0, 1] (the shared-expert rate), got {alpha!r}")
    return a


def merge_weights(shared: torch.Tensor, normal: list[torch.Tensor], theta: torch.Tensor, alpha: float
                  ) -> torch.Tensor:
    """W_merged = alpha * W_0 + (1 - alpha) * sum_i softmax(theta)_i * W_i.

    Args:
        shared: W_0, any shape S. normal: n tensors W_1..W_n of shape S. theta: [n]. alpha: in [0, 1].

    Returns:
        Tensor of shape S (differentiable in theta).
    """
    w = torch.softmax(theta.float(), dim=0).to(shared.dtype)
    mixed = sum(w[i] * W for i, W in enumerate(normal))
    return alpha * shared + (1.0 - alpha) * mixed


class MergedFFN(nn.Module):
    """An FFN whose weights are merged on the fly from a SharedExpertMoE's frozen experts and a learnable theta."""

    def __init__(self, moe: SharedExpertMoE, alpha: float):
        super().__init__()
        self.alpha = validate_alpha(alpha)
        self.experts = moe.experts
        for p in self.experts.parameters():
            p.requires_grad_(False)
        ref = next(self.experts.parameters())
        self.theta = nn.Parameter(torch.zeros(moe.num_experts, device=ref.device, dtype=torch.float32))

    def merged_params(self) -> dict[str, torch.Tensor]:
        """Merged value of every parameter of the FFN, by name (e.g. 'gate_proj.weight', 'c_fc.bias')."""
        shared = dict(self.experts[0].named_parameters())
        normal = [dict(e.named_parameters()) for e in self.experts[1:]]
        return {k: merge_weights(v, [d[k] for d in normal], self.theta, self.alpha) for k, v in shared.items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., H] -> the FFN with merged weights applied to x, same shape."""
        return functional_call(self.experts[0], self.merged_params(), (x,))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, num_experts={self.theta.numel()}"


def make_mergeable(moe_rm: nn.Module, alpha: float, inplace: bool = False) -> nn.Module:
    """Replace every SharedExpertMoE by a MergedFFN; freeze everything except the per-layer theta.

    Args:
        moe_rm: an upcycled (and usually trained) MoE reward model.
        alpha: the fixed shared-expert rate in [0, 1].
        inplace: modify `moe_rm` instead of a deep copy.

    Returns:
        The mergeable model; its only trainable parameters are the `theta`s ([n] per layer).
    """
    alpha = validate_alpha(alpha)
    if not moe_layers(moe_rm):
        raise ValueError(f"make_mergeable: {type(moe_rm).__name__} has no MoE layers (upcycle and train it first)")
    model = moe_rm if inplace else copy.deepcopy(moe_rm)
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in decoder_layers(model):
        if isinstance(layer.mlp, SharedExpertMoE):
            layer.mlp = MergedFFN(layer.mlp, alpha)
    model.umm_merge_alpha = alpha
    return model


def merged_layers(model: nn.Module) -> list[MergedFFN]:
    return [m for m in model.modules() if isinstance(m, MergedFFN)]


def merge_coefficients(model: nn.Module) -> list[list[float]]:
    """softmax(theta) per layer, [num_layers][n], for reports."""
    return [torch.softmax(m.theta.detach().float(), 0).tolist() for m in merged_layers(model)]


def _dense_param_count(config) -> int:
    from transformers import AutoModelForSequenceClassification  # heavy: ~2 s; only for the dense param count

    with torch.device("meta"):
        ref = AutoModelForSequenceClassification.from_config(config)
    return sum(p.numel() for p in ref.parameters())


@torch.no_grad()
def bake(model: nn.Module) -> nn.Module:
    """Bake the merge coefficients in: a dense HF reward model of the original class and parameter count.

    Returns:
        A new model (the input is untouched) whose FFNs are plain copies of the shared expert's module type
        holding the merged weights; all parameters trainable, eval mode.
    """
    if not merged_layers(model):
        raise ValueError(f"bake: {type(model).__name__} has no merge layers (call make_mergeable first)")
    dense = copy.deepcopy(model)
    for layer in decoder_layers(dense):
        if isinstance(layer.mlp, MergedFFN):
            values = layer.mlp.merged_params()
            ffn = copy.deepcopy(layer.mlp.experts[0])
            for name, p in ffn.named_parameters():
                p.copy_(values[name])
            layer.mlp = ffn
    for attr in ("umm_moe", "umm_merge_alpha"):
        if hasattr(dense, attr):
            delattr(dense, attr)
    for p in dense.parameters():
        p.requires_grad_(True)
    n, expected = sum(p.numel() for p in dense.parameters()), _dense_param_count(dense.config)
    if n != expected:
        raise RuntimeError(f"bake: merged model has {n} parameters, the dense {type(dense).__name__} has {expected}")
    return dense.eval()


def export_merged(model: nn.Module, tok, out_dir) -> Path:
    """Save a mergeable (baked here) or already-baked model as a standard HF checkpoint (safetensors) + tokenizer.

    The directory loads with plain `AutoModelForSequenceClassification.from_pretrained`, without umm_ray.
    """
    dense = bake(model) if merged_layers(model) else model
    if moe_layers(dense):
        raise ValueError("export_merged: the model still has unmerged MoE layers (call make_mergeable first)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dense.config.architectures = [type(dense).__name__]
    dense.save_pretrained(out)
    if not any(out.glob("*.safetensors")):
        raise RuntimeError(f"export_merged: {out} has no safetensors weights after save_pretrained")
    if tok is not None:
        tok.save_pretrained(out)
    return out
