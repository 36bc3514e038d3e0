"""PNG plots of gold and proxy reward vs d = sqrt(KL), per reward model, with the Gao et al. fits.

Uses matplotlib's object API with the Agg canvas (no pyplot global state, no display needed), so it is safe inside
Ray workers and tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from umm_ray.report.fits import Fit, fit_curve
from umm_ray.report.records import METHODS, RMResult

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
          "#bcbd22"]


def curve_xy(result: RMResult, method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(kl, gold, proxy) arrays of the RM's BoN or PPO curve, or None when it has none."""
    curve = result.curve(method)
    if curve is None:
        return None
    return (np.asarray(curve.kl, dtype=np.float64), np.asarray(curve.gold, dtype=np.float64),
            np.asarray(curve.proxy, dtype=np.float64))


def safe_fit(method: str, kl: np.ndarray, reward: np.ndarray) -> Fit | None:
    """The Gao fit for this method (bon / rl), or None when there are too few points to fit."""
    try:
        return fit_curve("bon" if method == "bon" else "rl", kl, reward)
    except ValueError:
        return None


def _draw_fit(ax, fit: Fit | None, kl: np.ndarray, color: str, label: str | None) -> None:
    if fit is None:
        return
    d = np.linspace(0.0, float(np.sqrt(np.clip(kl, 0, None)).max()) * 1.05, 100)
    ax.plot(d, fit.predict(d), linestyle="--", color=color, alpha=0.8, label=label)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path


def plot_grid(results: list[RMResult], method: str, path: Path) -> Path | None:
    """One panel per RM: gold (left axis) and proxy (right axis) vs sqrt(KL), points and fitted curves."""
    rows = [(r, curve_xy(r, method)) for r in results if curve_xy(r, method) is not None]
    if not rows:
        return None
    cols = min(3, len(rows))
    nrow = math.ceil(len(rows) / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * nrow))
    for k, (r, (kl, gold, proxy)) in enumerate(rows):
        ax = fig.add_subplot(nrow, cols, k + 1)
        d = np.sqrt(np.clip(kl, 0, None))
        ax.plot(d, gold, "o-", color=COLORS[0], ms=3, label="gold")
        _draw_fit(ax, safe_fit(method, kl, gold), kl, COLORS[0], "gold fit")
        ax.set_xlabel("sqrt(KL)")
        ax.set_ylabel("gold", color=COLORS[0])
        ax.set_title(f"{r.name} ({method.upper()})", fontsize=10)
        ax2 = ax.twinx()  # proxy scores live on each RM's own scale
        ax2.plot(d, proxy, "s-", color=COLORS[1], ms=3, label="proxy")
        _draw_fit(ax2, safe_fit(method, kl, proxy), kl, COLORS[1], "proxy fit")
        ax2.set_ylabel("proxy", color=COLORS[1])
        if k == 0:
            h1, l1 = ax.get_legend_handles_labels()
            h2, l2 = ax2.get_legend_handles_labels()
            ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def plot_overlay(results: list[RMResult], method: str, path: Path, gain: bool = True,
                 bands: dict[str, tuple] | None = None) -> Path | None:
    """Gold (gain over the initial policy when `gain`) vs sqrt(KL) for every RM on one axis, with fits; `bands`
    {name: (mean, lo, hi)} (each [K], gold units) shades a 95% band around that RM's points."""
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    drawn = 0
    for k, r in enumerate(results):
        xy = curve_xy(r, method)
        if xy is None:
            continue
        kl, gold, _ = xy
        d = np.sqrt(np.clip(kl, 0, None))
        base = gold[np.argmin(d)] if gain else 0.0
        color = COLORS[k % len(COLORS)]
        ax.plot(d, gold - base, "o", color=color, ms=3, label=r.name)
        if bands and r.name in bands:
            _, lo, hi = bands[r.name]
            ax.fill_between(d, np.asarray(lo) - base, np.asarray(hi) - base, color=color, alpha=0.15, lw=0)
        fit = safe_fit(method, kl, gold - base)
        _draw_fit(ax, fit, kl, color, None)
        drawn += 1
    if not drawn:
        return None
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlabel("sqrt(KL)")
    ax.set_ylabel("gold gain" if gain else "gold")
    title = {"bon": "Best-of-n", "ppo": "PPO (no KL penalty)", "ppo_kl": "PPO with KL penalty"}[method]
    ax.set_title(f"{title}: gold vs sqrt(KL) (dashed: Gao fits)", fontsize=10)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def make_plots(results: list[RMResult], out_dir: str | Path, bands: dict[str, tuple] | None = None
               ) -> dict[str, Path]:
    """Write every plot that has data; returns {label: png path}. `bands`: {method: {RM name: (mean, lo, hi)}}, the
    95% gold bands shaded on the overlays."""
    out = Path(out_dir)
    made = {}
    for method in METHODS:
        for label, fn in ((f"{method}_gold_overlay", plot_overlay), (f"{method}_per_rm", plot_grid)):
            kw = {"bands": bands.get(method)} if fn is plot_overlay and bands else {}
            p = fn(results, method, out / f"{label}.png", **kw)
            if p is not None:
                made[label] = p
    return made
