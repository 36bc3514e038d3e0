"""benchmarks.peak_memory: the peaks of a command's process tree, a per-sample trace, and the exit status."""

import json
import sys

from benchmarks.peak_memory import main

# A child process holding 300 MB for a while under a parent that holds little: only the tree sum sees it.
HOLDER = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
          "'import time; x = bytearray(300 * 2**20); time.sleep(2.5)'], check=True)")


def test_peak_sums_the_process_tree_and_traces_every_sample(tmp_path):
    out, trace = tmp_path / "peak.json", tmp_path / "trace.txt"
    rc = main(["--out", str(out), "--every", "0.2", "--trace", str(trace), "--", sys.executable, "-c", HOLDER])
    result = json.loads(out.read_text())
    assert rc == 0 and result["returncode"] == 0 and result["running"] is False
    assert result["peak_tree_rss_gb"] >= 0.29  # the grandchild's 300 MB bytearray, resident (bytearray zero-fills)
    rows = [line.split() for line in trace.read_text().splitlines()]
    assert len(rows) >= 5 and all(len(r) == 3 for r in rows)
    assert abs(max(float(r[1]) for r in rows) - result["peak_tree_rss_gb"]) < 1e-3  # the peak is a traced sample


def test_a_failing_command_keeps_its_exit_status(tmp_path):
    out = tmp_path / "peak.json"
    rc = main(["--out", str(out), "--every", "0.1", "--", sys.executable, "-c", "raise SystemExit(3)"])
    assert rc == 3 and json.loads(out.read_text())["returncode"] == 3
