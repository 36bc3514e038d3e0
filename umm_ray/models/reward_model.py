"""Dense reward models over HF backbones: validated loading, the scoring forward pass, and Scorers.

A reward model is an HF `AutoModelForSequenceClassification` with `num_labels=1`; its score for a sequence is the
head applied to the hidden state of the last real (non-pad) token. Loading checks everything that can be checked
before compute starts: the family is supported, the checkpoint is a one-label sequence classifier, weights are
safetensors (pickled `.bin` files are refused), and the tokenizer fits the model's vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from umm_ray.algo.ensemble import AGGREGATES
from umm_ray.algo.ensemble import aggregate as aggregate_scores
from umm_ray.data.chat import check_mode
from umm_ray.data.shared_prefix import segment_attention
from umm_ray.data.tokenize import encode_texts
from umm_ray.models.dmoe import is_dmoe_dir
from umm_ray.models.dmoe import load_scorer as load_dmoe_scorer
from umm_ray.models.families import (ARCH_FAMILIES, check_reward_config, check_weight_files,
                                     checkpoint_kind, load_tokenizer_checked)
from umm_ray.models.moe import real_tokens
from umm_ray.models.upcycle import is_moe_dir, load_moe

__all__ = ["reward_forward", "pair_rewards_shared_prefix", "load_reward_model", "RewardModelScorer", "EnsembleScorer",
           "StandardisedScorer", "load_scorer", "read_manifest", "check_reward_config", "load_tokenizer_checked",
           "checkpoint_kind", "ARCH_FAMILIES"]


def reward_forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Score a batch with a (dense, MoE or mergeable) sequence-classification reward model.

    Args:
        model: HF `*ForSequenceClassification` with a `score` head and num_labels 1.
        ids: input ids [B, T]; mask: attention mask [B, T] (1 = real token; right padding, left also works).

    Returns:
        rewards [B] (float32): the head at the last real token of each row.
    """
    with real_tokens(model, mask):  # MoE layers: balance loss and load statistics over real tokens only
        hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state  # [B,T,H]
    positions = torch.arange(ids.shape[1], device=ids.device)
    last = (positions * mask.to(positions.dtype)).argmax(dim=-1)  # rightmost real token
    h_last = hidden[torch.arange(ids.shape[0], device=ids.device), last]  # [B, H]
    return model.score(h_last).squeeze(-1).float()


def pair_rewards_shared_prefix(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                               segments: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Score B preference pairs packed one per row (`umm_ray.data.shared_prefix.pack_pairs`): the prompt is encoded
    once and each response attends to it and to itself only, so each reward is the one its own row would get.

    Args:
        model: as for `reward_forward`.
        ids, mask, positions, segments: [B, T] from `pack_pairs` (trimmed or sliced alike); ends: [B, 2].

    Returns:
        rewards [2B] (float32): the B chosen, then the B rejected (the layout `reward_forward` gets from a BT batch).
    """
    attn = model.config._attn_implementation
    if attn not in ("sdpa", "eager"):  # flash / flex kernels take no dense 4D mask: the responses would see each other
        raise ValueError(f"rm.share_prompt needs sdpa or eager attention, and this model runs {attn!r}; "
                         "train with --rm.share_prompt false")
    allowed = segment_attention(segments)  # [B, 1, T, T] bool
    if attn == "eager":  # eager attention adds the mask to its scores: make it additive
        allowed = torch.zeros(allowed.shape, dtype=model.dtype, device=ids.device).masked_fill(
            ~allowed, torch.finfo(model.dtype).min)
    with real_tokens(model, mask):  # MoE balance loss: each prompt token counted once, padding left out
        hidden = model.base_model(input_ids=ids, attention_mask=allowed, position_ids=positions,
                                  use_cache=False).last_hidden_state  # [B, T, H]
    rows = torch.arange(ids.shape[0], device=ids.device)
    h = torch.cat([hidden[rows, ends[:, 0]], hidden[rows, ends[:, 1]]])  # [2B, H]
    return model.score(h).squeeze(-1).float()


def load_reward_model(path, trust_remote_code: bool = False, dtype: torch.dtype | None = torch.float32):
    """Load and validate a reward model (HF directory or hub name, or a MoE directory from `save_moe`).

    Args:
        path: local directory or hub name.
        trust_remote_code: allow custom modelling code from the checkpoint (off by default).
        dtype: parameter dtype (default float32; None keeps the checkpoint's).

    Returns:
        (model in eval mode, tokenizer).

    Raises:
        ValueError: unsupported family, not a one-label sequence classifier, vocab mismatch, pickle-only weights.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification  # heavy: ~2 s; in-memory scoring skips it

    if is_moe_dir(path):
        return load_moe(path, dtype=dtype)
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    check_reward_config(config, str(path))
    check_weight_files(Path(path))
    tok = load_tokenizer_checked(path, config, trust_remote_code)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, use_safetensors=True, trust_remote_code=trust_remote_code,
        dtype=dtype if dtype is not None else "auto", output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if k.startswith("score")]
    if missing:
        raise ValueError(f"{path}: not a reward model: the checkpoint has no trained score head (missing {missing})")
    return model.eval(), tok


class RewardModelScorer:
    """A `Scorer` over an in-memory reward model (dense, merged, MoE or mergeable).

    Batches are formed after sorting by length (less padding); scores come back in input order. Prompts are rendered
    by `chat_template` mode (model.chat_template, `umm_ray.data.chat`), as the policy saw them.
    """

    def __init__(self, model: nn.Module, tok, max_len: int = 256, batch_size: int = 64, chat_template: str = "auto"):
        self.model, self.tok, self.max_len, self.batch_size = model.eval(), tok, max_len, batch_size
        self.chat_template = check_mode(chat_template)

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per (prompt, response) pair, in order."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        self.model.eval()
        device = next(self.model.parameters()).device
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(responses[i]))
        out = [0.0] * len(prompts)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            ids, mask = encode_texts(self.tok, [prompts[i] for i in idx], [responses[i] for i in idx], self.max_len,
                                     self.chat_template)
            r = reward_forward(self.model, ids.to(device), mask.to(device)).tolist()
            for i, v in zip(idx, r):
                out[i] = v
        return out


class EnsembleScorer:
    """A `Scorer` combining k member scorers with `umm_ray.algo.ensemble.aggregate` (mean | wco | uwo)."""

    def __init__(self, members: list, aggregate: str = "mean", lam: float = 0.0):
        if len(members) < 1:
            raise ValueError("EnsembleScorer needs at least one member")
        if aggregate not in AGGREGATES:
            raise ValueError(f"ensemble aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        self.members, self.aggregate, self.lam = members, aggregate, lam

    def member_scores(self, prompts: list[str], responses: list[str]) -> list[list[float]]:
        """Scores of every member: [k][B]."""
        return [m.score(prompts, responses) for m in self.members]

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Aggregated scores [B]."""
        per = torch.tensor(self.member_scores(prompts, responses), dtype=torch.float64)
        return aggregate_scores(per, self.aggregate, self.lam).tolist()


def member_rows(scorer, prompts: list[str], responses: list[str]) -> list[list[float]]:
    """[k][B] scores of any Scorer: an ensemble's members (`EnsembleScorer.member_scores`), else k = 1, its `score`."""
    if hasattr(scorer, "member_scores"):
        return scorer.member_scores(prompts, responses)
    return [scorer.score(prompts, responses)]


class StandardisedScorer:
    """An ensemble member on the ensemble's common scale: (score - mean) / std, with the member's own mean and std over
    the ensemble's calibration responses (the manifest's 'scale', `algo.ensemble.member_scale`). Everything else
    (model, tokenizer) is the wrapped scorer's."""

    def __init__(self, inner, mean: float, std: float):
        if not std > 0:
            raise ValueError(f"StandardisedScorer: std must be > 0, got {std}")
        self.inner, self.mean, self.std = inner, float(mean), float(std)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """[B] standardised scores."""
        return [(float(s) - self.mean) / self.std for s in self.inner.score(prompts, responses)]

    def __getattr__(self, name):
        if name == "inner":  # not set yet (unpickling): no recursion through __getattr__
            raise AttributeError(name)
        return getattr(self.inner, name)


def read_manifest(path) -> dict:
    """Read an ensemble manifest {"members": [paths], "aggregate", "lambda", "scale": [[mean, std], ...]}; member paths
    are relative to it. 'scale' (written when the ensemble is built, `algo.ensemble.member_scale`) puts the members on
    a common scale and is required: without it WCO and UWO would compare the members' arbitrary BT offsets. A
    hand-written manifest that means to combine raw scores says so with [0, 1] per member.

    Returns:
        {"members": [absolute paths], "aggregate", "lambda", "scale": [(mean, std)] * k,
         "calibration_pairs": how many pairs' responses set the scale (None when the manifest does not say)}.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read ensemble manifest ({e})") from e
    members = data.get("members") if isinstance(data, dict) else None
    if not isinstance(members, list) or not members or not all(isinstance(m, str) for m in members):
        raise ValueError(f"{path}: ensemble manifest needs a non-empty list of member paths under 'members'")
    resolved = [str(p if Path(p).is_absolute() else path.parent / p) for p in members]
    scale = data.get("scale")
    if scale is None:
        raise ValueError(f"{path}: ensemble manifest has no 'scale' (each member's [mean, std] on calibration "
                         f"responses, written by jobs.train_rm --rm.kind ensemble since the members' raw BT scores sit "
                         f"at arbitrary offsets); rebuild the ensemble, or add \"scale\": {[[0, 1]] * len(members)} "
                         f"to combine raw scores on purpose")
    ok = isinstance(scale, list) and len(scale) == len(members) and all(
        isinstance(ms, list) and len(ms) == 2 and all(isinstance(x, (int, float)) for x in ms) and ms[1] > 0
        for ms in scale)
    if not ok:
        raise ValueError(f"{path}: 'scale' must hold one [mean, std > 0] per member ({len(members)}), got {scale!r}")
    scale = [(float(m), float(s)) for m, s in scale]
    return {"members": resolved, "aggregate": data.get("aggregate", "mean"), "lambda": float(data.get("lambda", 0.0)),
            "scale": scale, "calibration_pairs": data.get("calibration_pairs")}


def load_scorer(path, max_len: int = 256, batch_size: int = 64, device: str | torch.device = "cpu",
                trust_remote_code: bool = False, chat_template: str = "auto", dtype: torch.dtype = torch.float32):
    """Build a Scorer from a dense/merged HF dir, a MoE dir (umm_moe.json), a DMoERM dir (umm_dmoe.json), or an
    ensemble manifest (.json); `chat_template` is the model.chat_template mode every member renders prompts with.
    Weights load in `dtype` (a DMoERM keeps its saved dtype: it is assembled from a router and LoRA experts); scores
    are float32 whatever it is (`reward_forward`).

    Returns:
        RewardModelScorer, `models.dmoe.DMoEScorer` (routes each prompt, then its task's experts), or EnsembleScorer
        (which also exposes `member_scores`).
    """
    p = Path(path)
    if p.suffix == ".json" and p.is_file():
        spec = read_manifest(p)
        members = [load_scorer(m, max_len, batch_size, device, trust_remote_code, chat_template, dtype)
                   for m in spec["members"]]
        members = [StandardisedScorer(m, *ms) for m, ms in zip(members, spec["scale"])]
        return EnsembleScorer(members, spec["aggregate"], spec["lambda"])
    if is_dmoe_dir(p):  # its own structure (router + per-task experts), never custom code: trust_remote_code unused
        return load_dmoe_scorer(p, max_len=max_len, batch_size=batch_size, device=device, chat_template=chat_template)
    model, tok = load_reward_model(path, trust_remote_code=trust_remote_code, dtype=dtype)
    return RewardModelScorer(model.to(device), tok, max_len=max_len, batch_size=batch_size,
                             chat_template=chat_template)
