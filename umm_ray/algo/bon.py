"""Best-of-N: the KL of the n-best policy and the unbiased estimator of its proxy and gold reward (Gao et al. 2023).

From N >= n samples of one prompt, sorted ascending by proxy score (S_1 <= ... <= S_N), the expected reward of the
best of n drawn without replacement is
    R(n) = sum_{i=n}^{N} C(i-1, n-1) / C(N, n) * gold(S_i)
because S_i is the best of a random n-subset exactly when the subset holds S_i and n-1 of the i-1 samples below it.

Ties in proxy: the n-best among tied maxima is taken uniformly at random. In expectation that equals replacing the
gold of each group of tied proxy scores by the group's mean gold (each tied sample then has the same expected
weight), which is what `bon_estimate` does; the brute-force test uses the same convention.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np


def kl_bon(n: int) -> float:
    """KL(pi_bon || pi) of the best-of-n policy: log n - (n - 1) / n (an upper bound; exact for continuous proxies)."""
    if n < 1:
        raise ValueError(f"kl_bon: n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def bon_ns(n_samples: int) -> list[int]:
    """The n reported for N samples: 1, 2, 4, ... <= N."""
    if n_samples < 1:
        raise ValueError(f"bon_ns: n_samples must be >= 1, got {n_samples}")
    return [2 ** k for k in range(int(math.log2(n_samples)) + 1) if 2 ** k <= n_samples]


@lru_cache(maxsize=256)
def subset_best_weights(N: int, n: int) -> np.ndarray:
    """w[i-1] = C(i-1, n-1) / C(N, n) for i = 1..N (0 for i < n); exact integers, one correctly rounded division."""
    total = math.comb(N, n)
    w = np.zeros(N, dtype=np.float64)
    for i in range(n, N + 1):
        w[i - 1] = math.comb(i - 1, n - 1) / total  # Python int / int is correctly rounded even for huge values
    return w


def _as_1d(x, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"bon_estimate: {name} must be 1-D [N], got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"bon_estimate: {name} has non-finite values at {np.flatnonzero(~np.isfinite(arr)).tolist()}")
    return arr


def tie_averaged(sorted_proxy: np.ndarray, sorted_gold: np.ndarray) -> np.ndarray:
    """Replace gold within each run of equal proxy scores by the run's mean (random tie-breaking in expectation)."""
    out = sorted_gold.copy()
    _, starts, counts = np.unique(sorted_proxy, return_index=True, return_counts=True)
    for s, c in zip(starts, counts):
        if c > 1:
            out[s:s + c] = sorted_gold[s:s + c].mean()
    return out


def bon_estimate(proxy, gold, n: int) -> tuple[float, float]:
    """Unbiased estimates of the proxy and gold reward of the best of n, for one prompt.

    Args:
        proxy: [N] proxy scores of N samples (list, numpy or torch).
        gold: [N] gold scores of the same samples.
        n: 1 <= n <= N.

    Returns:
        (proxy_n, gold_n): expected proxy and gold reward of the proxy-best of n samples drawn without replacement.
    """
    p, g = _as_1d(proxy, "proxy"), _as_1d(gold, "gold")
    if p.shape != g.shape:
        raise ValueError(f"bon_estimate: proxy has {p.size} samples but gold has {g.size}")
    if not 1 <= n <= p.size:
        raise ValueError(f"bon_estimate: n={n} must be in [1, N={p.size}]")
    order = np.argsort(p, kind="stable")
    sp, sg = p[order], g[order]
    w = subset_best_weights(p.size, n)
    return float(w @ sp), float(w @ tie_averaged(sp, sg))


@dataclass
class BoNCurve:
    """Best-of-n curve of one reward model, averaged over P prompts.

    All lists have one entry per n. `kl` = KL_bon(n); `proxy` / `gold` are the prompt-averaged unbiased estimates;
    `*_sem` their standard errors over prompts (0 when P == 1). `proxy_std` / `gold_std` are the standard deviations
    of the scores over all P*N samples (the base policy's spread: the unit in which gains are compared across RMs).
    """

    ns: list[int]
    kl: list[float]
    proxy: list[float]
    gold: list[float]
    proxy_sem: list[float]
    gold_sem: list[float]
    n_prompts: int
    n_samples: int
    proxy_std: float | None = None
    gold_std: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BoNCurve":
        return cls(**d)


def bon_prompt_curves(proxy, gold, ns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt Best-of-n estimates: (proxy [P, K], gold [P, K]) for proxy, gold [P, N] and the K values in `ns`.

    The report's intervals resample these rows (prompts), so every statistic of a BoN curve gets a CI.
    """
    p, g = np.asarray(proxy, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if p.ndim != 2 or p.shape != g.shape:
        raise ValueError(f"bon_curve: proxy {p.shape} and gold {g.shape} must both be [P, N]")
    per = np.array([[bon_estimate(p[i], g[i], n) for n in ns] for i in range(p.shape[0])])  # [P, K, 2]
    return per[..., 0], per[..., 1]


def bon_curve(proxy, gold, ns: list[int] | None = None) -> BoNCurve:
    """Best-of-n curve averaged over prompts.

    Args:
        proxy: [P, N] proxy scores (P prompts, N samples each).
        gold: [P, N] gold scores.
        ns: the n to evaluate (default 1, 2, 4, ... <= N).

    Returns:
        BoNCurve.
    """
    p = np.asarray(proxy.detach().cpu() if hasattr(proxy, "detach") else proxy, dtype=np.float64)
    g = np.asarray(gold.detach().cpu() if hasattr(gold, "detach") else gold, dtype=np.float64)
    ns = list(ns) if ns is not None else bon_ns(p.shape[-1])
    per = np.stack(bon_prompt_curves(p, g, ns), axis=-1)  # [P, len(ns), 2]

    def sem(x: np.ndarray) -> list[float]:
        return (x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])).tolist() if x.shape[0] > 1 else [0.0] * x.shape[1]

    return BoNCurve(ns=ns, kl=[kl_bon(n) for n in ns], proxy=per[..., 0].mean(0).tolist(),
                    gold=per[..., 1].mean(0).tolist(), proxy_sem=sem(per[..., 0]), gold_sem=sem(per[..., 1]),
                    n_prompts=int(p.shape[0]), n_samples=int(p.shape[1]), proxy_std=float(p.std()),
                    gold_std=float(g.std()))
