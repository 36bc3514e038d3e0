"""Run storage every node sees: `run.output_dir` as one absolute path, and a start-up check that all nodes share it.

Every stage writes under `run.output_dir`, and on a cluster several processes on different nodes write the same run:
the PPO driver makes `checkpoints/.tmp_step_*` on the head while each policy rank writes its DeepSpeed partition
there from its own node, then the driver renames and prunes; Ray Train workers persist checkpoints to
`<stage>/ray_train`. That only works when the path names the same directory on every node, i.e. a shared mount
(cluster.yaml mounts EFS at /mnt/shared). Two ways it silently does not:

  * a node-local path (the head's disk, or the repository copy each node has): every node writes its own copy, the
    head's rename and pruning never reach the workers, and resume finds half a checkpoint;
  * a relative path: each process resolves it against its own working directory, which differs per node (and under
    `ray job submit` is a per-node copy of the job's working dir).

So the driver resolves output_dir once (`absolute_output_dir`, jobs pass the result everywhere) and, at start,
`check_shared_storage` proves the path is shared: the driver writes a marker with a random token, a task pinned to
each alive node (NodeAffinitySchedulingStrategy, soft=False) reads it back at the same absolute path and writes its
own marker, which the driver then reads. Any node that fails stops the run before any stage runs, naming the nodes,
the path and the fix. On a one-node cluster there is nothing to share and the check returns at once. Nodes that an
autoscaler adds later are probed before each stage that runs (`check_new_nodes`, called by the stage runner).

URIs (s3://, gs://) are refused: the stage graph reads and writes its outputs with ordinary file operations, so the
run directory must be a POSIX path (on a multi-node cluster, a shared mount).
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
from pathlib import Path

CHECK_DIR = ".storage_check"  # under output_dir; removed after each check
FIX = ("put run.output_dir on storage every node mounts at the same path (cluster.yaml mounts EFS at /mnt/shared: "
       "--run.output_dir /mnt/shared/runs/<name>; docs/cluster.md, 'Run storage')")


class StorageError(RuntimeError):
    """run.output_dir is not usable by every node of the cluster."""


def absolute_output_dir(path: str) -> str:
    """`path` made absolute against this (the driver's) working directory, `~` expanded, symlinks kept.

    Symlinks are kept on purpose: the path the user named is the one every node must see (a mount point reached
    through a link on each node), not the driver's private target of it. Raises StorageError for a URI.
    """
    if "://" in path:
        raise StorageError(f"run.output_dir: {path!r} is a URI; the stage graph writes its outputs with file "
                           f"operations, so it must be a POSIX path: on a multi-node cluster, {FIX}")
    if not path.strip():
        raise StorageError("run.output_dir: empty; give a directory (on a multi-node cluster, a shared mount)")
    return os.path.abspath(os.path.expanduser(path))


def _probe(check_dir: str, token: str, node_id: str) -> dict:
    """On one node: read the driver's marker at `check_dir` and answer with this node's own marker beside it."""
    where = {"node_id": node_id, "host": socket.gethostname(), "cwd": os.getcwd()}
    driver_marker = Path(check_dir) / f"{token}.driver"
    try:
        seen = driver_marker.read_text()
    except OSError as e:
        return {**where, "problem": f"cannot read the driver's marker {driver_marker} ({e.strerror or e})"}
    if seen != token:
        return {**where, "problem": f"{driver_marker} holds another token: a different directory of the same name"}
    try:
        (Path(check_dir) / f"{token}.{node_id}").write_text(token)
    except OSError as e:
        return {**where, "problem": f"sees the driver's marker but cannot write beside it ({e.strerror or e})"}
    return {**where, "problem": ""}


_CHECKED: dict[str, set[str]] = {}  # output_dir -> ids of the nodes that passed, so a recheck probes only new ones
# One check at a time per driver: stages may start from several driver threads at once, and two checks must not
# remove the marker directory under each other (nor probe the same new node twice).
_LOCK = threading.Lock()


def check_new_nodes(output_dir: str | Path) -> list[str]:
    """`check_shared_storage` for the nodes that joined since the last check of `output_dir` (an autoscaling
    cluster starts with its head alone, so the check at start may have had nothing to compare). Returns the node ids
    probed now. Only a path this process checked before (a job's start, `jobs.common.init_ray`) is rechecked: a
    stage runner used on its own, or without Ray, checks nothing."""
    ray = sys.modules.get("ray")  # never import Ray here: without a cluster there is nothing to check
    path = absolute_output_dir(str(output_dir))
    if ray is None or not ray.is_initialized() or path not in _CHECKED:
        return []
    return check_shared_storage(path, only_new=True)


def check_shared_storage(output_dir: str, timeout_s: float = 120.0, only_new: bool = False) -> list[str]:
    """Stop the run unless every alive node reads and writes the same directory at `output_dir`.

    Args:
        output_dir: absolute path (`absolute_output_dir`), created here if missing.
        timeout_s: how long a node may take to answer (its probe task asks for no CPU).
        only_new: probe only nodes that have not passed a check of this path in this process yet.
    Returns:
        the node ids probed (empty on a one-node cluster: skipped, and when only_new finds no new node).
    Raises:
        StorageError naming every node that did not see the path, the path and the fix.
    """
    import ray  # heavy: jobs parse their config (and print --help) before they need Ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not os.path.isabs(output_dir):
        raise ValueError(f"check_shared_storage needs an absolute path, got {output_dir!r} (absolute_output_dir)")
    with _LOCK:
        return _check(ray, NodeAffinitySchedulingStrategy, output_dir, timeout_s, only_new)


def _check(ray, affinity, output_dir: str, timeout_s: float, only_new: bool) -> list[str]:
    """`check_shared_storage` under its lock (`ray` and the NodeAffinitySchedulingStrategy class passed in: both are
    imported lazily by the caller)."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    passed = _CHECKED.setdefault(output_dir, set())
    nodes = [n for n in alive if not (only_new and n["NodeID"] in passed)]
    if len(alive) <= 1 or not nodes:
        return []
    check_dir = Path(output_dir) / CHECK_DIR
    check_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    probe = ray.remote(num_cpus=0)(_probe)  # no CPU: runs on CPU-less heads and busy nodes alike
    (check_dir / f"{token}.driver").write_text(token)
    try:
        pin = {n["NodeID"]: affinity(n["NodeID"], soft=False) for n in nodes}
        refs = {nid: probe.options(scheduling_strategy=where).remote(str(check_dir), token, nid)
                for nid, where in pin.items()}
        ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout_s)
        answers = {}
        for nid, ref in refs.items():
            try:
                answers[nid] = ray.get(ref) if ref in ready else {"problem": f"no answer in {timeout_s:.0f} s"}
            except ray.exceptions.RayError as e:  # the node died, or its worker could not start
                answers[nid] = {"problem": f"the probe failed: {type(e).__name__}: {str(e)[:300]}"}
        bad = []
        for n in nodes:
            nid, answer = n["NodeID"], answers[n["NodeID"]]
            problem = answer["problem"]
            if not problem and not (check_dir / f"{token}.{nid}").is_file():
                problem = "wrote its marker, but the driver does not see it (a different directory of the same name)"
            if problem:
                bad.append(f"  node {nid[:12]} ({n.get('NodeManagerAddress', '?')}, host {answer.get('host', '?')}, "
                           f"cwd {answer.get('cwd', '?')}): {problem}")
    finally:
        for f in check_dir.glob(f"{token}.*"):
            f.unlink(missing_ok=True)
        try:
            check_dir.rmdir()
        except OSError:
            pass  # another job's check is using it at the same time
    if bad:
        raise StorageError(f"run.output_dir {output_dir} is not the same directory on every node: "
                           f"{len(bad)} of {len(nodes)} nodes do not see what the driver wrote there:\n"
                           + "\n".join(bad) + f"\n(A relative run.output_dir is resolved against the driver's "
                           f"working directory, {os.getcwd()}, which is node-local.)\nFix: {FIX}.")
    passed.update(n["NodeID"] for n in nodes)
    return [n["NodeID"] for n in nodes]
