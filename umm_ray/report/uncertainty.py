"""Intervals for every number the report shows, and paired differences against the dense row.

Computed from a row's `SeedRuns` (per seed, per item) with the pure functions of `umm_ray.algo.stats`:

* accuracy: one seed -> Wilson interval on k of P pairs; several -> hierarchical bootstrap over seeds, then pairs.
* Best-of-N: per-prompt curves [S, P, K] (`bon_prompt_curves`, `bon_win_rate_curves`) resampled over seeds and
  prompts; a difference against dense resamples the same prompts and seeds for both (every RM scores the same samples).
* PPO: each logged gold value is the mean of one rollout batch. A draw resamples the seeds and adds to every step the
  noise its batch mean carries (normal, standard error sd / sqrt(batch)), then smooths and reads the statistic off the
  seed-mean curve. With one seed the interval therefore covers the rollout sampling only, not a rerun's training
  randomness: the report says so. A difference against dense draws the same seeds for both and independent noise.

All draws are seeded, so a report is the same on every run of the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from umm_ray.algo.bon import bon_ns, bon_prompt_curves
from umm_ray.algo.stats import DEFAULT_BOOT, LEVEL, Interval, bon_win_rate_curves, bootstrap, mean_ci, wilson_interval
from umm_ray.report.fits import smooth
from umm_ray.report.records import PPOCurve, RMResult


def ppo_window(n_points: int) -> int:
    """Smoothing window for PPO curves: ~1/8 of the logged steps, odd, at least 1."""
    w = max(1, n_points // 8)
    return w if w % 2 else w + 1


def accuracy_diff(cand, ref, n_boot: int = DEFAULT_BOOT) -> Interval | None:
    """Accuracy of `cand` minus `ref` from their [S][P] per-pair outcomes on the same pairs (entry [s, p] is the same
    pair of the same seed in both), with a paired bootstrap interval (seeds, then pairs); None when either is missing
    or they were not scored on the same pairs."""
    if cand is None or ref is None:
        return None
    a, b = np.asarray(cand, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] == 0:
        return None
    # mean(a) - mean(b) over the same resampled pairs is the mean of a - b over them: mean_ci draws them at once
    return mean_ci(a - b, seeded=True, n_boot=n_boot)


def accuracy_interval(correct) -> Interval | None:
    """[S][P] per-pair outcomes (1, 0, 0.5 for a tie) -> accuracy with its 95% interval; None without pairs."""
    if correct is None:
        return None
    a = np.asarray(correct, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] == 0:
        return None
    if a.shape[0] == 1:
        return wilson_interval(float(a.sum()), a.shape[1])
    return mean_ci(a, seeded=True)


# ---------------------------------------------------------------------------------------------------------------------
# Best-of-N


@dataclass(frozen=True)
class BoNData:
    """Per-prompt Best-of-n curves of one RM: proxy, gold and win rate, each [S, P, K] over ns [K]."""

    ns: list[int]
    proxy: np.ndarray
    gold: np.ndarray
    win: np.ndarray
    proxy_std: float
    gold_std: float

    @classmethod
    def from_scores(cls, proxy, gold) -> "BoNData":
        """From the sample scores [S][P][N] of the proxy and the gold (the same samples)."""
        p, g = np.asarray(proxy, dtype=np.float64), np.asarray(gold, dtype=np.float64)
        if p.ndim != 3 or p.shape != g.shape:
            raise ValueError(f"BoN scores: proxy {p.shape} and gold {g.shape} must both be [seeds, prompts, N]")
        ns = bon_ns(p.shape[2])
        curves = [bon_prompt_curves(ps, gs, ns) for ps, gs in zip(p, g)]
        win = np.stack([bon_win_rate_curves(ps, gs, ns) for ps, gs in zip(p, g)])
        return cls(ns, np.stack([c[0] for c in curves]), np.stack([c[1] for c in curves]), win,
                   float(p.std()), float(g.std()))


def _bon_stat(name: str, pstd: float, gstd: float) -> Callable[..., float]:
    """A statistic of mean curves; arguments are the [S, P, K] proxy, gold and win arrays of a resample."""
    def mean(x):
        return x.reshape(-1, x.shape[-1]).mean(0)

    def stat(proxy, gold, win):
        g = mean(gold)
        if name == "gold_max":
            return g[-1]
        if name == "drop":
            return g.max() - g[-1]
        if name == "win_max":
            return mean(win)[-1]
        p = mean(proxy)
        return (p[-1] - p[0]) / pstd - (g[-1] - g[0]) / gstd  # gap, in units of each score's spread
    return stat


BON_STATS = ("gold_max", "drop", "gap", "win_max")


def bon_intervals(d: BoNData, n_boot: int = DEFAULT_BOOT) -> dict[str, Interval]:
    """gold at the largest n, gold drop from its peak, proxy-gold gap (std units), win rate at the largest n."""
    return {k: bootstrap(_bon_stat(k, d.proxy_std or 1.0, d.gold_std or 1.0), d.proxy, d.gold, d.win, seeded=True,
                         n_boot=n_boot) for k in BON_STATS}


def bon_point_intervals(d: BoNData, n_boot: int = DEFAULT_BOOT) -> tuple[list[Interval], list[Interval]]:
    """(gold, win rate against a sample of the same policy), each with an interval at every n."""
    ks = range(len(d.ns))
    return ([mean_ci(d.gold[..., k], seeded=True, n_boot=n_boot) for k in ks],
            [mean_ci(d.win[..., k], seeded=True, n_boot=n_boot) for k in ks])


def bon_diffs(cand: BoNData, ref: BoNData, n_boot: int = DEFAULT_BOOT) -> dict[str, Interval]:
    """cand - ref of the gold drop and of the gold at the largest n, paired on the same seeds and prompts."""
    if cand.gold.shape != ref.gold.shape:
        raise ValueError(f"BoN curves of different shapes {cand.gold.shape} vs {ref.gold.shape}: not the same "
                         "prompts and seeds")
    out = {}
    for name in ("drop", "gold_max"):
        f = _bon_stat(name, 1.0, 1.0)
        out[name] = bootstrap(lambda cg, rg: f(cg, cg, cg) - f(rg, rg, rg), cand.gold, ref.gold, seeded=True,
                              n_boot=n_boot)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# PPO


@dataclass(frozen=True)
class PPOData:
    """One RM's PPO runs, one row per seed: gold, proxy, their standard errors and KL, each [S, T]."""

    steps: np.ndarray
    gold: np.ndarray
    gold_se: np.ndarray
    proxy: np.ndarray
    proxy_se: np.ndarray
    kl: np.ndarray
    proxy_std0: float
    gold_std0: float

    @classmethod
    def from_curves(cls, curves: list[PPOCurve]) -> "PPOData":
        """Seeds' curves on the same logged steps; a curve without per-step sd contributes no sampling noise."""
        steps = curves[0].steps
        for c in curves[1:]:
            if c.steps != steps:
                raise ValueError(f"PPO seeds logged different steps ({len(c.steps)} vs {len(steps)}): cannot average")

        def se(c: PPOCurve, sd: list[float] | None) -> np.ndarray:
            if sd is None or not c.batch_size:
                return np.zeros(len(steps))
            return np.asarray(sd, dtype=np.float64) / np.sqrt(c.batch_size)

        arr = lambda f: np.array([f(c) for c in curves], dtype=np.float64)  # noqa: E731
        return cls(np.asarray(steps), arr(lambda c: c.gold), arr(lambda c: se(c, c.gold_sd)), arr(lambda c: c.proxy),
                   arr(lambda c: se(c, c.proxy_sd)), arr(lambda c: c.kl),
                   float(np.mean([c.proxy_std0 or 1.0 for c in curves])),
                   float(np.mean([c.gold_std0 or 1.0 for c in curves])))

    @property
    def has_noise(self) -> bool:
        """Whether an interval has anything to draw from: several seeds or per-step standard errors."""
        return self.gold.shape[0] > 1 or bool(self.gold_se.any())


PPO_STATS = ("peak_gold", "kl_at_peak", "drop", "gap", "final_gold", "gold_at_kl", "rise")


def gold_at_kl(gold: np.ndarray, kl: np.ndarray, target: float | None) -> float:
    """Smoothed gold [T] at the first step whose KL [T] reaches `target` (NaN when the run never gets there)."""
    if target is None:
        return float("nan")
    reached = np.flatnonzero(kl >= target)
    return float(gold[reached[0]]) if reached.size else float("nan")


def _ppo_summary(gold: np.ndarray, proxy: np.ndarray, kl: np.ndarray, d: PPOData, kl_match: float | None = None,
                 peak: int | None = None) -> np.ndarray:
    """[len(PPO_STATS)] of seed-mean curves [T] after smoothing (window ~ T/8). gold_at_kl is the gold at KL
    `kl_match` (the KL where dense peaks: a comparison at equal KL budget, so slower optimisation is not robustness);
    rise = gold at step index `peak` (default: this curve's own peak) - start: the gain the proxy gave before any
    fall (0 when the gold only fell: a collapse). Resamples pass the point estimate's peak, so the rise's interval is
    not pushed above 0 by taking the maximum of each noisy draw."""
    w = ppo_window(gold.size)
    g, p = smooth(gold, w), smooth(proxy, w)
    i = int(np.argmax(g))
    gap = (p[-1] - p[0]) / d.proxy_std0 - (g[-1] - g[0]) / d.gold_std0
    rise = g[i if peak is None else peak] - g[0]
    return np.array([g[i], kl[i], g[i] - g[-1], gap, g[-1], gold_at_kl(g, kl, kl_match), rise])


def _ppo_draw(d: PPOData, rng: np.random.Generator, seeds: np.ndarray, kl_match: float | None = None,
              peak: int | None = None) -> np.ndarray:
    gold = d.gold[seeds] + rng.standard_normal(d.gold[seeds].shape) * d.gold_se[seeds]
    proxy = d.proxy[seeds] + rng.standard_normal(d.proxy[seeds].shape) * d.proxy_se[seeds]
    return _ppo_summary(gold.mean(0), proxy.mean(0), d.kl[seeds].mean(0), d, kl_match, peak)


def _percentiles(names: tuple[str, ...], value: np.ndarray, draws: np.ndarray, level: float = LEVEL
                 ) -> dict[str, Interval]:
    """Percentile intervals by name; a statistic whose point value is undefined (NaN) is left out."""
    out = {}
    for k, name in enumerate(names):
        if not np.isfinite(value[k]):
            continue
        lo, hi = np.nanquantile(draws[:, k], [(1 - level) / 2, (1 + level) / 2])
        out[name] = Interval(float(value[k]), float(lo), float(hi), level)
    return out


def _seed_draws(rng: np.random.Generator, n_seeds: int) -> np.ndarray:
    return rng.integers(0, n_seeds, size=n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)


def ppo_intervals(d: PPOData, n_boot: int = DEFAULT_BOOT, seed: int = 0, kl_match: float | None = None
                  ) -> dict[str, Interval]:
    """Smoothed peak gold, KL at the peak, drop from the peak, proxy-gold gap (std units), final gold, gold at
    KL `kl_match` when given and reached, and the rise from the start to the peak."""
    value = _ppo_summary(d.gold.mean(0), d.proxy.mean(0), d.kl.mean(0), d, kl_match)
    peak = int(np.argmax(smooth(d.gold.mean(0), ppo_window(d.gold.shape[1]))))
    rng = np.random.default_rng(seed)
    draws = np.stack([_ppo_draw(d, rng, _seed_draws(rng, d.gold.shape[0]), kl_match, peak) for _ in range(n_boot)])
    return _percentiles(PPO_STATS, value, draws)


def ppo_diffs(cand: PPOData, ref: PPOData, n_boot: int = DEFAULT_BOOT, seed: int = 0, kl_match: float | None = None
              ) -> dict[str, Interval]:
    """cand - ref of the gold drop, the final gold and (with `kl_match`) the gold at that KL; seeds paired (seed k
    of both), rollout noise independent."""
    if cand.gold.shape != ref.gold.shape:
        raise ValueError(f"PPO runs of different shapes {cand.gold.shape} vs {ref.gold.shape}: not the same seeds "
                         "and steps")
    names = ("drop", "final_gold", "gold_at_kl")
    pick = [PPO_STATS.index(n) for n in names]

    def summary(d: PPOData) -> np.ndarray:
        return _ppo_summary(d.gold.mean(0), d.proxy.mean(0), d.kl.mean(0), d, kl_match)[pick]

    value = summary(cand) - summary(ref)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        s = _seed_draws(rng, cand.gold.shape[0])
        draws.append(_ppo_draw(cand, rng, s, kl_match)[pick] - _ppo_draw(ref, rng, s, kl_match)[pick])
    return _percentiles(names, value, np.stack(draws))


def ppo_band(d: PPOData, n_boot: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, lo, hi), each [T]: the seed-mean gold curve and its pointwise 95% band (for the plots)."""
    rng = np.random.default_rng(seed)
    draws = np.stack([(d.gold[s] + rng.standard_normal(d.gold[s].shape) * d.gold_se[s]).mean(0)
                      for s in (_seed_draws(rng, d.gold.shape[0]) for _ in range(n_boot))])
    lo, hi = np.quantile(draws, [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0)
    return d.gold.mean(0), lo, hi


# ---------------------------------------------------------------------------------------------------------------------
# One row


@dataclass
class RowStats:
    """Every interval of one report row; None where the row has no such data. `bon_gold_n` / `bon_win` have one
    interval per n of the BoN curve.

    `vs_dense` holds cand - dense differences: 'acc_test', 'acc_gold', 'acc_hh' (paired over the same pairs),
    'bon_drop', 'bon_gold_max', and for m in ppo / ppo_kl 'm_drop', 'm_final_gold' and 'm_gold_at_kl' (at the KL
    where dense's gold peaks in that regime, when this run reaches it).
    """

    acc_test: Interval | None = None
    acc_gold: Interval | None = None
    acc_hh: Interval | None = None
    bon: dict[str, Interval] | None = None
    bon_gold_n: list[Interval] | None = None
    bon_win: list[Interval] | None = None
    ppo: dict[str, Interval] | None = None
    ppo_kl: dict[str, Interval] | None = None
    vs_dense: dict[str, Interval] | None = None

    def method(self, method: str) -> dict[str, Interval] | None:
        """The summary intervals of 'bon', 'ppo' or 'ppo_kl'."""
        return getattr(self, method)


def bon_data(r: RMResult) -> BoNData | None:
    s = r.seeds
    return BoNData.from_scores(s.bon_proxy, s.bon_gold) if s and s.bon_proxy is not None else None


def ppo_data(r: RMResult, method: str = "ppo") -> PPOData | None:
    """The row's per-seed runs of 'ppo' (no KL penalty) or 'ppo_kl', or None."""
    curves = r.seed_curves(method)
    return PPOData.from_curves(curves) if curves else None


def dense_peak_kl(d: PPOData | None) -> float | None:
    """The KL (k2) at which the dense proxy's smoothed seed-mean gold peaks: the budget PPO rows are matched at."""
    if d is None:
        return None
    return float(_ppo_summary(d.gold.mean(0), d.proxy.mean(0), d.kl.mean(0), d)[PPO_STATS.index("kl_at_peak")])


def row_stats(r: RMResult, dense: RMResult | None, n_boot: int = DEFAULT_BOOT) -> RowStats:
    """The intervals of one row, and its paired differences against `dense` (when given and not itself)."""
    s = r.seeds
    out = RowStats()
    if s is None:
        return out
    out.acc_test, out.acc_gold, out.acc_hh = (accuracy_interval(x) for x in (s.acc_test, s.acc_gold, s.acc_hh))
    bd = bon_data(r)
    if bd is not None:
        out.bon = bon_intervals(bd, n_boot)
        out.bon_gold_n, out.bon_win = bon_point_intervals(bd, n_boot)
    diffs = {}
    if dense is not None and dense is not r and dense.seeds is not None:
        for split in ("test", "gold", "hh"):
            d = accuracy_diff(getattr(s, f"acc_{split}"), getattr(dense.seeds, f"acc_{split}"), n_boot)
            if d is not None:
                diffs[f"acc_{split}"] = d
    ref_b = bon_data(dense) if dense is not None and dense is not r else None
    if bd is not None and ref_b is not None:
        diffs.update({f"bon_{k}": v for k, v in bon_diffs(bd, ref_b, n_boot).items()})
    for method in ("ppo", "ppo_kl"):
        pd, ref_p = ppo_data(r, method), ppo_data(dense, method) if dense is not None else None
        kl_match = dense_peak_kl(ref_p)
        if pd is None or not pd.has_noise:
            continue
        setattr(out, method, ppo_intervals(pd, n_boot, kl_match=kl_match))
        if ref_p is not None and dense is not r:
            diffs.update({f"{method}_{k}": v for k, v in ppo_diffs(pd, ref_p, n_boot, kl_match=kl_match).items()})
    out.vs_dense = diffs or None
    return out
