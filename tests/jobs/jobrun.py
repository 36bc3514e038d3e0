"""Run a `python -m jobs.X` driver as a subprocess (as `ray job submit` would) and return its log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_job(module: str, args: list[str], log: Path, timeout: float = 1500) -> str:
    """Run `module` with `args`, logging to `log`; assert it exits 0 and return the log text."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT)}
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, stdout=f,
                            stderr=subprocess.STDOUT, timeout=timeout).returncode
    text = log.read_text()
    assert rc == 0, f"{module} exited {rc}:\n{text[-4000:]}"
    return text
