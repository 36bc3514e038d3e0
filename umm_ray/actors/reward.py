"""RewardActor: any Scorer behind a Ray actor, with every output checked; RewardGroup: k members placed together.

A spec says what to load: the testbed's programmatic gold, an HF reward-model directory (dense, merged UMM-RM or an
unmerged MoE dir: `models.reward_model.load_scorer` tells them apart), a hub model id (downloaded once per node into
the HF cache, safetensors only: `umm_ray.model_hub`), one member of an ensemble, or a remote HTTP endpoint
(`serve.client.RemoteScorer`). Learned RMs load in the spec's dtype, resolved on the actor's device by
`umm_ray.dtypes.resolve_dtype` ('auto': bf16 on GPU, fp32 on CPU); scores are float32 whatever it is.
An ensemble is one actor per member placed SPREAD, each returning its member's scores on the ensemble's common scale
(the manifest's per-member mean and std); the driver aggregates the [k, B] member scores with
`algo.ensemble.aggregate`, so the aggregate and lambda are the driver's choice.

A scorer that returns NaN / inf or the wrong number of scores raises RuntimeError naming the actor and its spec:
a silent zero reward would quietly train the policy on garbage.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import ray
import torch

from umm_ray.actors.placement import in_group, make_placement_group, release
from umm_ray.data.chat import check_mode
from umm_ray.dtypes import DTYPES, resolve_dtype, torch_dtype
from umm_ray.model_hub import hub_snapshot
from umm_ray.models.reward_model import (EnsembleScorer, StandardisedScorer, load_scorer, member_rows,
                                         read_manifest)
from umm_ray.resources import RoleResources
from umm_ray.reward_source import RewardSource
from umm_ray.serve.client import RemoteScorer
from umm_ray.testbed.gold import TestbedGold


@dataclass(frozen=True)
class RewardSpec:
    """What one RewardActor scores with: a `RewardSource` plus the settings of loading and calling it.

    Attributes:
        name: shown in errors and metrics ("proxy", "gold", "proxy/member1").
        source: the testbed gold, an HF RM dir / MoE dir / ensemble manifest, a hub id, or a remote endpoint.
        token: bearer token for a remote endpoint.
        max_len, batch_size: tokenisation cap and scoring batch for learned RMs.
        trust_remote_code: let a learned RM's own modelling/tokenizer code run (model.trust_remote_code).
        chat_template: 'auto' | 'none', how a learned RM renders prompts (model.chat_template): the spec carries it
            into the actor so the RM reads the same tokens as the policy that wrote the response.
        dtype: 'auto' | 'bf16' | 'fp16' | 'fp32' (reward.proxy_dtype / reward.gold_dtype), resolved on the actor's
            device (`umm_ray.dtypes.resolve_dtype`).
        scale: an ensemble member's (mean, std) from its manifest (`ensemble_members`): the actor returns
            (score - mean) / std, the ensemble's common scale; None for anything else.
    """

    name: str
    source: RewardSource
    token: str = ""
    max_len: int = 256
    batch_size: int = 64
    trust_remote_code: bool = False
    chat_template: str = "auto"
    dtype: str = "auto"
    scale: tuple[float, float] | None = None

    def __post_init__(self):
        check_mode(self.chat_template)  # a bad mode fails at the driver, not inside a remote actor
        if self.dtype not in DTYPES:
            raise ValueError(f"reward source {self.name!r}: dtype {self.dtype!r} is not one of {list(DTYPES)}")

    @classmethod
    def load(cls, source: RewardSource | str, name: str, token: str = "", max_len: int = 256,
             batch_size: int = 64, trust_remote_code: bool = False, chat_template: str = "auto",
             dtype: str = "auto") -> "RewardSpec":
        """A spec for `source` (parsed when text), checked to exist and made absolute for the actor's working dir.

        Raises ValueError for malformed text and FileNotFoundError for a missing checkpoint, both naming `name`.
        """
        if not isinstance(source, RewardSource):
            source = RewardSource.parse(source, f"reward source {name!r}")
        source = source.check_exists(f"reward source {name!r}").absolute()
        return cls(name, source, token=token if source.kind == "remote" else "", max_len=max_len,
                   batch_size=batch_size, trust_remote_code=trust_remote_code, chat_template=chat_template,
                   dtype=dtype)

    @property
    def kind(self) -> str:
        return self.source.kind

    @property
    def path(self) -> str:
        """The checkpoint path or hub id ('' for the testbed gold and endpoints)."""
        return self.source.location if self.kind in ("path", "hub") else ""

    @property
    def url(self) -> str:
        return self.source.location if self.kind == "remote" else ""

    def describe(self) -> str:
        return "testbed gold" if self.kind == "testbed" else str(self.source)


def spec_settings(cfg, role: str = "proxy") -> dict:
    """`RewardSpec.load`'s settings from a `Config` (reward.remote_token / batch_size, rm.max_len,
    model.trust_remote_code / chat_template, and reward.proxy_dtype or reward.gold_dtype by `role` 'proxy' | 'gold'):
    PPO and Best-of-N build every proxy and gold spec from this one place."""
    if role not in ("proxy", "gold"):
        raise ValueError(f"spec_settings: role must be 'proxy' or 'gold', got {role!r}")
    r = cfg.reward
    return {"token": r.remote_token, "max_len": cfg.rm.max_len, "batch_size": r.batch_size,
            "trust_remote_code": cfg.model.trust_remote_code, "chat_template": cfg.model.chat_template,
            "dtype": r.gold_dtype if role == "gold" else r.proxy_dtype}


def build_scorer(spec: RewardSpec, device: str = "cpu"):
    """Instantiate the Scorer a spec names (inside the actor): a hub id resolves to its local snapshot first (one
    download per node), learned RMs load straight in the spec's dtype resolved for `device`."""
    if spec.kind == "testbed":
        return TestbedGold()
    if spec.kind == "remote":
        return RemoteScorer(spec.url, token=spec.token, batch_size=spec.batch_size)
    path = str(hub_snapshot(spec.path, what=f"reward source {spec.name!r}")) if spec.kind == "hub" else spec.path
    scorer = load_scorer(path, max_len=spec.max_len, batch_size=spec.batch_size, device=device,
                         trust_remote_code=spec.trust_remote_code, chat_template=spec.chat_template,
                         dtype=torch_dtype(resolve_dtype(spec.dtype, device)))
    if spec.source.aggregate is not None:  # 'manifest.json#wco': the source's aggregate, not the manifest's own
        if not isinstance(scorer, EnsembleScorer):
            raise ValueError(f"reward source {spec.name!r}: aggregate {spec.source.aggregate!r} given but "
                             f"{spec.path} is not an ensemble manifest")
        scorer = EnsembleScorer(scorer.members, spec.source.aggregate,
                                spec.source.lam if spec.source.lam is not None else scorer.lam)
    return scorer if spec.scale is None else StandardisedScorer(scorer, *spec.scale)


def check_scores(scores, n: int, who: str) -> list[float]:
    """Validate a scorer's output: exactly `n` finite floats, else RuntimeError naming `who` and the bad indices."""
    try:
        values = [float(s) for s in scores]
    except (TypeError, ValueError) as e:
        raise RuntimeError(f"{who}: scores are not a list of numbers ({e})") from None
    if len(values) != n:
        raise RuntimeError(f"{who}: returned {len(values)} scores for {n} responses")
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"{who}: non-finite scores at indices {bad[:10]} (e.g. {values[bad[0]]}) "
                           f"of {n}; refusing to train on them")
    return values


class RewardActor:
    """Scores (prompt, response) pairs with the Scorer named by `spec`; outputs are always checked."""

    def __init__(self, spec: RewardSpec, num_threads: int = 1):
        torch.set_num_threads(num_threads)
        self.spec = spec
        self.name = f"RewardActor[{spec.name}: {spec.describe()}]"
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.scorer = build_scorer(spec, device)

    def ready(self) -> bool:
        """True once the scorer is loaded (call it to wait for start-up and surface load errors early)."""
        return True

    def weights_dtype(self) -> str | None:
        """The dtype the learned RM's weights are held in ('bfloat16', 'float32', ...); None for the testbed gold
        and endpoints (also for an ensemble scorer: its members are separate actors in PPO)."""
        model = getattr(self.scorer, "model", None)
        return str(next(model.parameters()).dtype).removeprefix("torch.") if model is not None else None

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One finite float per pair, in order. Raises RuntimeError naming this actor on a bad scorer output."""
        return self._checked(prompts, responses, lambda: [self.scorer.score(prompts, responses)])[0]

    def member_scores(self, prompts: list[str], responses: list[str]) -> list[list[float]]:
        """[k][B]: each member's scores when the scorer is an ensemble held whole (ensemble.score_actors shared), else
        [1][B], the `score`. Raises RuntimeError naming this actor (and member) on a bad scorer output."""
        return self._checked(prompts, responses, lambda: member_rows(self.scorer, prompts, responses),
                             len(getattr(self.scorer, "members", [None])))

    def _checked(self, prompts: list[str], responses: list[str], rows: Callable[[], list], k: int = 1
                 ) -> list[list[float]]:
        """`rows()` ([k] lists of B scores) under no_grad, each checked (`check_scores`); errors name this actor."""
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return [[] for _ in range(k)]
        try:
            with torch.no_grad():
                got = rows()
        except Exception as e:  # name the actor and spec whatever the scorer raised (HTTP, tokenizer, ...)
            raise RuntimeError(f"{self.name}: scoring {len(prompts)} responses failed: {e}") from e
        return [check_scores(row, len(prompts), self.name if k == 1 else f"{self.name} member {i}")
                for i, row in enumerate(got)]


def ensemble_members(spec: RewardSpec) -> list[RewardSpec]:
    """Expand an ensemble manifest spec into one spec per member ("<name>/member<i>"); other specs stay as they are."""
    if not spec.source.is_manifest:
        return [spec]

    manifest = read_manifest(spec.path)
    return [replace(spec, name=f"{spec.name}/member{i}", source=RewardSource(m), scale=ms)
            for i, (m, ms) in enumerate(zip(manifest["members"], manifest["scale"]))]


class RewardGroup:
    """RewardActors (one spec each) in one placement group; `member_scores` returns Tensor[k, B], one row per member:
    a spec per member (`ensemble_members`) gives an actor per member, a whole ensemble spec one actor for all of them.

    Reward actors are stateless, so Ray may restart one that dies and retry the call (`max_restarts`).
    """

    def __init__(self, specs: list[RewardSpec], strategy: str = "PACK", claim: RoleResources | None = None,
                 max_restarts: int = 2):
        if not specs:
            raise ValueError("RewardGroup needs at least one spec")
        self.specs = specs
        label = specs[0].name.split("/")[0]
        claim = claim or RoleResources("proxy", 1.0, 0.0)  # umm_ray.resources.role_resources(cfg, "proxy" | "gold")
        self.pg = make_placement_group(f"reward-{label}", [claim.bundle() for _ in specs], strategy)
        cls = ray.remote(RewardActor)
        self.actors = [cls.options(**claim.bundle_options(), scheduling_strategy=in_group(self.pg, i),
                                   max_restarts=max_restarts, max_task_retries=max_restarts).remote(s)
                       for i, s in enumerate(specs)]

    def ready(self) -> None:
        """Block until every actor has loaded its scorer."""
        ray.get([a.ready.remote() for a in self.actors])

    def submit(self, prompts: list[str], responses: list[str]) -> list[ray.ObjectRef]:
        """Start scoring on every actor; pass the refs to `collect` (lets proxy and gold run concurrently)."""
        return [a.member_scores.remote(prompts, responses) for a in self.actors]

    @staticmethod
    def collect(refs: list[ray.ObjectRef]) -> torch.Tensor:
        """ray.get the actors' member rows -> Tensor[k, B] float64 (members in order)."""
        return torch.tensor([row for rows in ray.get(refs) for row in rows], dtype=torch.float64)

    def member_scores(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Tensor[k, B]: member i's score of pair b."""
        return self.collect(self.submit(prompts, responses))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        release(self.pg)
