"""RewardActor: any Scorer behind a Ray actor, with every output checked; RewardGroup: k members placed together.

A spec says what to load: the testbed's programmatic gold, an HF reward-model directory (dense, merged UMM-RM or an
unmerged MoE dir: `models.reward_model.load_scorer` tells them apart), one member of an ensemble, or a remote HTTP
endpoint (`serve.client.RemoteScorer`). An ensemble is one actor per member placed SPREAD; the driver aggregates the
[k, B] member scores with `algo.ensemble.aggregate`, so the aggregate and lambda are the driver's choice.

A scorer that returns NaN / inf or the wrong number of scores raises RuntimeError naming the actor and its spec:
a silent zero reward would quietly train the policy on garbage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import torch

from umm_ray.actors.placement import bundle, in_group, make_placement_group, release

KINDS = ("testbed", "path", "remote")
# Where `jobs.train_rm --rm.kind K` leaves its model under run.output_dir: reward.proxy K finds it there by default.
TRAIN_RM_OUTPUT = {"dense": "rm_dense/model", "umm": "rm_umm/model", "moe": "rm_moe/model",
                   "ensemble": "rm_ensemble/manifest.json"}


@dataclass(frozen=True)
class RewardSpec:
    """What one RewardActor scores with.

    Attributes:
        name: shown in errors and metrics ("proxy", "gold", "proxy/member1").
        kind: "testbed" (programmatic gold), "path" (HF RM dir, MoE dir or ensemble manifest), "remote" (HTTP).
        path: checkpoint directory / manifest for kind "path".
        url, token: endpoint and bearer token for kind "remote".
        max_len, batch_size: tokenisation cap and scoring batch for learned RMs.
        trust_remote_code: let a learned RM's own modelling/tokenizer code run (model.trust_remote_code).
    """

    name: str
    kind: str
    path: str = ""
    url: str = ""
    token: str = ""
    max_len: int = 256
    batch_size: int = 64
    trust_remote_code: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"RewardSpec {self.name!r}: kind {self.kind!r} is not one of {list(KINDS)}")
        if self.kind == "path" and not self.path:
            raise ValueError(f"RewardSpec {self.name!r}: kind 'path' needs a checkpoint path")
        if self.kind == "remote" and not self.url:
            raise ValueError(f"RewardSpec {self.name!r}: kind 'remote' needs a url (reward.remote_url)")

    def describe(self) -> str:
        return {"testbed": "testbed gold", "path": self.path, "remote": self.url}[self.kind]


def parse_reward_spec(text: str, name: str, remote_token: str = "", max_len: int = 256, batch_size: int = 64,
                      trust_remote_code: bool = False) -> tuple[RewardSpec, str | None, float | None]:
    """A reward source as written in configs -> (spec, aggregate override, lambda override).

    'testbed' -> programmatic gold; 'http(s)://host:port' -> remote endpoint; anything else a checkpoint path or
    ensemble manifest, optionally suffixed '#mean' / '#wco' / '#uwo:0.1' (the same syntax as `bon.rms`).
    """
    text = str(text).strip()
    if not text:
        raise ValueError(f"reward source {name!r} is empty: give 'testbed', a checkpoint path or an http(s) URL")
    if text == "testbed":
        return RewardSpec(name, "testbed"), None, None
    if text.startswith(("http://", "https://")):
        return RewardSpec(name, "remote", url=text, token=remote_token, batch_size=batch_size), None, None
    path, _, agg = text.partition("#")
    how, _, lam = agg.partition(":")
    if how and how not in ("mean", "wco", "uwo"):
        raise ValueError(f"reward source {name!r}: aggregate {how!r} in {text!r} is not one of mean, wco, uwo")
    if not Path(path).exists():
        raise FileNotFoundError(f"reward source {name!r}: {path} does not exist")
    try:
        lam_value = float(lam) if lam else None
    except ValueError:
        raise ValueError(f"reward source {name!r}: lambda {lam!r} in {text!r} is not a number") from None
    path = str(Path(path).resolve())  # the actor's working directory is not the caller's
    spec = RewardSpec(name, "path", path=path, max_len=max_len, batch_size=batch_size,
                      trust_remote_code=trust_remote_code)
    return spec, how or None, lam_value


def proxy_source(cfg) -> tuple[str, str]:
    """The proxy reward from reward.proxy / proxy_path / remote_url: (source text for `parse_reward_spec`, kind).

    'remote' -> reward.remote_url. 'auto' -> reward.proxy_path, whatever it holds. A kind (dense / umm / moe /
    ensemble) -> reward.proxy_path, or when empty the jobs.train_rm output of that kind; either must hold that kind
    (`checkpoint_kind`), so a proxy of the wrong kind stops before any compute.

    Raises:
        ValueError: nothing to use, or a checkpoint of another kind. FileNotFoundError: the path does not exist.
    """
    from umm_ray.models.reward_model import checkpoint_kind

    r = cfg.reward
    if r.proxy == "remote":
        if not r.remote_url:
            raise ValueError("reward.proxy is 'remote' but reward.remote_url is empty")
        return r.remote_url, "remote"
    text = r.proxy_path.strip()
    if not text:
        if r.proxy == "auto":
            raise ValueError("no proxy reward: set --reward.proxy_path, or --reward.proxy dense|umm|moe|ensemble (the "
                             "jobs.train_rm output), or --reward.proxy remote --reward.remote_url URL")
        text = str(Path(cfg.run.output_dir) / TRAIN_RM_OUTPUT[r.proxy])
        if not Path(text).exists():
            raise FileNotFoundError(f"reward.proxy={r.proxy!r} and no reward.proxy_path: {text} does not exist; train "
                                    f"it with `python -m jobs.train_rm --rm.kind {r.proxy}` or set --reward.proxy_path")
    if r.proxy == "auto" and text == "testbed":
        return text, "testbed"
    if r.proxy == "auto" and text.startswith(("http://", "https://")):
        return text, "remote"
    path = text.partition("#")[0]
    if not Path(path).exists():
        raise FileNotFoundError(f"reward.proxy_path: {path} does not exist")
    kind = checkpoint_kind(path)
    if r.proxy not in ("auto", kind):
        raise ValueError(f"reward.proxy is {r.proxy!r} but reward.proxy_path {path} holds a reward model of kind "
                         f"{kind!r}; set --reward.proxy {kind} (or auto), or point reward.proxy_path at a {r.proxy} "
                         f"checkpoint")
    return text, kind


def build_scorer(spec: RewardSpec, device: str = "cpu"):
    """Instantiate the Scorer a spec names (inside the actor)."""
    if spec.kind == "testbed":
        from umm_ray.testbed.gold import TestbedGold

        return TestbedGold()
    if spec.kind == "remote":
        from umm_ray.serve.client import RemoteScorer

        return RemoteScorer(spec.url, token=spec.token, batch_size=spec.batch_size)
    from umm_ray.models.reward_model import load_scorer

    return load_scorer(spec.path, max_len=spec.max_len, batch_size=spec.batch_size, device=device,
                       trust_remote_code=spec.trust_remote_code)


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

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One finite float per pair, in order. Raises RuntimeError naming this actor on a bad scorer output."""
        if len(prompts) != len(responses):
            raise ValueError(f"{self.name}: {len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            return []
        try:
            with torch.no_grad():
                scores = self.scorer.score(prompts, responses)
        except Exception as e:  # name the actor and spec whatever the scorer raised (HTTP, tokenizer, ...)
            raise RuntimeError(f"{self.name}: scoring {len(prompts)} responses failed: {e}") from e
        return check_scores(scores, len(prompts), self.name)


def ensemble_members(spec: RewardSpec) -> list[RewardSpec]:
    """Expand an ensemble manifest spec into one spec per member ("<name>/member<i>"); other specs stay as they are."""
    if spec.kind != "path" or Path(spec.path).suffix != ".json":
        return [spec]
    from umm_ray.models.reward_model import read_manifest

    members = read_manifest(spec.path)["members"]
    return [replace(spec, name=f"{spec.name}/member{i}", path=m) for i, m in enumerate(members)]


class RewardGroup:
    """k RewardActors (one spec each) in one placement group; `member_scores` returns Tensor[k, B].

    Reward actors are stateless, so Ray may restart one that dies and retry the call (`max_restarts`).
    """

    def __init__(self, specs: list[RewardSpec], strategy: str = "PACK", num_cpus: float = 1.0,
                 num_gpus: float = 0.0, max_restarts: int = 2):
        if not specs:
            raise ValueError("RewardGroup needs at least one spec")
        self.specs = specs
        label = specs[0].name.split("/")[0]
        self.pg = make_placement_group(f"reward-{label}", [bundle(num_cpus, num_gpus)] * len(specs), strategy)
        cls = ray.remote(RewardActor)
        self.actors = [cls.options(num_cpus=num_cpus, num_gpus=num_gpus, scheduling_strategy=in_group(self.pg, i),
                                   max_restarts=max_restarts, max_task_retries=max_restarts).remote(s)
                       for i, s in enumerate(specs)]

    def ready(self) -> None:
        """Block until every member has loaded its scorer."""
        ray.get([a.ready.remote() for a in self.actors])

    def submit(self, prompts: list[str], responses: list[str]) -> list[ray.ObjectRef]:
        """Start scoring on every member; pass the refs to `collect` (lets proxy and gold run concurrently)."""
        return [a.score.remote(prompts, responses) for a in self.actors]

    @staticmethod
    def collect(refs: list[ray.ObjectRef]) -> torch.Tensor:
        """ray.get the members' scores -> Tensor[k, B] float64."""
        return torch.tensor(ray.get(refs), dtype=torch.float64)

    def member_scores(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """Tensor[k, B]: member i's score of pair b."""
        return self.collect(self.submit(prompts, responses))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        release(self.pg)
