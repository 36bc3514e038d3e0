"""The compare graph run concurrently on a four-node Ray cluster (Ray's `cluster_utils.Cluster`: real raylets on
this machine, a head with no CPUs as in cluster.yaml). Each RM stage stands in for a training run by holding a whole
node (a two-CPU task) for a second, so only the cluster's resources limit how many run at once: independent RM
stages must overlap in time (from the start/end their `_done.json` records), never more than the four nodes hold,
the eval stage must run alone, and the job's wall time must be below the sum of its stages' seconds. The same graph
with one slot must run the same stages with the same inputs, one at a time (concurrency is not an input)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from jobs.common import PRESETS
from tests.fixtures import ROOT
from tests.test_graph import Stand, markers, with_dir
from umm_ray.config import load_config
from umm_ray.graph import StageGraph
from umm_ray.pipeline import StageRunner

NODES, NODE_CPUS, HOLD_S = 4, 2, 1.0


@ray.remote(num_cpus=NODE_CPUS)
def hold_node(seconds: float) -> tuple[str, float, float]:
    t0 = time.time()
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id(), t0, time.time()


class NodeHolding(Stand):
    """Stand-ins whose RM stages occupy one whole node for HOLD_S seconds."""

    def __init__(self):
        super().__init__()
        self.holds: list[tuple[str, float, float]] = []  # (node, start, end) of each RM stage's work

    def namespace(self):
        ns = super().namespace()
        instant = ns.train_rm

        def train_rm(cfg, kind, extra, out, **kw):
            self.holds.append(ray.get(hold_node.remote(HOLD_S)))
            return instant(cfg, kind, extra, out, **kw)
        ns.train_rm = train_rm
        return ns


def run(cfg, parallel: int) -> tuple[NodeHolding, float]:
    cfg = dataclasses.replace(cfg, compare=dataclasses.replace(cfg.compare, parallel_stages=parallel))
    stand = NodeHolding()
    t0 = time.perf_counter()
    StageGraph(cfg, StageRunner(cfg.run.output_dir, cfg, log=lambda *_: None), impl=stand.namespace()).compare()
    return stand, time.perf_counter() - t0


def measure(root: Path) -> dict:
    """Start the cluster, run the graph with 8 slots and then with 1 (in another directory); what the test checks."""
    address_file = Path("/tmp/ray/ray_current_cluster")  # Cluster() points `ray.init("auto")` here: put it back
    before = address_file.read_text() if address_file.is_file() else None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(NODES):
            cluster.add_node(num_cpus=NODE_CPUS)
        if before is not None:
            address_file.write_text(before)
        ray.init(address=cluster.address)
        cfg = with_dir(load_config(None, ["--compare.seeds", "2"], base=PRESETS["test"]), root / "parallel")
        stand, wall = run(cfg, parallel=8)
        run(with_dir(cfg, root / "sequential"), parallel=1)
    finally:
        ray.shutdown()
        cluster.shutdown()
    return {"wall": wall, "holds": stand.holds, "parallel": markers(root / "parallel"),
            "sequential": markers(root / "sequential")}


def test_independent_rm_stages_overlap_on_a_multi_node_cluster(tmp_path):
    # Its own process: pytest's session may hold a Ray connection already (one driver, one cluster).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": ""}
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    got = json.loads((tmp_path / "result.json").read_text())
    done, seq, wall = got["parallel"], got["sequential"], got["wall"]
    rms = {n: (m["started"], m["finished"]) for n, m in done.items() if n.rsplit("/", 1)[-1].startswith("rm_")}
    assert len(rms) == 8  # dense, umm-2, ensemble, dmoe x 2 seeds
    assert max(sum(s <= t < f for s, f in rms.values()) for t, _ in rms.values()) >= 2  # stages overlapped
    # Stages waiting in Ray's queue are in progress too; the work itself is bounded by the nodes.
    work = [(s, f) for _, s, f in got["holds"]]
    at_once = max(sum(s <= t < f for s, f in work) for t, _ in work)
    assert 2 <= at_once <= NODES, at_once
    assert len({node for node, _, _ in got["holds"]}) == NODES  # the work spread over every node
    stage_sum = sum(m["seconds"] for m in done.values())
    assert wall < stage_sum, (wall, stage_sum)
    for name in ("eval", "seed1/eval"):
        s, f = done[name]["started"], done[name]["finished"]
        assert not any(o != name and s < m["finished"] and m["started"] < f for o, m in done.items()), name

    def inputs(ms: dict, root: Path) -> str:  # keys also hash the deps' finish times, which differ between runs
        parts = {n: (m["inputs"]["config"], m["inputs"]["extra"], sorted(m["inputs"]["deps"])) for n, m in ms.items()}
        return json.dumps(parts, sort_keys=True).replace(str(root), "<root>")  # proxies name paths in the run dir
    assert inputs(seq, tmp_path / "sequential") == inputs(done, tmp_path / "parallel")
    one_at_a_time = sorted((m["started"], m["finished"]) for m in seq.values())
    assert all(f <= s2 for (_, f), (s2, _) in zip(one_at_a_time, one_at_a_time[1:]))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    (out / "result.json").write_text(json.dumps(measure(out), default=str))
