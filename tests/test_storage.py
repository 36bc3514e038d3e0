"""Run storage across nodes (`umm_ray.storage`, wired into every job by `jobs.common.job_config` / `init_ray`).

A private three-node Ray cluster on this machine (`tests.fixtures.multinode_cluster`: a CPU-less head and two
workers, each `ray start`ed from its own working directory, as separate machines would be) runs a job driver that
goes through the real job entry (`job_config` then `init_ray`), then has a task pinned to every node write its part
into run.output_dir, as policy ranks write their DeepSpeed partitions. The run either works through storage every
node sees (all parts land where the driver reads) or stops at start naming the nodes, the path and the fix.

One machine shares one file system, so a "node-local root" is made with /proc/self/cwd: the same absolute path names
each node's own working directory, exactly as /home/ray/umm_ray/runs names each node's own disk on a cluster without
a shared mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobs.common import job_config
from tests.fixtures import ROOT, free_port, multinode_cluster
from umm_ray.storage import CHECK_DIR, StorageError, absolute_output_dir, check_new_nodes, check_shared_storage

DRIVER = textwrap.dedent("""
    import json, os, sys
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from jobs.common import init_ray, job_config
    from umm_ray.storage import check_new_nodes

    cfg, _ = job_config(sys.argv[1:], "storage_probe")
    init_ray(cfg)  # exits 2 naming the nodes when one does not share run.output_dir

    @ray.remote(num_cpus=0)
    def write_part(out, node):  # a policy rank writing its checkpoint partition from its own node
        os.makedirs(os.path.join(out, "parts"), exist_ok=True)
        with open(os.path.join(out, "parts", node), "w") as f:
            f.write(os.getcwd())
        return os.getcwd()

    if os.environ.get("ADD_NODE_CWD"):  # an autoscaler adding a node after the start: the next stage rechecks
        import subprocess, time
        before = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        subprocess.run(os.environ["ADD_NODE_CMD"].split(), cwd=os.environ["ADD_NODE_CWD"], check=True,
                       capture_output=True)
        while len([n for n in ray.nodes() if n["Alive"]]) == len(before):
            time.sleep(0.2)
        new = sorted({n["NodeID"] for n in ray.nodes() if n["Alive"]} - before)
        print("ADDED " + json.dumps({"new": new, "probed": check_new_nodes(cfg.run.output_dir),
                                     "again": check_new_nodes(cfg.run.output_dir)}))
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    cwds = ray.get([write_part.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                    .remote(cfg.run.output_dir, n) for n in nodes])
    print("RESULT " + json.dumps({"output_dir": cfg.run.output_dir, "nodes": nodes, "cwds": cwds,
                                  "parts": sorted(os.listdir(os.path.join(cfg.run.output_dir, "parts"))),
                                  "recheck": check_new_nodes(cfg.run.output_dir)}))
""")


@pytest.fixture(scope="module")
def cluster():
    with multinode_cluster(workers=2) as c:
        (c["temp_dir"] / "driver.py").write_text(DRIVER)
        yield c


def run_driver(cluster: dict, output_dir: str) -> subprocess.CompletedProcess:
    """The driver, started on the head from the head's working directory (as `python -m jobs.X` on the head)."""
    cmd = [sys.executable, str(cluster["temp_dir"] / "driver.py"), "--run.ray_address", cluster["address"],
           "--run.output_dir", output_dir]
    return subprocess.run(cmd, cwd=cluster["node_dirs"][0], env=cluster["env"], capture_output=True, text=True,
                          timeout=600)


def result(proc: subprocess.CompletedProcess) -> dict:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"driver failed (rc {proc.returncode}):\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def test_shared_absolute_output_dir_works_on_every_node(cluster, tmp_path):
    out = tmp_path / "shared_run"
    proc = run_driver(cluster, str(out))
    res = result(proc)
    assert len(res["nodes"]) == 3
    assert res["parts"] == res["nodes"], "a node's part did not land where the driver reads"
    assert "shared by all 3 nodes" in proc.stderr
    assert res["recheck"] == [], "a stage's recheck probed nodes that had already passed"
    assert not (out / CHECK_DIR).exists(), "the check left its markers behind"


def test_relative_output_dir_is_resolved_once_on_the_driver(cluster):
    """Each node's processes run in that node's own directory: a relative path handed on as is would put every
    node's part under its own cwd. Resolved on the driver, all parts land in one directory."""
    proc = run_driver(cluster, "runs/rel")
    res = result(proc)
    head, *workers = cluster["node_dirs"]
    assert res["output_dir"] == str(head / "runs" / "rel")
    assert len(set(res["cwds"])) == 3, "the nodes share a working directory: this test cannot tell relative paths"
    assert res["parts"] == res["nodes"]
    assert not any((w / "runs").exists() for w in workers)


def test_node_local_root_stops_the_run_naming_nodes_path_and_fix(cluster):
    proc = run_driver(cluster, "/proc/self/cwd/runs")
    assert proc.returncode == 2, f"the run did not stop at start (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    assert "RESULT " not in proc.stdout
    err = proc.stderr
    assert "run.output_dir /proc/self/cwd/runs is not the same directory on every node" in err
    assert "2 of 3 nodes" in err
    for worker_dir in cluster["node_dirs"][1:]:  # each failing node is named with where it looked
        assert f"cwd {worker_dir}" in err
    assert "Fix: put run.output_dir on storage every node mounts" in err and "/mnt/shared" in err


def test_a_node_added_after_the_start_is_probed_by_the_next_recheck(cluster, tmp_path):
    """Runs last on the cluster (it adds a fourth node). The recheck a stage runs probes the new node only, once."""
    new_cwd = cluster["temp_dir"] / "node_late"
    new_cwd.mkdir()
    ports = " ".join(f"--{p}-port={free_port()}" for p in ("node-manager", "object-manager", "dashboard-agent-listen",
                                                          "metrics-export", "runtime-env-agent"))
    cmd = (f"{Path(sys.executable).with_name('ray')} start --address={cluster['address']} --num-cpus=1 "
           f"--temp-dir={cluster['temp_dir']} --disable-usage-stats {ports}")
    env = {**cluster["env"], "ADD_NODE_CWD": str(new_cwd), "ADD_NODE_CMD": cmd}
    out = tmp_path / "late_run"
    proc = subprocess.run([sys.executable, str(cluster["temp_dir"] / "driver.py"), "--run.ray_address",
                           cluster["address"], "--run.output_dir", str(out)], cwd=cluster["node_dirs"][0], env=env,
                          capture_output=True, text=True, timeout=600)
    res = result(proc)
    added = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("ADDED "))[len("ADDED "):])
    assert len(added["new"]) == 1 and added["probed"] == added["new"] and added["again"] == []
    assert res["parts"] == res["nodes"] and len(res["nodes"]) == 4


def test_uri_output_dir_is_refused_with_the_reason(capsys):
    with pytest.raises(StorageError, match="is a URI"):
        absolute_output_dir("s3://bucket/runs")
    with pytest.raises(SystemExit) as e:
        job_config(["--run.output_dir", "s3://bucket/runs"], "ppo")
    assert e.value.code == 2
    assert "must be a POSIX path" in capsys.readouterr().err


def test_job_config_makes_output_dir_absolute_except_in_a_dry_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, dry = job_config(["--run.output_dir", "runs/x", "--dry-run"], "ppo")
    assert dry and cfg.run.output_dir == "runs/x"
    assert absolute_output_dir("runs/x") == str(tmp_path / "runs" / "x")
    assert absolute_output_dir("~/r") == os.path.expanduser("~/r")
    assert Path(absolute_output_dir(str(ROOT / "link" / ".." / "x"))) == ROOT / "x"


def test_one_node_cluster_skips_the_check(ray_local, tmp_path):
    assert check_new_nodes(tmp_path / "never_checked") == []  # only paths a job checked at start are rechecked
    assert check_shared_storage(str(tmp_path)) == []
    assert check_new_nodes(tmp_path) == []
    assert not (tmp_path / CHECK_DIR).exists()
    with pytest.raises(ValueError, match="absolute"):
        check_shared_storage("runs/x")


def test_free_port_never_hands_out_a_port_twice():
    """`ray start` refuses two components on one port; CI once drew the same port twice in a row from the kernel."""
    ports = [free_port() for _ in range(3000)]
    assert len(set(ports)) == len(ports)
