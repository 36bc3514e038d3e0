"""Where a reward comes from, as written in configs and on command lines: one parser, one spelling.

    RewardSource.parse("testbed")                         # the testbed's programmatic gold
    RewardSource.parse("http://127.0.0.1:8000")           # a Ray Serve reward endpoint (`jobs.serve_rm`)
    RewardSource.parse("runs/x/rm_dense/model")           # an HF reward-model dir (dense, merged UMM, unmerged MoE)
    RewardSource.parse("runs/x/rm_ensemble/model/manifest.json#uwo:0.5")   # an ensemble with its aggregate
    RewardSource.parse("Skywork/Skywork-Reward-Llama-3.1-8B")  # a hub id (owner/name that is no local path)

`str(source)` gives the text back in the same form, so a source survives JSON summaries, cache keys and reports
unchanged. PPO (`umm_ray.ppo.driver`), Best-of-N (`umm_ray.eval.bon`), the accuracy eval, Ray Serve and the report
all take this type; nothing else splits 'path#aggregate:lambda' by hand. No ray or torch import: the config layer and
the job entry points use it before any cluster exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from umm_ray.layout import RunLayout
from umm_ray.model_hub import check_hub_model, is_hub_id
from umm_ray.models.families import checkpoint_kind

AGGREGATES = ("mean", "wco", "uwo")  # ensemble aggregates (`umm_ray.algo.ensemble.aggregate`)
FORM = "'testbed', an http(s):// URL, a hub model id owner/name, or a checkpoint path / ensemble manifest with " \
       "optional '#mean', '#wco' or '#uwo:<lambda>'"


@dataclass(frozen=True)
class RewardSource:
    """A reward source: the testbed gold, a remote endpoint, a hub model id, or a checkpoint (with an ensemble
    aggregate override).

    Attributes:
        location: 'testbed', an http(s) URL, a hub id `owner/name`, or a checkpoint directory / ensemble manifest.
        aggregate: 'mean' | 'wco' | 'uwo' for an ensemble manifest; None = the consumer's default.
        lam: the UWO variance penalty (or any aggregate's lambda); None = the consumer's default.
    """

    location: str
    aggregate: str | None = None
    lam: float | None = None

    def __post_init__(self):
        if not self.location:
            raise ValueError(f"reward source is empty: expected {FORM}")
        if self.aggregate is not None and self.aggregate not in AGGREGATES:
            raise ValueError(f"reward source {str(self)!r}: aggregate {self.aggregate!r} is not one of "
                             f"{', '.join(AGGREGATES)}")
        if self.lam is not None and (self.aggregate is None or not math.isfinite(self.lam) or self.lam < 0):
            raise ValueError(f"reward source {str(self)!r}: lambda {self.lam!r} needs an aggregate and must be a "
                             "finite number >= 0")
        if self.kind != "path" and self.aggregate is not None:
            raise ValueError(f"reward source {str(self)!r}: an aggregate applies to ensemble manifests only")

    @classmethod
    def parse(cls, text: str, what: str = "reward source") -> "RewardSource":
        """'testbed' | 'http(s)://host:port' | 'path[#aggregate[:lambda]]' -> RewardSource.

        Raises ValueError naming `what` (e.g. 'reward.gold'), the text and the expected form when it is malformed.
        Nothing is looked up on disk here (see `check_exists`).
        """
        text = str(text).strip()
        if not text:
            raise ValueError(f"{what} is empty: expected {FORM}")
        if text == "testbed" or text.startswith(("http://", "https://")):
            return cls(text)
        location, hash_, suffix = text.partition("#")
        if not hash_:
            return cls(location)
        how, colon, lam = suffix.partition(":")
        if not location or how not in AGGREGATES or (colon and not lam):
            raise ValueError(f"{what} {text!r}: malformed; expected {FORM}")
        try:
            lam_value = float(lam) if lam else None
        except ValueError:
            raise ValueError(f"{what} {text!r}: lambda {lam!r} is not a number; expected {FORM}") from None
        try:
            return cls(location, how, lam_value)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None

    def __str__(self) -> str:
        if self.aggregate is None:
            return self.location
        return f"{self.location}#{self.aggregate}" + (f":{self.lam}" if self.lam is not None else "")

    @property
    def kind(self) -> str:
        """'testbed' (programmatic gold), 'remote' (HTTP endpoint), 'hub' (`owner/name` that is no local path here:
        a dense RM downloaded by `model_hub.hub_snapshot`) or 'path' (checkpoint dir / manifest)."""
        if self.location == "testbed":
            return "testbed"
        if self.location.startswith(("http://", "https://")):
            return "remote"
        return "hub" if is_hub_id(self.location) else "path"

    @property
    def is_manifest(self) -> bool:
        """True for an ensemble manifest (a .json file), whose members are scored separately."""
        return self.kind == "path" and Path(self.location).suffix == ".json"

    def with_aggregate(self, aggregate: str | None, lam: float | None = None) -> "RewardSource":
        """The same checkpoint under another aggregate (e.g. PPO's UWO lambda instead of Best-of-N's)."""
        return replace(self, aggregate=aggregate, lam=lam)

    def check_exists(self, what: str = "reward source") -> "RewardSource":
        """FileNotFoundError naming `what` when a checkpoint path is missing; for a hub id, `model_hub.HubModelError`
        (a ValueError) when neither the hub nor the HF cache has it with safetensors weights (file names only, no
        download); returns self (testbed/URL pass)."""
        if self.kind == "path" and not Path(self.location).exists():
            raise FileNotFoundError(f"{what}: {self.location} does not exist")
        if self.kind == "hub":
            check_hub_model(self.location, what=what)
        return self

    def absolute(self) -> "RewardSource":
        """The path made absolute: actors and Ray tasks run in other working directories than the driver."""
        if self.kind != "path":
            return self
        return replace(self, location=str(Path(self.location).resolve()))


def source_from_config(text: str, remote_url: str, what: str) -> RewardSource:
    """A config value such as reward.gold: 'remote' stands for reward.remote_url, anything else is parsed."""
    if str(text).strip() == "remote":
        if not remote_url:
            raise ValueError(f"{what} is 'remote' but reward.remote_url is empty: give the endpoint URL")
        return RewardSource.parse(remote_url, "reward.remote_url")
    return RewardSource.parse(text, what)


def parse_named_sources(entries: list[str], what: str = "bon.rms") -> dict[str, RewardSource]:
    """['name=source', ...] -> {name: RewardSource}; names must be unique and non-empty."""
    out: dict[str, RewardSource] = {}
    for e in entries:
        name, eq, text = str(e).partition("=")
        name = name.strip()
        if not eq or not name or not text.strip():
            raise ValueError(f"{what} entry {e!r}: expected name=path[#aggregate[:lambda]]")
        if name in out:
            raise ValueError(f"{what}: duplicate RM name {name!r}")
        out[name] = RewardSource.parse(text, f"{what} entry {name!r}")
    return out


def proxy_source(cfg) -> tuple[RewardSource, str]:
    """The proxy from reward.proxy / reward.proxy_path / reward.remote_url: (source, kind).

    'remote' -> reward.remote_url. 'auto' -> reward.proxy_path, whatever it holds. A kind (dense / umm / moe /
    ensemble / dmoe) -> reward.proxy_path (a hub id `owner/name` is a dense RM), or when that is empty the RM of
    that kind the stage graph trains
    (`RunLayout.rm_model`, i.e. `jobs.train_rm --rm.kind K` or `jobs.compare`); either must hold that kind
    (`checkpoint_kind`), so a proxy of the wrong kind stops before any compute.

    Raises:
        ValueError: nothing to use, or a checkpoint of another kind. FileNotFoundError: the path does not exist.
    """
    r = cfg.reward
    if r.proxy == "remote":
        return source_from_config("remote", r.remote_url, "reward.proxy"), "remote"
    text = r.proxy_path.strip()
    if not text:
        if r.proxy == "auto":
            raise ValueError("no proxy reward: set --reward.proxy_path, or --reward.proxy "
                             "dense|umm|moe|ensemble|dmoe (the jobs.train_rm output), or --reward.proxy remote "
                             "--reward.remote_url URL")
        text = str(RunLayout(cfg.run.output_dir).rm_model(r.proxy, cfg.moe.num_experts))
        if not Path(text).exists():
            raise FileNotFoundError(f"reward.proxy={r.proxy!r} and no reward.proxy_path: {text} does not exist; train "
                                    f"it with `python -m jobs.train_rm --rm.kind {r.proxy}` or set --reward.proxy_path")
    source = source_from_config(text, r.remote_url, "reward.proxy_path")
    if source.kind == "hub":  # a hub RM is a plain one-label sequence classifier, i.e. a dense RM
        if r.proxy not in ("auto", "dense"):
            raise ValueError(f"reward.proxy is {r.proxy!r} but reward.proxy_path {text!r} is a hub model id, which "
                             "loads as a dense RM; set --reward.proxy dense (or auto)")
        return source, "dense"
    if source.kind != "path":
        if r.proxy != "auto":
            raise ValueError(f"reward.proxy is {r.proxy!r} but reward.proxy_path is {text!r}, not a checkpoint")
        return source, source.kind
    source.check_exists("reward.proxy_path")
    kind = checkpoint_kind(source.location)
    if r.proxy not in ("auto", kind):
        raise ValueError(f"reward.proxy is {r.proxy!r} but reward.proxy_path {source.location} holds a reward model "
                         f"of kind {kind!r}; set --reward.proxy {kind} (or auto), or point reward.proxy_path at a "
                         f"{r.proxy} checkpoint")
    return source, kind
