"""Per-step metrics: JSON lines in `metrics.jsonl` plus TensorBoard scalars, safe across kill-and-resume.

A run that (re)starts at step s owns every step >= s: on open, lines with step >= s are removed from metrics.jsonl
(rewritten atomically) and TensorBoard is told to purge them (`purge_step`), so a resumed run has neither duplicated
nor missing steps. A torn final line (the writer was SIGKILLed mid-write) is dropped with a warning; a corrupt line
anywhere else is an error naming file:line.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path


class MetricsError(ValueError):
    """metrics.jsonl is corrupt; the message names file:line."""


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl file, in file order ([] when absent). A torn *last* line is ignored with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not an object with a 'step'")
        except ValueError as e:
            if i == len(lines):
                warnings.warn(f"{path}:{i}: dropping a torn final line (interrupted write): {line[:80]!r}")
                break
            raise MetricsError(f"{path}:{i}: bad metrics line ({e}): {line[:80]!r}") from None
        rows.append(row)
    return rows


def _jsonable(v):
    """Tensor / numpy scalars become Python numbers; non-finite floats become None (NaN is not valid JSON)."""
    if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class MetricsLogger:
    """Append-only metrics log for one run directory.

    Args:
        out_dir: the run/stage directory; writes `metrics.jsonl` and `tb/` inside it.
        start_step: the first step this launch will log (0 for a fresh run, the checkpoint step on resume);
            existing rows with step >= start_step are removed.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, out_dir: str | Path, start_step: int = 0, tensorboard: bool = True):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self.start_step = int(start_step)
        self._truncate()
        self._fh = open(self.path, "a", buffering=1)  # line-buffered: every row hits the OS before log() returns
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # heavy (tensorboard + protobuf); only when asked for
            self._tb = SummaryWriter(log_dir=str(self.dir / "tb"), purge_step=self.start_step)

    def _truncate(self) -> None:
        rows = [r for r in read_metrics(self.path) if int(r["step"]) < self.start_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        with open(tmp, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)  # atomic: a crash here leaves either the old or the new file

    def log(self, step: int, metrics: dict) -> None:
        """Append one row {"step": step, "time": unix_time, **metrics}; numeric values also go to TensorBoard."""
        if step < self.start_step:
            raise ValueError(f"MetricsLogger({self.path}): step {step} is before this run's start {self.start_step}")
        row = {"step": int(step), "time": time.time(), **{k: _jsonable(v) for k, v in metrics.items()}}
        self._fh.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                v = row[k]
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self._tb.add_scalar(k, v, global_step=int(step))

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self.flush()
            self._fh.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
