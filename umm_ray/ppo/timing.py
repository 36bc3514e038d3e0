"""Wall-clock seconds per PPO phase, for the step log and the benchmark."""

from __future__ import annotations

import time
from contextlib import contextmanager


class PhaseTimer:
    """`with timer("generate"): ...` accumulates seconds per phase; `as_metrics()` -> {"time/generate": s, ...}."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t

    def as_metrics(self) -> dict[str, float]:
        """Per-phase seconds plus `time/step`, the wall time since the timer was created."""
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        out["time/step"] = time.perf_counter() - self._t0
        return out
