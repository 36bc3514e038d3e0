"""Uncertainty for the report: confidence intervals, paired differences, significance-gated verdict words.

Everything here is a pure numpy function of per-prompt (and per-seed) numbers, so a test can build data whose answer
is known. Bootstraps are seeded: the same inputs give the same interval on every machine.

Layout conventions:
    per-prompt values: [P] (one seed) or [S, P] (S seeds, each with its own P prompts)
    per-prompt curves: [P, K] or [S, P, K] (K points, e.g. n = 1, 2, 4, ... of Best-of-N)
A hierarchical bootstrap resamples seeds, then prompts within each drawn seed, so both sources of variation widen the
interval; with one seed it is the ordinary bootstrap over prompts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from umm_ray.algo.bon import subset_best_weights, tie_averaged

DEFAULT_BOOT = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval [lo, hi] at `level`."""

    value: float
    lo: float
    hi: float
    level: float = LEVEL

    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    def to_dict(self) -> dict:
        return asdict(self)

    def fmt(self, digits: int = 3) -> str:
        """'0.512 [0.48, 0.54]' for tables."""
        return f"{self.value:.{digits}g} [{self.lo:.{digits}g}, {self.hi:.{digits}g}]"


def wilson_interval(correct: int, n: int, level: float = LEVEL) -> Interval:
    """Accuracy k/n with the Wilson score interval (good at small n and near 0 or 1, unlike the normal one)."""
    if n <= 0 or not 0 <= correct <= n:
        raise ValueError(f"wilson_interval: need 0 <= correct <= n and n > 0, got correct={correct}, n={n}")
    z = _z(level)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), level)


def _z(level: float) -> float:
    from scipy.stats import norm  # heavy: scipy.stats takes ~0.5 s; only the Wilson interval needs it

    return float(norm.ppf(0.5 + level / 2))


def _as_seeds(x, name: str) -> np.ndarray:
    """The input as a float64 array ([P, ...] or [S, P, ...], as given). Rejects empty or non-finite input, naming
    it."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"{name}: need at least one prompt, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: non-finite values")
    return a


def _resample_indices(rng: np.random.Generator, n_seeds: int, n_prompts: int, n_boot: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """For each of `n_boot` draws: seeds drawn with replacement [n_boot, S], and for each drawn seed prompts drawn
    with replacement [n_boot, S, P]. Draw b takes its seeds, then its prompts, from `rng` in turn, so the stream (and
    every interval) does not depend on how many draws are made at once."""
    if n_seeds == 1:  # only prompts are drawn: one call yields the same numbers as n_boot calls in turn
        return np.zeros((n_boot, 1), dtype=int), rng.integers(0, n_prompts, size=(n_boot, 1, n_prompts))
    seeds, prompts = np.empty((n_boot, n_seeds), dtype=int), np.empty((n_boot, n_seeds, n_prompts), dtype=int)
    for b in range(n_boot):
        seeds[b] = rng.integers(0, n_seeds, size=n_seeds)
        prompts[b] = rng.integers(0, n_prompts, size=(n_seeds, n_prompts))
    return seeds, prompts


def bootstrap(stat: Callable[..., float], *arrays, seeded: bool, n_boot: int = DEFAULT_BOOT, seed: int = 0,
              level: float = LEVEL) -> Interval:
    """Percentile bootstrap of `stat(*arrays)`, resampling the same prompts (and seeds) in every array (paired).

    Args:
        stat: maps arrays of the input shapes to a number, e.g. `lambda a, b: drop(a) - drop(b)`.
        arrays: each [P, ...] (seeded=False) or [S, P, ...] (seeded=True), all with the same leading dims: entry
            [s, p] of every array belongs to the same seed and prompt, which is what makes the comparison paired.
        seeded: whether axis 0 is seeds.
    """
    arrs = [_as_seeds(a, "bootstrap") for a in arrays]
    if not seeded:
        arrs = [a[None] for a in arrs]
    lead = arrs[0].shape[:2]
    if any(a.shape[:2] != lead for a in arrs):
        raise ValueError(f"bootstrap: arrays must share [seeds, prompts] dims, got {[a.shape for a in arrs]}")
    n_seeds, n_prompts = lead

    def apply(sub):
        return float(stat(*(s if seeded else s[0] for s in sub)))

    value = apply(arrs)
    seeds, prompts = _resample_indices(np.random.default_rng(seed), n_seeds, n_prompts, n_boot)
    draws = np.array([apply([a[seeds[b][:, None], prompts[b]] for a in arrs]) for b in range(n_boot)])
    return _percentile_interval(value, draws, level)


def _percentile_interval(value: float, draws: np.ndarray, level: float) -> Interval:
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(value), float(lo), float(hi), level)


def mean_ci(values, seeded: bool = False, n_boot: int = DEFAULT_BOOT, seed: int = 0, level: float = LEVEL
            ) -> Interval:
    """Mean over prompts (and seeds) with its bootstrap interval: `bootstrap` of the mean (the same draws), with
    every draw's mean taken at once (the report takes ~100 of these)."""
    a = _as_seeds(values, "mean_ci")
    if not seeded:
        a = a[None]
    if a.ndim != 2:
        return bootstrap(lambda v: v.mean(), values, seeded=seeded, n_boot=n_boot, seed=seed, level=level)
    seeds, prompts = _resample_indices(np.random.default_rng(seed), *a.shape, n_boot)
    return _percentile_interval(a.mean(), a[seeds[:, :, None], prompts].mean(axis=(1, 2)), level)


def curve_mean(curves: np.ndarray) -> np.ndarray:
    """[P, K] or [S, P, K] per-prompt curves -> the mean curve [K]."""
    return curves.reshape(-1, curves.shape[-1]).mean(0)


def drop_from_peak(curve: np.ndarray) -> float:
    """max(curve) - curve[-1] of a mean curve [K]: how far gold falls from its best point by the end (>= 0)."""
    return float(curve.max() - curve[-1])


def drop_ci(curves, seeded: bool = False, **kw) -> Interval:
    """Gold drop from peak of the mean curve, with a bootstrap interval over prompts (and seeds)."""
    return bootstrap(lambda c: drop_from_peak(curve_mean(c)), curves, seeded=seeded, **kw)


def paired_diff_ci(stat: Callable[[np.ndarray], float], a, b, seeded: bool = False, **kw) -> Interval:
    """stat(a) - stat(b) on the same prompts and seeds, with a paired bootstrap interval."""
    return bootstrap(lambda x, y: stat(x) - stat(y), a, b, seeded=seeded, **kw)


def significance_word(diff: Interval, lower_is_better: bool = True) -> str:
    """Verdict word for `candidate - reference` of a quantity such as the gold drop (lower is better).

    MITIGATES / WORSENS only when the interval excludes 0; otherwise the words say there is no significant difference
    and give the interval, so a single noisy run cannot produce a verdict.
    """
    if not diff.excludes_zero():
        return f"no significant difference (diff {diff.fmt()})"
    better = diff.hi < 0 if lower_is_better else diff.lo > 0
    return ("MITIGATES" if better else "WORSENS") + f" (diff {diff.fmt()})"


def bon_win_rate_curves(proxy, gold, ns: list[int]) -> np.ndarray:
    """Per-prompt win rate of the Best-of-n response against a random sample of the same policy, judged by gold.

    For each prompt with N samples, the best of a random n-subset is sample i (sorted ascending by proxy) with
    probability C(i-1, n-1) / C(N, n); it wins against an independent sample J, uniform over the N, when gold_i >
    gold_J (a tie counts half). n = 1 gives exactly 0.5. The UMM-RM paper's BoN metric, with the policy's own
    sample standing in for its SFT reference answer (BoN samples the SFT policy).

    Args:
        proxy, gold: [P, N]. ns: the n to evaluate (each <= N).

    Returns:
        [P, len(ns)] win rates in [0, 1].
    """
    p, g = np.asarray(proxy, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"bon_win_rates: proxy {p.shape} and gold {g.shape} must both be [P, N]")
    n_samples = p.shape[1]
    if any(not 1 <= n <= n_samples for n in ns):
        raise ValueError(f"bon_win_rates: every n must be in [1, {n_samples}], got {ns}")
    weights = np.stack([subset_best_weights(n_samples, n) for n in ns])  # [K, N]
    out = np.zeros((p.shape[0], len(ns)))
    for row, (pi, gi) in enumerate(zip(p, g)):
        order = np.argsort(pi, kind="stable")
        sp, sg = pi[order], gi[order]
        # beat[i] = P(gold_i > gold_J) + 0.5 P(gold_i == gold_J), J uniform over the N samples
        beat = ((sg[:, None] > gi[None, :]).mean(1) + 0.5 * (sg[:, None] == gi[None, :]).mean(1))
        out[row] = weights @ tie_averaged(sp, beat)  # proxy ties: the selected one is random among them
    return out


def bon_win_rates(proxy, gold, ns: list[int]) -> list[float]:
    """`bon_win_rate_curves` averaged over prompts: [len(ns)] win rates."""
    return bon_win_rate_curves(proxy, gold, ns).mean(0).tolist()
