"""The Bradley–Terry training task shared by every reward stage (dense, MoE with aux loss, theta-only merge), and
the backbone loading/validation it needs. Pure torch + transformers; `umm_ray.train.loop.fit` runs it on Ray Train.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from umm_ray.algo.bt import bt_loss, pref_accuracy
from umm_ray.data.chat import check_mode
from umm_ray.data.microbatch import right_trimmed, split_to_count, token_budget_groups
from umm_ray.data.shared_prefix import pack_pairs
from umm_ray.data.tokenize import encode_prompt_response, encode_texts
from umm_ray.models.families import check_family
from umm_ray.models.merge import MERGE_META, export_merged, make_mergeable, merge_coefficients
from umm_ray.models.moe import moe_aux_loss
from umm_ray.models.reward_model import load_reward_model, pair_rewards_shared_prefix, reward_forward
from umm_ray.models.upcycle import MOE_CONFIG_NAME, load_moe, save_moe, upcycle
from umm_ray.records import PreferencePair
from umm_ray.train.loop import TrainTask


def load_dense_rm(path: str | Path, trust_remote_code: bool = False) -> nn.Module:
    """A one-label sequence classifier from a reward-model dir (validated, head kept) or from a causal LM / backbone
    (new score head, initialised from torch's global RNG, so the caller's seed decides it)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification  # heavy: ~2 s, paid when a model is built

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    check_family(config, str(path))
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return load_reward_model(path, trust_remote_code=trust_remote_code)[0].train()
    config.num_labels = 1
    if getattr(config, "pad_token_id", None) is None:
        config.pad_token_id = config.eos_token_id
    return AutoModelForSequenceClassification.from_pretrained(path, config=config, use_safetensors=True,
                                                              dtype=torch.float32, trust_remote_code=trust_remote_code)


def check_backbone(path: str | Path, max_len: int, trust_remote_code: bool = False) -> None:
    """Fail before any compute: unsupported family, or rm.max_len beyond the model's context."""
    from transformers import AutoConfig  # heavy: ~1 s, paid when a backbone is checked

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    check_family(config, str(path))
    ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if ctx and max_len > ctx:
        raise ValueError(f"rm.max_len={max_len} exceeds the context of {path} ({ctx} positions)")


def backbone_depth(path: str | Path, trust_remote_code: bool = False) -> int:
    """Decoder layers of the backbone at `path` (config only; gpt2's n_layer maps to num_hidden_layers)."""
    from transformers import AutoConfig  # heavy: ~1 s, paid when a backbone is checked

    return int(AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code).num_hidden_layers)


def _saved_moe_layers(moe_dir: str) -> tuple[int, ...] | str:
    layers = json.loads((Path(moe_dir) / MOE_CONFIG_NAME).read_text()).get("layers")
    return tuple(layers) if layers is not None else "all"


class RewardNet(nn.Module):
    """Routes forward() to `reward_forward` (or, for pairs packed with their prompt once, to
    `pair_rewards_shared_prefix`), so DDP/DeepSpeed wrap a module whose forward yields rewards [B] ([2B] packed)."""

    def __init__(self, rm: nn.Module):
        super().__init__()
        self.rm = rm

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor | None = None,
                segments: torch.Tensor | None = None, ends: torch.Tensor | None = None) -> torch.Tensor:
        if segments is None:
            return reward_forward(self.rm, ids, mask)
        return pair_rewards_shared_prefix(self.rm, ids, mask, positions, segments, ends)


class BTTask(TrainTask):
    """Bradley–Terry training of a reward model.

    stage 'dense': `source` is an RM or a causal LM; 'moe': the same, upcycled on the worker; 'merge': `source` is a
    trained MoE dir, made mergeable (only theta trains). The MoE stage adds `aux_coef * moe_aux_loss`.
    `share_prompt` (rm.share_prompt): a pair is one row holding its prompt once (`umm_ray.data.shared_prefix`),
    not a chosen row and a rejected row; the same rewards and gradients on fewer tokens.
    """

    def __init__(self, stage: str, source: str | Path, max_len: int, num_experts: int = 0, top_k: int = 0,
                 noisy: bool = True, router_seed: int = 0, aux_coef: float = 0.0, alpha: float = 0.5,
                 trust_remote_code: bool = False, chat_template: str = "auto",
                 upcycle_layers: list[int] | tuple[int, ...] = (), share_prompt: bool = False):
        if stage not in ("dense", "moe", "merge"):
            raise ValueError(f"BTTask stage must be dense|moe|merge, got {stage!r}")
        self.stage, self.source, self.max_len = stage, str(source), max_len
        self.num_experts, self.top_k, self.noisy, self.router_seed = num_experts, top_k, noisy, router_seed
        self.aux_coef, self.alpha, self.trust_remote_code = aux_coef, alpha, trust_remote_code
        self.chat_template = check_mode(chat_template)  # model.chat_template: pairs read as the policy wrote them
        self.upcycle_layers = tuple(upcycle_layers)  # moe stage: decoder layers to upcycle; () = all
        self.share_prompt = share_prompt
        self.find_unused_parameters = stage == "moe"  # experts a batch never routes to get no gradient
        self._tok = None

    def __getstate__(self):
        return {**self.__dict__, "_tok": None}

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer  # heavy: ~3 s, paid when the tokenizer is first needed

            self._tok = AutoTokenizer.from_pretrained(self.source, trust_remote_code=self.trust_remote_code)
            if self._tok.pad_token_id is None:
                self._tok.pad_token = self._tok.eos_token
        return self._tok

    def build(self) -> RewardNet:
        if self.stage == "merge":
            moe, _ = load_moe(self.source, with_tokenizer=False)
            return RewardNet(make_mergeable(moe.train(), self.alpha, inplace=True))
        rm = load_dense_rm(self.source, self.trust_remote_code)
        if self.stage == "moe":
            rm = upcycle(rm, self.num_experts, self.top_k, noisy=self.noisy, seed=self.router_seed, inplace=True,
                         layers=self.upcycle_layers)
        return RewardNet(rm)

    def collate(self, pairs: list[PreferencePair]) -> dict[str, torch.Tensor]:
        """ids/mask [2B, T]: the B chosen sequences, then the B rejected ones (one forward pass for both); with
        share_prompt, `pack_pairs`' B rows (ids, mask, positions, segments [B, T], ends [B, 2]) instead."""
        if self.share_prompt:
            tok, n, mode = self.tokenizer, self.max_len, self.chat_template
            chosen = [encode_prompt_response(tok, p.prompt, p.chosen, n, chat_template=mode)[0] for p in pairs]
            rejected = [encode_prompt_response(tok, p.prompt, p.rejected, n, chat_template=mode)[0] for p in pairs]
            return pack_pairs(chosen, rejected, tok.pad_token_id)
        prompts = [p.prompt for p in pairs]
        ids, mask = encode_texts(self.tokenizer, prompts + prompts, [p.chosen for p in pairs]
                                 + [p.rejected for p in pairs], self.max_len, self.chat_template)
        return {"ids": ids, "mask": mask}

    def loss(self, model, raw, batch) -> tuple[torch.Tensor, dict]:
        r = model(batch["ids"], batch["mask"], batch.get("positions"), batch.get("segments"), batch.get("ends"))
        rc, rr = r.chunk(2)
        bt = bt_loss(rc, rr)
        extra = {"bt_loss": bt.item(), "acc": pref_accuracy(rc.detach(), rr.detach())}
        if self.stage != "moe":
            return bt, extra
        aux = moe_aux_loss(raw.rm)
        return bt + self.aux_coef * aux, {**extra, "aux_loss": aux.item()}

    def micro_batches(self, batch: dict, budget: int, count: int | None = None) -> list[tuple[dict, float]]:
        """Pairs in length-sorted pieces of <= `budget` padded tokens (both rows of a pair in one piece, its length
        the longer row's), each cut to its own longest row; weight = the piece's share of the pairs (the BT loss and
        accuracy are means over pairs). The MoE aux loss is then a weighted mean of the pieces' own balance losses,
        as it is over DDP ranks, not the whole batch's. A share_prompt batch is cut the same way, one row per pair."""
        mask, lengths = batch["mask"], batch["mask"].sum(dim=1)
        packed = "segments" in batch  # share_prompt: pair i is row i; else rows i (chosen) and i + n (rejected)
        n = mask.shape[0] if packed else mask.shape[0] // 2
        lengths = lengths if packed else torch.maximum(lengths[:n], lengths[n:])
        groups = token_budget_groups(lengths.tolist(), budget, rows_per_item=1 if packed else 2)
        groups = groups if count is None else split_to_count(groups, count)
        out = []
        for g in groups:
            rows = torch.tensor(g if packed else g + [i + n for i in g], device=mask.device)
            width = right_trimmed(mask[rows])
            out.append(({k: v[rows] if k == "ends" else v[rows, :width] for k, v in batch.items()}, len(g) / n))
        return out

    def save(self, raw: RewardNet, out_dir: Path) -> None:
        if self.stage == "moe":
            save_moe(raw.rm, self.tokenizer, out_dir)
        elif self.stage == "merge":
            coefs = merge_coefficients(raw.rm)
            export_merged(raw.rm, self.tokenizer, out_dir)
            (out_dir / MERGE_META).write_text(json.dumps({"alpha": self.alpha, "softmax_theta": coefs}, indent=1))
        else:
            raw.rm.config.architectures = [type(raw.rm).__name__]
            raw.rm.save_pretrained(out_dir, safe_serialization=True)
            self.tokenizer.save_pretrained(out_dir)

    def fingerprint(self) -> dict:
        # Defaults stay out of the key so checkpoints written before the options existed still resume.
        chat = {} if self.chat_template == "auto" else {"chat_template": self.chat_template}
        layers = {"upcycle_layers": list(self.upcycle_layers)} if self.upcycle_layers else {}
        shared = {"share_prompt": True} if self.share_prompt else {}
        return {"task": f"bt_{self.stage}", "source": self.source, "max_len": self.max_len,
                "experts": [self.num_experts, self.top_k], "alpha": self.alpha, **chat, **layers, **shared}

    def levers(self) -> dict:
        """What the stage reports of the model's shape: which decoder layers are (or were) MoE layers."""
        shared = {"share_prompt": self.share_prompt}
        if self.stage == "dense":
            return shared
        if self.stage == "moe":
            layers = self.upcycle_layers or "all"
        else:  # merge: the trained MoE's own record (umm_moe.json), None for files older than the key
            layers = _saved_moe_layers(self.source)
        return {**shared, "upcycle_layers": list(layers) if isinstance(layers, tuple) else layers}
