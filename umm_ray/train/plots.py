"""Loss-curve figures for the training stages (PNG beside each stage's eval.json)."""

from __future__ import annotations

from pathlib import Path


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_loss_curve(history: list[dict], path: Path, title: str, key: str = "loss",
                    held_out: dict[int, float] | None = None) -> Path:
    """Plot `history[i][key]` per step (raw and smoothed), plus optional held-out points {step: loss}."""
    import matplotlib  # the Agg backend must be chosen before pyplot is imported; plotting is rare and slow to load

    matplotlib.use("Agg")  # no display on workers and CI
    import matplotlib.pyplot as plt  # (see above)

    steps = [h["step"] for h in history]
    values = [h[key] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, values, alpha=0.35, label=f"train {key}")
    ax.plot(steps, smooth(values, max(1, len(values) // 20)), label=f"train {key} (smoothed)")
    if held_out:
        ax.plot(list(held_out), list(held_out.values()), "o-", label="held-out")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
