"""The backbone architecture families umm_ray supports, and the checks every reward-model loader runs first.

Both `reward_model` (dense loading) and `upcycle` (MoE loading) need these checks, so they live here, below both:
`reward_model` imports `upcycle` and neither imports the other back. No torch at import time (config.py reads
`ARCH_FAMILIES` from here to validate `model.family`).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FFN_PARTS", "ARCH_FAMILIES", "PICKLE_SUFFIXES", "MOE_CONFIG_NAME", "MERGE_META", "DMOE_CONFIG_NAME",
           "check_family",
           "check_reward_config", "check_weight_files", "load_tokenizer_checked", "checkpoint_kind"]

# The FFN submodules of each supported family (all weights and biases of these are copied into every expert).
FFN_PARTS: dict[str, tuple[str, ...]] = {
    "llama": ("gate_proj", "up_proj", "down_proj"),
    "qwen2": ("gate_proj", "up_proj", "down_proj"),
    "gpt_neox": ("dense_h_to_4h", "dense_4h_to_h"),
    "gpt2": ("c_fc", "c_proj"),
}
# HF `model_type`s of the backbones umm_ray can upcycle, merge and score (not the testbed's task families).
ARCH_FAMILIES: tuple[str, ...] = tuple(FFN_PARTS)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# The marker files our trainers write beside a checkpoint; they say what kind of reward model it holds.
MOE_CONFIG_NAME = "umm_moe.json"  # an unmerged shared-expert MoE (`upcycle.save_moe`)
MERGE_META = "umm_merge.json"  # alpha and softmax(theta) per layer, beside a merged UMM checkpoint
DMOE_CONFIG_NAME = "umm_dmoe.json"  # the DMoESpec of a DMoERM dir (`models.dmoe.save_dmoe`)


def check_family(config, where: str = "model") -> str:
    """Return config.model_type if it is a supported family, else raise a ValueError naming it and `where`."""
    family = getattr(config, "model_type", None)
    if family not in FFN_PARTS:
        raise ValueError(f"{where}: unsupported backbone family model_type={family!r}; "
                         f"supported: {', '.join(ARCH_FAMILIES)}")
    return family


def check_reward_config(config, where: str) -> None:
    """Raise a ValueError naming `where` unless `config` describes a supported one-label sequence classifier."""
    check_family(config, where)
    archs = getattr(config, "architectures", None) or []
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise ValueError(f"{where}: not a reward model: architectures={archs} (need a *ForSequenceClassification "
                         f"checkpoint with num_labels=1; train one with jobs.train_rm)")
    if getattr(config, "num_labels", None) != 1:
        raise ValueError(f"{where}: not a reward model: num_labels={config.num_labels} (a reward model has 1)")


def check_weight_files(path: Path) -> None:
    """A local checkpoint must have safetensors weights; refuse pickle-only ones (arbitrary code on load)."""
    if not path.is_dir():
        return  # a hub name: from_pretrained(use_safetensors=True) refuses pickles itself
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"{path}: only pickle weights {pickles} found; umm_ray loads safetensors only (convert with "
                         f"`model.save_pretrained(dir)` in a trusted environment)")
    raise FileNotFoundError(f"{path}: no *.safetensors weights found")


def load_tokenizer_checked(path, config, trust_remote_code: bool = False):
    """Load the tokenizer at `path`; refuse one whose ids exceed the model's vocab; make sure a pad id exists."""
    from transformers import AutoTokenizer  # heavy: ~3 s on first use; keeps this module (and config.py) light

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if len(tok) > config.vocab_size:
        raise ValueError(f"{path}: tokenizer/model vocab mismatch: tokenizer has {len(tok)} tokens but the model's "
                         f"vocab_size is {config.vocab_size}")
    if tok.pad_token_id is None:
        if tok.eos_token_id is None:
            raise ValueError(f"{path}: tokenizer has neither a pad nor an eos token; set one before scoring")
        tok.pad_token = tok.eos_token
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = tok.pad_token_id
    return tok


def checkpoint_kind(path) -> str:
    """What kind of reward model `path` holds, from the files our trainers write beside it (no weights loaded).

    Returns "ensemble" (a manifest .json), "moe" (a `save_moe` dir), "umm" (a merged checkpoint: `umm_merge.json`
    beside it), "dmoe" (a `save_dmoe` dir: `umm_dmoe.json`) or "dense" (any other HF model dir). Raises ValueError
    naming the path when it is none of these.
    """
    p = Path(path)
    if p.is_file() and p.suffix == ".json":
        return "ensemble"
    if (p / MOE_CONFIG_NAME).is_file():
        return "moe"
    if (p / MERGE_META).is_file():
        return "umm"
    if (p / DMOE_CONFIG_NAME).is_file():  # before "dense": a DMoERM dir has a config.json too
        return "dmoe"
    if (p / "config.json").is_file():
        return "dense"
    raise ValueError(f"{path}: not a reward model checkpoint (expected an HF model dir with config.json, a MoE or "
                     f"DMoERM dir, or an ensemble manifest .json)")
