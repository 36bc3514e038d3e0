"""What a serve replica holds: one reward model, or ensemble members plus their aggregate. No Ray here.

`RewardService` is itself a `Scorer`, so the exact scores the endpoint returns can be reproduced in-process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from umm_ray.model_hub import hub_snapshot, is_hub_id
from umm_ray.records import Scorer
from umm_ray.testbed.gold import TestbedGold


@dataclass
class ServiceScores:
    """Scores of B items: `rewards` [B] (aggregate for an ensemble) and `member_scores` [k][B] (k = 1 if single)."""

    rewards: list[float]
    member_scores: list[list[float]]


class RewardService:
    """Members (1 for a dense / merged / MoE RM, k for an ensemble) and how their scores combine."""

    def __init__(self, members: list[Scorer], names: list[str], how: str = "mean", lam: float = 0.1,
                 special_tokens: tuple[str, ...] = ()):
        if not members or len(members) != len(names):
            raise ValueError(f"RewardService needs one name per member, got {len(members)} members, {len(names)} names")
        self.members, self.names, self.how, self.lam = members, names, how, lam
        self.special_tokens = special_tokens

    def score_all(self, prompts: list[str], responses: list[str]) -> ServiceScores:
        """Score B pairs with every member, then aggregate over members (identity for one member)."""
        member_scores = [[float(x) for x in m.score(prompts, responses)] for m in self.members]
        for name, s in zip(self.names, member_scores):
            if len(s) != len(prompts):
                raise RuntimeError(f"member {name} returned {len(s)} scores for {len(prompts)} items")
        if len(self.members) == 1:
            return ServiceScores(rewards=member_scores[0], member_scores=member_scores)
        import torch  # heavy: ~1.5 s; a testbed-gold or single-RM service never aggregates

        from umm_ray.algo.ensemble import aggregate  # imports torch (see above)

        agg = aggregate(torch.tensor(member_scores, dtype=torch.float64), self.how, self.lam)
        return ServiceScores(rewards=[float(x) for x in agg.tolist()], member_scores=member_scores)

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """The Scorer interface: one (aggregate) reward per pair."""
        return self.score_all(prompts, responses).rewards


def _special_tokens(scorer) -> tuple[str, ...]:
    """EOS / pad strings of the scorer's tokenizer, stripped from OpenRLHF queries (the scorer adds its own EOS)."""
    tok = getattr(scorer, "tokenizer", None) or getattr(scorer, "tok", None)
    if tok is None:
        return ()
    return tuple(t for t in {tok.eos_token, tok.pad_token} if isinstance(t, str) and t)


def load_service(path: str, how: str = "mean", lam: float = 0.1, max_len: int = 256, batch_size: int = 64,
                 device: str = "cpu", trust_remote_code: bool = False, chat_template: str = "auto") -> RewardService:
    """Load what `path` names: an HF RM dir (dense or merged UMM) or hub id, a MoE or DMoERM dir, or an ensemble
    manifest.

    Args:
        path: checkpoint directory or ensemble manifest (.json), as accepted by `models.reward_model.load_scorer`;
            or "testbed" for the testbed's programmatic gold scorer.
        how: ensemble aggregate, one of mean | wco | uwo (ignored for a single RM). The serving config decides it,
            not the manifest, so one set of members can be served under several aggregates.
        lam: UWO variance penalty.
        max_len: truncate prompt + response to this many tokens. batch_size: scorer's inner batch.
        device: where the model(s) run ("cpu", "cuda").
        trust_remote_code: let the checkpoint's own modelling/tokenizer code run (model.trust_remote_code).
        chat_template: 'auto' | 'none' (model.chat_template): how prompts are rendered before scoring. A prompt that
            already ends with the template's assistant header (OpenRLHF renders its own) is not rendered twice.
    """
    if path == "testbed":
        return RewardService([TestbedGold()], ["testbed-gold"], how, lam)
    if is_hub_id(path):  # a hub RM: the replicas of one node share one download into its HF cache
        path = str(hub_snapshot(path, what="reward.proxy_path"))
    if not Path(path).exists():
        raise FileNotFoundError(f"reward model path {path!r} does not exist")
    from umm_ray.models.reward_model import EnsembleScorer, load_scorer, read_manifest  # heavy: torch

    scorer = load_scorer(path, max_len=max_len, batch_size=batch_size, device=device,
                         trust_remote_code=trust_remote_code, chat_template=chat_template)
    if isinstance(scorer, EnsembleScorer):
        names = [Path(m).name for m in read_manifest(path)["members"]]
        return RewardService(list(scorer.members), names, how, lam, _special_tokens(scorer.members[0]))
    return RewardService([scorer], [Path(path).name], how, lam, _special_tokens(scorer))
