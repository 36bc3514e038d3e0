"""Typed inputs of the comparison report: one `RMResult` per reward model, with its BoN and PPO curves.

The compare job fills these from its stages (accuracy eval, `run_bon`, the PPO job's metrics.jsonl) and hands them to
`umm_ray.report.build_report`. Everything is JSON-serialisable (`to_dict` / `from_dict`) so a report can be rebuilt
from `results.json` without rerunning anything.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from umm_ray.algo.bon import BoNCurve

__all__ = ["BoNCurve", "METHODS", "PPOCurve", "RMResult", "ROW_KINDS", "SeedRuns"]

# What a report row can stand for: a trained RM kind (`umm_ray.train.reward.RM_KINDS`), the gold scorer, or anything
# else; kept here rather than imported so the report never imports the training stack.
ROW_KINDS = ("dense", "umm", "moe", "ensemble", "dmoe", "gold", "other")
# How a row's policy was optimised against its proxy: Best-of-N, PPO without a KL penalty (the stress test) and PPO
# with one (compare.ppo_kl_coef, the regime practitioners run).
METHODS = ("bon", "ppo", "ppo_kl")


@dataclass
class PPOCurve:
    """Gold and proxy reward of the PPO policy over training, one entry per logged step.

    `kl` is the sequence KL used on the x axis (the k2 estimate, E[sum_t 0.5 log(pi/pi_ref)^2], as in Gao et al.);
    `kl_k1` / `kl_k3` are the other estimators when logged. `proxy_std0` / `gold_std0` are the standard deviations
    of proxy and gold scores over the first (pre-update) rollout batch, used to put gains in comparable units.
    `gold_sd` / `proxy_sd` are each step's standard deviation over its `batch_size` rollouts: each logged value is a
    batch mean, and its standard error sd / sqrt(batch_size) is what a single seed's interval is made of.
    """

    steps: list[int]
    kl: list[float]
    gold: list[float]
    proxy: list[float]
    kl_k1: list[float] | None = None
    kl_k3: list[float] | None = None
    kl_coef: float = 0.0
    proxy_std0: float | None = None
    gold_std0: float | None = None
    gold_sd: list[float] | None = None
    proxy_sd: list[float] | None = None
    batch_size: int | None = None

    def __post_init__(self):
        n = len(self.steps)
        for name in ("kl", "gold", "proxy"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"PPOCurve.{name} has {len(getattr(self, name))} entries but steps has {n}")
        if n == 0:
            raise ValueError("PPOCurve: no steps")

    @classmethod
    def from_metrics(cls, rows: list[dict], kl_key: str = "kl_k2", gold_key: str = "gold_reward",
                     proxy_key: str = "proxy_reward", kl_coef: float | None = None,
                     batch_size: int | None = None) -> "PPOCurve":
        """Build from the PPO job's metrics.jsonl rows (`read_metrics`); rows lacking a key are skipped.

        The defaults are the keys `jobs.ppo` logs. `<key>_std` of the first row (the rollout of the initial policy)
        become the *_std0 scales, of every row the per-step *_sd; `kl_coef` defaults to the first row's `kl_coef`;
        `batch_size` is the rollouts per step (ppo.rollout_batch_size), needed for a single seed's intervals.
        """
        use = [r for r in rows if all(r.get(k) is not None for k in (kl_key, gold_key, proxy_key))]
        if not use:
            raise ValueError(f"PPOCurve.from_metrics: no row has all of {kl_key!r}, {gold_key!r}, {proxy_key!r}")
        use.sort(key=lambda r: r["step"])
        get = lambda k: [float(r[k]) for r in use] if all(r.get(k) is not None for r in use) else None  # noqa: E731
        first = use[0]
        return cls(steps=[int(r["step"]) for r in use], kl=get(kl_key), gold=get(gold_key), proxy=get(proxy_key),
                   kl_k1=get("kl_k1"), kl_k3=get("kl_k3"),
                   kl_coef=float(kl_coef if kl_coef is not None else first.get("kl_coef") or 0.0),
                   proxy_std0=first.get(f"{proxy_key}_std"), gold_std0=first.get(f"{gold_key}_std"),
                   gold_sd=get(f"{gold_key}_std"), proxy_sd=get(f"{proxy_key}_std"), batch_size=batch_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PPOCurve":
        return cls(**d)


@dataclass
class SeedRuns:
    """The per-seed, per-item numbers behind one report row; the report's intervals are computed from these.

    Axis 0 is the seed, in the same order in every row of a report, and items line up across rows (the same held-out
    pairs, the same BoN prompts and samples), which is what makes comparisons against the dense row paired.

    Attributes:
        acc_test: [S][P] per held-out pair 1 (chosen scored higher), 0, or 0.5 (a tie).
        acc_gold: [S][P'] the same against the gold's own preference (the noise-free label; gold ties left out).
        acc_hh: [S][H] the same on the real HH pairs, when scored.
        bon_proxy, bon_gold: [S][P][N] proxy and gold scores of the N BoN samples of each prompt.
        ppo: one PPO curve per seed (same logged steps); ppo_kl: the same for the KL-penalised regime.
    """

    acc_test: list | None = None
    acc_gold: list | None = None
    acc_hh: list | None = None
    bon_proxy: list | None = None
    bon_gold: list | None = None
    ppo: list[PPOCurve] | None = None
    ppo_kl: list[PPOCurve] | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("ppo", "ppo_kl"):
            d[k] = [c.to_dict() for c in getattr(self, k)] if getattr(self, k) else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SeedRuns":
        d = dict(d)
        for k in ("ppo", "ppo_kl"):
            d[k] = [PPOCurve.from_dict(c) for c in d[k]] if d.get(k) else None
        return cls(**d)


@dataclass
class RMResult:
    """Everything the report shows about one reward model (a table row, a verdict, curves).

    (Not the training stages' `umm_ray.train.bt_stage.TrainedRM`, which says where a trained model was written.)

    Attributes:
        name: display name, unique in a report (e.g. "umm-4", "ensemble-wco").
        kind: one of ROW_KINDS; the "dense" row is the reference the verdicts compare against.
        params: parameter count of the scoring model(s) (sum over members for an ensemble).
        throughput: scoring throughput in sequences per second (None when not measured).
        acc_testbed: held-out preference accuracy on the testbed's test pairs (None when not measured).
        acc_hh: accuracy on real HH-RLHF pairs when given (None otherwise).
        bon: Best-of-N curve, or None.
        ppo: PPO curve (no KL penalty), or None; ppo_kl: PPO curve with the KL penalty, or None.
        notes: free text shown under the table (e.g. "aggregate=uwo, lambda=0.5").
        acc_gold: accuracy against the gold's own preferences on the same held-out pairs (noise-free labels).
        forward_passes: model forward passes per scored sequence (1 dense / UMM / MoE, k for an ensemble of k,
            1 + K for DMoERM's router and K capability adapters); None when unknown.
        seeds: the per-seed data the intervals come from (None: the report shows point values only).
        length_corr: Pearson r of the RM's score with word count over the test pairs' responses (mean over seeds).
    """

    name: str
    kind: str
    params: int | None = None
    throughput: float | None = None
    acc_testbed: float | None = None
    acc_hh: float | None = None
    bon: BoNCurve | None = None
    ppo: PPOCurve | None = None
    notes: str = ""
    extra: dict = field(default_factory=dict)
    acc_gold: float | None = None
    forward_passes: int | None = None
    seeds: SeedRuns | None = None
    ppo_kl: PPOCurve | None = None
    length_corr: float | None = None

    def __post_init__(self):
        if self.kind not in ROW_KINDS:
            raise ValueError(f"RMResult {self.name!r}: kind {self.kind!r} is not one of {ROW_KINDS}")
        for name in ("acc_testbed", "acc_hh", "acc_gold", "throughput", "length_corr"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"RMResult {self.name!r}: {name} is {v}")

    def curve(self, method: str) -> BoNCurve | PPOCurve | None:
        """The row's curve for one of METHODS."""
        if method not in METHODS:
            raise ValueError(f"method {method!r} is not one of {METHODS}")
        return getattr(self, method)

    def seed_curves(self, method: str) -> list[PPOCurve] | None:
        """The per-seed PPO curves of 'ppo' or 'ppo_kl' (None without per-seed data)."""
        return getattr(self.seeds, method) if self.seeds is not None else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bon"] = self.bon.to_dict() if self.bon else None
        for k in ("ppo", "ppo_kl"):
            d[k] = getattr(self, k).to_dict() if getattr(self, k) else None
        d["seeds"] = self.seeds.to_dict() if self.seeds else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RMResult":
        d = dict(d)
        d["bon"] = BoNCurve.from_dict(d["bon"]) if d.get("bon") else None
        for k in ("ppo", "ppo_kl"):
            d[k] = PPOCurve.from_dict(d[k]) if d.get(k) else None
        d["seeds"] = SeedRuns.from_dict(d["seeds"]) if d.get("seeds") else None
        return cls(**d)
