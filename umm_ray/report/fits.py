"""Gao et al. (2023) scaling-law fits of gold reward against d = sqrt(KL), and over-optimisation summaries.

    Best-of-n:  R_bon(d) = d (a - b d)
    RL (PPO):   R_rl(d)  = d (a - b log d)

R is the reward *gain* over the initial policy, so the fits go through the origin: the reward at the smallest KL
(n = 1 for BoN, the pre-update step 0 for PPO, both at KL = 0) is subtracted first and kept as `r0`.
Both models are linear in (a, b), so ordinary least squares solves them exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

FIT_KINDS = ("bon", "rl")


def _basis(kind: str, d: np.ndarray) -> np.ndarray:
    """Columns multiplying (a, b): bon -> [d, -d^2]; rl -> [d, -d log d] (d log d -> 0 as d -> 0)."""
    if kind == "bon":
        return np.stack([d, -d * d], axis=1)
    if kind == "rl":
        dlogd = np.where(d > 0, d * np.log(np.where(d > 0, d, 1.0)), 0.0)
        return np.stack([d, -dlogd], axis=1)
    raise ValueError(f"fit kind {kind!r} is not one of {FIT_KINDS}")


@dataclass
class Fit:
    """A fitted curve R(d) = r0 + d (a - b d) [bon] or r0 + d (a - b log d) [rl]; `rmse` on the fitted points."""

    kind: str
    a: float
    b: float
    r0: float
    rmse: float

    def predict(self, d) -> np.ndarray:
        """Reward at d = sqrt(KL) (array-like) -> np.ndarray."""
        d = np.asarray(d, dtype=np.float64)
        return self.r0 + _basis(self.kind, d.reshape(-1)) @ np.array([self.a, self.b]).reshape(2)

    def peak(self) -> tuple[float, float] | None:
        """(d*, R(d*)) at the fitted maximum, or None when the fit has no interior maximum (b <= 0)."""
        if self.b <= 0:
            return None
        d = self.a / (2 * self.b) if self.kind == "bon" else float(np.exp(self.a / self.b - 1.0))
        if d <= 0:
            return None
        return d, float(self.predict([d])[0])

    def to_dict(self) -> dict:
        return asdict(self)


def fit_gain(kind: str, d, r) -> tuple[float, float]:
    """Least-squares (a, b) of the gain model through the origin.

    Args:
        kind: "bon" or "rl".
        d: [K] sqrt(KL) values (>= 0).
        r: [K] reward gains at those d.

    Returns:
        (a, b).
    """
    d, r = np.asarray(d, dtype=np.float64), np.asarray(r, dtype=np.float64)
    if d.shape != r.shape or d.ndim != 1:
        raise ValueError(f"fit_gain: d {d.shape} and r {r.shape} must be equal 1-D arrays")
    if np.count_nonzero(d > 0) < 2:
        raise ValueError(f"fit_gain: need at least 2 points with KL > 0 to fit a and b, got {np.count_nonzero(d > 0)}")
    coef, *_ = np.linalg.lstsq(_basis(kind, d), r, rcond=None)
    return float(coef[0]), float(coef[1])


def fit_curve(kind: str, kl, reward, r0: float | None = None) -> Fit:
    """Fit reward vs KL with d = sqrt(KL).

    Args:
        kind: "bon" or "rl".
        kl: [K] KL values (small negative values from the k1 estimator are clamped to 0).
        reward: [K] rewards (absolute, not gains).
        r0: the initial policy's reward; default: the reward at the smallest KL.

    Returns:
        Fit (with r0 and the RMSE of the absolute rewards).
    """
    kl, reward = np.asarray(kl, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    if kl.shape != reward.shape or kl.ndim != 1 or kl.size == 0:
        raise ValueError(f"fit_curve: kl {kl.shape} and reward {reward.shape} must be equal non-empty 1-D arrays")
    if np.any(kl < -1e-3):
        raise ValueError(f"fit_curve: KL values must be >= 0, got min {kl.min():.4g}")
    d = np.sqrt(np.clip(kl, 0.0, None))
    r0 = float(reward[np.argmin(d)]) if r0 is None else float(r0)
    a, b = fit_gain(kind, d, reward - r0)
    fit = Fit(kind, a, b, r0, 0.0)
    fit.rmse = float(np.sqrt(np.mean((fit.predict(d) - reward) ** 2)))
    return fit


def smooth(x, window: int) -> np.ndarray:
    """Centred moving average with the window shrinking at the edges (window 1 = unchanged)."""
    x = np.asarray(x, dtype=np.float64)
    if window <= 1:
        return x.copy()
    h = window // 2
    # window sums from one prefix sum: the report smooths every bootstrap draw of every PPO curve (~30k calls for
    # the demo), where a Python loop of slice means took most of the report's time
    i = np.arange(x.size)
    lo, hi = np.maximum(i - h, 0), np.minimum(i + h + 1, x.size)
    prefix = np.concatenate([[0.0], np.cumsum(x)])
    return (prefix[hi] - prefix[lo]) / (hi - lo)


@dataclass
class OveroptSummary:
    """How gold behaves along a curve (BoN over n, or PPO over steps).

    peak_at is the n or step of the gold peak; drop_from_peak = peak_gold - final_gold (>= 0); drop_frac is that drop
    as a fraction of the gold gained up to the peak. proxy_gain / gold_gain are end-minus-start changes, and
    gap = proxy_gain / proxy_scale - gold_gain / gold_scale: how far proxy improvement outran gold, in units of the
    initial spread of each score when scales are given (else raw units, `gap_units` says which).
    """

    peak_gold: float
    peak_at: float
    kl_at_peak: float
    final_gold: float
    final_kl: float
    drop_from_peak: float
    drop_frac: float
    proxy_gain: float
    gold_gain: float
    gap: float
    gap_units: str

    def to_dict(self) -> dict:
        return asdict(self)


def overopt_summary(steps_or_n, kl, gold, proxy, window: int = 1, proxy_scale: float | None = None,
                    gold_scale: float | None = None) -> OveroptSummary:
    """Peak gold, the KL at the peak, final gold, the drop from the peak, and the proxy-gold gap.

    Args:
        steps_or_n: [K] x positions (PPO steps or BoN n), ascending.
        kl: [K] KL at each position; gold: [K]; proxy: [K].
        window: moving-average window applied to gold and proxy first (PPO curves are noisy; 1 = none).
        proxy_scale, gold_scale: initial std of each score; both given -> gap in std units.

    Returns:
        OveroptSummary.
    """
    x, kl = np.asarray(steps_or_n, dtype=np.float64), np.asarray(kl, dtype=np.float64)
    g, p = smooth(gold, window), smooth(proxy, window)
    if not (x.size == kl.size == g.size == p.size) or x.size == 0:
        raise ValueError(f"overopt_summary: lengths differ or empty (x {x.size}, kl {kl.size}, gold {g.size}, "
                         f"proxy {p.size})")
    i = int(np.argmax(g))
    drop = float(g[i] - g[-1])
    gained = float(g[i] - g[0])
    scaled = bool(proxy_scale and gold_scale)
    ps, gs = (proxy_scale, gold_scale) if scaled else (1.0, 1.0)
    return OveroptSummary(peak_gold=float(g[i]), peak_at=float(x[i]), kl_at_peak=float(kl[i]),
                          final_gold=float(g[-1]), final_kl=float(kl[-1]), drop_from_peak=drop,
                          drop_frac=drop / gained if gained > 0 else 0.0, proxy_gain=float(p[-1] - p[0]),
                          gold_gain=float(g[-1] - g[0]),
                          gap=float((p[-1] - p[0]) / ps - (g[-1] - g[0]) / gs), gap_units="std" if scaled else "raw")
