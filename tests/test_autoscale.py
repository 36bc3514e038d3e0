"""A real Ray autoscaler grows the cluster for an ensemble whose members must sit on distinct nodes.

Ray's fake multi-node provider (it ships with Ray; nodes are extra raylets on this machine) is started with
`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...` on free ports and a private temp dir, so it never
touches other Ray clusters on the machine. The head has no CPUs, like cluster.yaml's head. A job submitted with
`ray job submit` asks for a STRICT_SPREAD placement group of MEMBERS one-CPU bundles through
`umm_ray.actors.placement.make_placement_group` (which waits for resources instead of failing); only the autoscaler
adding MEMBERS worker nodes can place it. The job finishes, and its members report distinct worker node ids.

Ray's node startup has hard-coded timeouts (15 s for the dashboard agent's port file, 30 s to register), so on a
machine whose load far exceeds its cores some launches fail; the autoscaler retries them, and if the group is still
not placed the failure message quotes the autoscaler's log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.fixtures import free_port, stop_own_cluster

pytestmark = pytest.mark.slow

MEMBERS = 3
RAY = str(Path(sys.executable).with_name("ray"))

JOB = textwrap.dedent("""
    import json, sys, time
    import ray
    from umm_ray.actors.placement import in_group, make_placement_group
    from umm_ray.resources import RoleResources

    def alive():
        return sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])

    @ray.remote(num_cpus=1)
    class Member:
        def node(self):
            return ray.get_runtime_context().get_node_id()

    ray.init(address="auto")
    n = int(sys.argv[1])
    start, t0 = alive(), time.monotonic()
    pg = make_placement_group("ensemble-members", [RoleResources("t", 1, 0).bundle()] * n, strategy="STRICT_SPREAD",
                              timeout_s=900)
    waited = time.monotonic() - t0
    members = [Member.options(scheduling_strategy=in_group(pg, i)).remote() for i in range(n)]
    where = ray.get([m.node.remote() for m in members])
    print("RESULT " + json.dumps({"nodes_start": start, "nodes_end": alive(), "member_nodes": where,
                                  "scale_up_s": waited, "driver_node": ray.get_runtime_context().get_node_id()}))
""")


def fake_config(gcs_address: str, members: int) -> dict:
    """Autoscaler config: a CPU-less head and up to `members` one-CPU worker nodes, launched one at a time."""
    return {
        "cluster_name": "umm-autoscale-test",
        "max_workers": members,
        "upscaling_speed": float(members),
        "idle_timeout_minutes": 5,
        # Fake nodes are local raylets: there is nothing to ssh into or set up (no node updaters, no launch-config
        # drift). launch_multiple False: one node per launch call, so node start-ups do not all compete at once.
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "launch_multiple": False,
                     "disable_node_updaters": True, "disable_launch_config_check": True},
        "auth": {"ssh_user": "ray"},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "member": {"resources": {"CPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": members},
        },
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


@pytest.fixture
def fake_cluster():
    """Head of a fake autoscaling cluster on free ports; yields {"dashboard": url, "temp_dir": path}."""
    import ray._private.services as services

    temp_dir = Path(tempfile.mkdtemp(prefix="umm_as_", dir="/tmp"))  # short: Unix socket paths are limited
    gcs_port, dash_port = free_port(), free_port()
    config = temp_dir / "autoscaler.yaml"
    config.write_text(yaml.safe_dump(fake_config(f"{services.get_node_ip_address()}:{gcs_port}", MEMBERS)))
    env = os.environ | {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_AUTH_MODE": "token",
                        "RAY_ADDRESS": "", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [RAY, "start", "--head", f"--port={gcs_port}", f"--dashboard-port={dash_port}", "--include-dashboard=true",
           f"--ray-client-server-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
           f"--temp-dir={temp_dir}", "--num-cpus=0", f"--autoscaling-config={config}", "--disable-usage-stats"]
    try:
        subprocess.run(cmd, env=env, check=True, timeout=600, capture_output=True, text=True)
        yield {"dashboard": f"http://127.0.0.1:{dash_port}", "temp_dir": temp_dir, "env": env}
    finally:
        stop_own_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _monitor_log(temp_dir: Path) -> str:
    logs = sorted(temp_dir.glob("session_*/logs/monitor.log"))
    return logs[-1].read_text()[-4000:] if logs else "(no monitor.log)"


def test_ensemble_job_scales_the_cluster_and_spreads_members(fake_cluster, tmp_path):
    (tmp_path / "ensemble_job.py").write_text(JOB)
    cmd = [RAY, "job", "submit", "--address", fake_cluster["dashboard"], "--working-dir", str(tmp_path), "--",
           sys.executable, "ensemble_job.py", str(MEMBERS)]
    proc = subprocess.run(cmd, env=fake_cluster["env"], capture_output=True, text=True, timeout=1500)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (f"job failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                            f"--- autoscaler log ---\n{_monitor_log(fake_cluster['temp_dir'])}")
    result = json.loads(lines[-1][len("RESULT "):])
    print("\nautoscale result:", json.dumps(result, indent=1))
    assert len(result["nodes_start"]) < MEMBERS, "the cluster could place the group without scaling"
    assert len(result["nodes_end"]) >= len(result["nodes_start"]) + MEMBERS  # the CPU-less head hosts no member
    assert len(set(result["member_nodes"])) == MEMBERS, "STRICT_SPREAD members share a node"
    assert result["driver_node"] not in result["member_nodes"]
    assert set(result["member_nodes"]) <= set(result["nodes_end"]) - set(result["nodes_start"])
