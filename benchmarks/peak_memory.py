"""Run a command and report the peak memory of its whole process tree (the driver, and the Ray head, raylet and
workers a local `ray.init()` starts as its descendants), sampled every `--every` seconds.

    python -m benchmarks.peak_memory --out runs/small/peak_memory.json -- \
        python -m jobs.compare --preset small --run.output_dir runs/small --run.ray_address local

`ru_maxrss` of a job sees only its own process; a Ray run's memory lives in its workers, so the tree is summed.
Resident set sizes double-count pages shared between processes (the sum is an upper bound); the JSON also records
the machine's used memory at the same moment, which counts every page once but includes whatever else runs there.

A run of hours may be stopped and resumed (the compare job's stage cache): the JSON is rewritten every minute while
the command runs (`"running": true`), so a stopped run keeps its peaks, and `--trace FILE` appends one line per sample
(`unix_time tree_rss_gb machine_used_gb`) from which each stage's peak can be read against its `_done.json` times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil


def tree_rss(root: psutil.Process) -> int:
    """Bytes resident in `root` and all its descendants (processes that vanish mid-walk are skipped)."""
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="JSON file for the peaks and the wall time")
    ap.add_argument("--every", type=float, default=2.0, help="sampling period in seconds")
    ap.add_argument("--trace", default="", help="append 'unix_time tree_rss_gb machine_used_gb' per sample here")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command to run after --")
    t0 = time.time()
    proc = subprocess.Popen(cmd)
    ps = psutil.Process(proc.pid)
    peak_tree, peak_used, used_at_start = 0, 0, psutil.virtual_memory().used
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    trace = open(args.trace, "a") if args.trace else None

    def summary(running: bool) -> dict:
        result = {"command": cmd, "returncode": proc.returncode, "running": running, "wall_s": time.time() - t0,
                  "peak_tree_rss_gb": peak_tree / 2**30, "peak_machine_used_gb": peak_used / 2**30,
                  "machine_used_at_start_gb": used_at_start / 2**30, "machine_total_gb":
                  psutil.virtual_memory().total / 2**30, "sample_every_s": args.every}
        Path(args.out).write_text(json.dumps(result, indent=1))
        return result

    last_write = t0
    try:
        while proc.poll() is None:
            tree, used = tree_rss(ps), psutil.virtual_memory().used
            peak_tree, peak_used = max(peak_tree, tree), max(peak_used, used)
            if trace:
                trace.write(f"{time.time():.1f} {tree / 2**30:.3f} {used / 2**30:.3f}\n")
                trace.flush()
            if time.time() - last_write >= 60:
                summary(running=True)
                last_write = time.time()
            time.sleep(args.every)
    except KeyboardInterrupt:  # Ctrl-C reaches the command too (same process group): wait for it to stop
        proc.wait()
    finally:
        if trace:
            trace.close()
    print(json.dumps(summary(running=False), indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
