"""The machines a plan is checked against, and where each actor's bundle would land on them. No Ray import.

A cluster is a list of node types: the `available_node_types` of a Ray cluster launcher file (cluster.yaml), or the
local machine (os.cpu_count, MemTotal from /proc/meminfo). For every node type we need CPUs, GPUs, host RAM and the
memory of one GPU. Ray's launcher file states CPU/GPU (and optionally `memory`, bytes) under `resources`; the rest
is read, in this order, from: `resources` (`memory`, `accelerator_type:<NAME>`), the node type's name (e.g.
`gpu_a100_8x`), or the instance type in `node_config` (a built-in table of common AWS types).

`place` simulates the scheduler for one stage: groups are placed in creation order; a PACK group goes onto one node
when it can, a STRICT_PACK group onto one node or nowhere, SPREAD members onto distinct running nodes when they can
(STRICT_SPREAD: always); when no running node has room a new node of the smallest fitting type starts, within the
type's and the cluster's max_workers (the autoscaler's limits; like Ray's autoscaler, it starts nodes for room, not
to spread a soft SPREAD group). GPUs are tracked per device: a whole-GPU bundle takes devices nobody holds, a
fractional one shares a device with others while their shares and memory add up; a bundle with an accelerator
type goes only to nodes of that type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

GiB = 2 ** 30
MiB = 2 ** 20

# Device memory per GPU as nvidia-smi reports it (MiB).
ACCELERATORS: dict[str, int] = {
    "A10G": 23028, "A100-40G": 40960, "A100-80G": 81920, "H100": 81559, "H200": 143771, "L4": 23034, "T4": 15360,
    "V100": 16384, "L40S": 46068,
}
# AWS instance types: (vCPUs, RAM GiB, GPUs, accelerator).
INSTANCE_TYPES: dict[str, tuple[int, int, int, str | None]] = {
    "m5.xlarge": (4, 16, 0, None), "m5.2xlarge": (8, 32, 0, None), "m5.4xlarge": (16, 64, 0, None),
    "m5.8xlarge": (32, 128, 0, None), "m5.12xlarge": (48, 192, 0, None),
    "g5.xlarge": (4, 16, 1, "A10G"), "g5.2xlarge": (8, 32, 1, "A10G"), "g5.4xlarge": (16, 64, 1, "A10G"),
    "g5.12xlarge": (48, 192, 4, "A10G"), "g5.48xlarge": (192, 768, 8, "A10G"),
    "g6.xlarge": (4, 16, 1, "L4"), "g4dn.xlarge": (4, 16, 1, "T4"),
    "p3.2xlarge": (8, 61, 1, "V100"), "p4d.24xlarge": (96, 1152, 8, "A100-40G"),
    "p4de.24xlarge": (96, 1152, 8, "A100-80G"), "p5.48xlarge": (192, 2048, 8, "H100"),
}
# Ray's memory monitor kills workers above this fraction of node RAM (RAY_memory_usage_threshold default).
RAY_OOM_THRESHOLD = 0.95
# Ray's own processes per node (raylet, agents; GCS, dashboard and the job driver on the head).
RAY_SYSTEM_NODE = int(0.5 * GiB)
RAY_SYSTEM_HEAD = int(1.5 * GiB)


class ClusterError(ValueError):
    """The cluster description cannot be used; the message names the file and node type."""


@dataclass(frozen=True)
class NodeType:
    """One kind of machine. `usable_ram` is what role processes may take before Ray's OOM killer steps in."""

    name: str
    cpus: float
    gpus: int
    ram: int
    gpu_memory: int = 0
    accelerator: str = ""
    max_workers: int = 1
    min_workers: int = 0
    head: bool = False

    @property
    def usable_ram(self) -> int:
        return int(self.ram * RAY_OOM_THRESHOLD) - (RAY_SYSTEM_HEAD if self.head else RAY_SYSTEM_NODE)

    def describe(self) -> str:
        gpu = f", {self.gpus} x {self.accelerator} ({self.gpu_memory / GiB:.1f} GiB)" if self.gpus else ""
        return f"{self.name}: {self.cpus:g} CPU, {self.ram / GiB:.0f} GiB RAM{gpu}"


@dataclass(frozen=True)
class Cluster:
    """Node types (with the head's type) and the cluster-wide worker limit; `source` says where it was read."""

    source: str
    node_types: tuple[NodeType, ...]
    max_workers: int = 0  # worker nodes beyond the head; 0 = a fixed set (the local machine)


def read_meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """/proc/meminfo in bytes, by key."""
    out = {}
    for line in Path(path).read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            out[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def local_cluster(logical_cpus: float | None = None, gpus: int = 0, gpu_memory: int = 0) -> Cluster:
    """This machine as a one-node cluster. `logical_cpus`: what a local Ray cluster advertises (jobs start it with
    more logical CPUs than cores); default os.cpu_count()."""
    ram = read_meminfo()["MemTotal"]
    cpus = logical_cpus if logical_cpus is not None else float(os.cpu_count() or 1)
    node = NodeType("local", cpus, gpus, ram, gpu_memory, "local GPU" if gpus else "", max_workers=1, min_workers=1,
                    head=True)
    logical = f", {cpus:g} logical CPUs in Ray" if cpus != os.cpu_count() else ""  # what actors are placed against
    return Cluster(f"this machine ({os.cpu_count()} cores{logical}, MemTotal {ram / GiB:.1f} GiB)", (node,), 0)


def resolve_worker_group(worker_group: str, single_cpu_node: bool | None) -> str:
    """ensemble.worker_group with 'auto' resolved: 'shared' (one worker group trains the members in turn) on a single
    CPU-only node (a laptop, a CI runner: k groups at once would only share its cores), else 'per_member' (several
    nodes, nodes to add, or GPUs). `single_cpu_node` None = not known: per member. The one rule for the ensemble
    trainer at run time (one alive node in `ray.nodes()`) and for the plan (a cluster YAML with one CPU node type and
    no workers to add)."""
    if worker_group != "auto":
        return worker_group
    return "shared" if single_cpu_node else "per_member"


def members_at_once(worker_group: str, members: int, cluster: Cluster | None) -> int:
    """How many ensemble members train at once: 1 in one shared worker group, else all `members`; 'auto' as
    `resolve_worker_group` decides for `cluster` (None: not known)."""
    single = None if cluster is None else (cluster.max_workers == 0 and len(cluster.node_types) == 1
                                           and not cluster.node_types[0].gpus)
    return 1 if resolve_worker_group(worker_group, single) == "shared" else members


# Accelerator names as they appear in node type names (longest first: "l40s" before "l4").
NAME_TOKENS = (("a100_80", "A100-80G"), ("a100-80", "A100-80G"), ("a100", "A100-40G"), ("a10g", "A10G"),
               ("h100", "H100"), ("h200", "H200"), ("l40s", "L40S"), ("l4", "L4"), ("t4", "T4"), ("v100", "V100"))


def _accelerator(name: str, resources: dict, instance: str | None) -> str | None:
    """The GPU model of a node type: resources `accelerator_type:X`, else its name, else its instance type."""
    for key in resources:
        if str(key).startswith("accelerator_type:"):
            acc = str(key).split(":", 1)[1].upper()
            return "A100-40G" if acc == "A100" else acc if acc in ACCELERATORS else None  # Ray says A100 for both
    lowered = name.lower()
    for token, acc in NAME_TOKENS:
        if token in lowered:
            return acc
    return INSTANCE_TYPES[instance][3] if instance in INSTANCE_TYPES else None


def read_cluster(path: str | Path) -> Cluster:
    """Node types of a Ray cluster launcher YAML (`available_node_types`, `head_node_type`, `max_workers`)."""
    import yaml  # only to read a launcher file

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ClusterError(f"{path}: cannot read the cluster file ({e})") from e
    types = (doc or {}).get("available_node_types")
    if not isinstance(types, dict) or not types:
        raise ClusterError(f"{path}: no `available_node_types` mapping (a Ray cluster launcher file has one)")
    head_name = doc.get("head_node_type")
    out = []
    for name, spec in types.items():
        where = f"{path}: available_node_types.{name}"
        res = dict((spec or {}).get("resources") or {})
        instance = ((spec or {}).get("node_config") or {}).get("InstanceType")
        known = INSTANCE_TYPES.get(instance)
        cpus = float(res.get("CPU", known[0] if known else 0))
        gpus = int(res.get("GPU", known[2] if known else 0))
        if "memory" in res:
            ram = int(res["memory"])
        elif known:
            ram = known[1] * GiB
        else:
            raise ClusterError(f"{where}: RAM unknown: set resources.memory (bytes) or use an InstanceType the plan "
                               f"knows ({', '.join(sorted(INSTANCE_TYPES))})")
        acc, gpu_mem = "", 0
        if gpus:
            acc = _accelerator(name, res, instance) or ""
            if not acc:
                raise ClusterError(f"{where}: {gpus} GPU(s) of unknown type: add resources "
                                   f"`accelerator_type:<NAME>: 1` with NAME one of {', '.join(ACCELERATORS)}")
            gpu_mem = ACCELERATORS[acc] * MiB
        is_head = name == head_name
        out.append(NodeType(name, cpus, gpus, ram, gpu_mem, acc, int(spec.get("max_workers", 1 if is_head else 0)),
                            int(spec.get("min_workers", 0)), head=is_head))
    return Cluster(str(path), tuple(out), int(doc.get("max_workers", sum(t.max_workers for t in out))))


@dataclass(frozen=True)
class Bundle:
    """One actor's claim (or colocated actors' joint claim): logical CPUs, GPUs (a fraction shares a GPU), the memory
    of its process (on one GPU, or in host RAM), and the accelerator type it must run on ('' = any)."""

    role: str
    cpus: float
    gpus: float
    host_memory: int
    gpu_memory: int = 0
    accelerator: str = ""


def accelerator_matches(wanted: str, node: str) -> bool:
    """Whether a node whose GPUs are `node` (a name of ACCELERATORS) satisfies Ray accelerator type `wanted`: the same
    name, or the family Ray detects on both sizes (A100 for A100-40G and A100-80G)."""
    return not wanted or wanted == node or node.startswith(wanted + "-")


@dataclass
class _Node:
    type: NodeType
    index: int
    cpus: float = 0.0
    gpus: float = 0.0
    ram: int = 0
    gpu_mem: list = field(default_factory=list)  # free bytes per GPU
    gpu_share: list = field(default_factory=list)  # free fraction per GPU (Ray hands out fractional GPUs per device)
    roles: list = field(default_factory=list)

    def __post_init__(self):
        self.cpus, self.gpus, self.ram = self.type.cpus, float(self.type.gpus), self.type.usable_ram
        self.gpu_mem = [self.type.gpu_memory] * self.type.gpus
        self.gpu_share = [1.0] * self.type.gpus

    def _free_gpus(self) -> list[int]:
        return [i for i, s in enumerate(self.gpu_share) if s >= 1 - 1e-9]

    def _shared_gpu(self, b: Bundle) -> int | None:
        """The GPU a fractional bundle goes to: the fullest one that still has its share and memory (Ray packs)."""
        ok = [i for i, s in enumerate(self.gpu_share) if s + 1e-9 >= b.gpus and self.gpu_mem[i] >= b.gpu_memory]
        return min(ok, key=lambda i: (self.gpu_share[i], i)) if ok else None

    @property
    def label(self) -> str:
        return f"{self.type.name}#{self.index}"

    def room(self, b: Bundle) -> bool:
        if b.cpus > self.cpus + 1e-9 or b.gpus > self.gpus + 1e-9 or b.host_memory > self.ram:
            return False
        if b.accelerator and not accelerator_matches(b.accelerator, self.type.accelerator):
            return False
        if not b.gpus:
            return True
        if b.gpus < 1:
            return self._shared_gpu(b) is not None
        return len(self._free_gpus()) >= b.gpus and b.gpu_memory <= self.type.gpu_memory

    def take(self, b: Bundle) -> None:
        self.cpus -= b.cpus
        self.gpus -= b.gpus
        self.ram -= b.host_memory
        if b.gpus and b.gpus < 1:
            i = self._shared_gpu(b)
            self.gpu_share[i] -= b.gpus
            self.gpu_mem[i] -= b.gpu_memory
        elif b.gpus:  # whole GPUs: devices nobody else holds
            for i in self._free_gpus()[:int(b.gpus)]:
                self.gpu_share[i], self.gpu_mem[i] = 0.0, self.type.gpu_memory - b.gpu_memory
        self.roles.append(b.role)


@dataclass(frozen=True)
class Group:
    """Bundles placed together: strategy PACK (one node if possible), STRICT_PACK (one node or not at all: a NCCL
    rank group on GPUs), SPREAD (distinct nodes if possible) or STRICT_SPREAD (distinct nodes)."""

    name: str
    bundles: tuple[Bundle, ...]
    strategy: str = "PACK"


@dataclass(frozen=True)
class Placement:
    """Where one stage's groups landed: node label -> roles; `failure` names the first bundle that fits nowhere."""

    nodes: dict
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure


def place(groups: list[Group], cluster: Cluster) -> Placement:
    """Place one stage's groups (all alive at once) on the cluster, starting nodes as the autoscaler would."""
    nodes = [_Node(t, i) for t in cluster.node_types for i in range(max(t.min_workers, 1 if t.head else 0))]
    counts = {t.name: sum(1 for n in nodes if n.type is t) for t in cluster.node_types}

    def fits_all(t: NodeType, bundles: tuple[Bundle, ...], state: _Node | None = None) -> bool:
        """Whether all `bundles` fit a fresh node of type `t` (or, given `state`, what is left of a running one)."""
        node = _Node(t, 0)
        if state is not None:
            node.cpus, node.gpus, node.ram = state.cpus, state.gpus, state.ram
            node.gpu_mem, node.gpu_share = list(state.gpu_mem), list(state.gpu_share)
        for b in bundles:
            if not node.room(b):
                return False
            node.take(b)
        return True

    def launch(b: Bundle, rest: tuple[Bundle, ...]) -> _Node | None:
        workers = sum(1 for n in nodes if not n.type.head)
        if cluster.max_workers and workers >= cluster.max_workers:
            return None
        fitting = [t for t in cluster.node_types if not t.head and counts[t.name] < t.max_workers
                   and _Node(t, 0).room(b)]
        if not fitting:
            return None
        # A PACK group asks for a node that holds all its remaining bundles when one exists (the autoscaler scores
        # node types by how well the pending bundles use them); otherwise the smallest node that holds this one.
        whole = [t for t in fitting if fits_all(t, rest)] if len(rest) > 1 else []
        t = min(whole or fitting, key=lambda t: (t.gpus, t.gpu_memory, t.cpus, t.ram))
        counts[t.name] += 1
        node = _Node(t, counts[t.name] - 1)
        nodes.append(node)
        return node

    def strict_pack(g: Group) -> str:
        """Place all of `g` on one running node, or on one new node; '' when placed, else why not."""
        for n in nodes:
            if fits_all(n.type, g.bundles, n):
                for b in g.bundles:
                    n.take(b)
                return ""
        workers = sum(1 for n in nodes if not n.type.head)
        fitting = [t for t in cluster.node_types if not t.head and counts[t.name] < t.max_workers
                   and fits_all(t, g.bundles)]
        if not fitting or (cluster.max_workers and workers >= cluster.max_workers):
            return _why(g.bundles[0], g, cluster) + f"; STRICT_PACK needs all {len(g.bundles)} bundles on one node"
        t = min(fitting, key=lambda t: (t.gpus, t.gpu_memory, t.cpus, t.ram))
        counts[t.name] += 1
        node = _Node(t, counts[t.name] - 1)
        nodes.append(node)
        for b in g.bundles:
            node.take(b)
        return ""

    for g in groups:  # in creation order, as Ray places them
        if g.strategy == "STRICT_PACK":
            why = strict_pack(g)
            if why:
                return Placement(_summary(nodes), why)
            continue
        used: set[str] = set()
        for i, b in enumerate(g.bundles):
            candidates = [n for n in nodes if n.room(b) and not (g.strategy == "STRICT_SPREAD" and n.label in used)]
            if g.strategy.endswith("SPREAD"):  # SPREAD is best effort: a used node before a new one
                candidates.sort(key=lambda n: n.label in used)
            else:
                candidates.sort(key=lambda n: n.label not in used)
            node = candidates[0] if candidates else launch(b, g.bundles[i:] if g.strategy == "PACK" else (b,))
            if node is None:
                return Placement(_summary(nodes), _why(b, g, cluster))
            node.take(b)
            used.add(node.label)
    return Placement(_summary(nodes))


def _summary(nodes: list[_Node]) -> dict:
    return {n.label: list(n.roles) for n in nodes if n.roles}


def _why(b: Bundle, g: Group, cluster: Cluster) -> str:
    need = f"{b.cpus:g} CPU, {b.host_memory / GiB:.1f} GiB RAM" + \
        (f", {b.gpus:g} GPU with {b.gpu_memory / GiB:.1f} GiB" if b.gpus else "")
    what = f"{b.role} ({len(g.bundles)} in group {g.name}, {g.strategy}) needs {need}"
    types = [t for t in cluster.node_types if not t.head or not cluster.max_workers]
    if b.accelerator:
        need += f" of type {b.accelerator}"
        what = f"{b.role} ({len(g.bundles)} in group {g.name}, {g.strategy}) needs {need}"
        types = [t for t in types if accelerator_matches(b.accelerator, t.accelerator)]
        if not types:
            return f"{what}; no node type has accelerator type {b.accelerator}"
    if b.gpus:
        gpu_types = [t for t in types if t.gpus >= b.gpus]
        if not gpu_types:
            return f"{what}; no node type has {b.gpus:g} GPU(s)"
        big = max(gpu_types, key=lambda t: t.gpu_memory)
        if big.gpu_memory < b.gpu_memory:
            return f"{what}; the largest GPU is {big.gpu_memory / GiB:.1f} GiB ({big.accelerator}, {big.name})"
    big = max(types, key=lambda t: t.usable_ram)
    if big.usable_ram < b.host_memory:
        return f"{what}; the most RAM a node offers is {big.usable_ram / GiB:.1f} GiB usable ({big.name}: " \
               f"{RAY_OOM_THRESHOLD:.0%} of {big.ram / GiB:.1f} GiB, less Ray's own processes)"
    if max(t.cpus for t in types) < b.cpus:
        return f"{what}; no node type has {b.cpus:g} CPUs"
    return f"{what}; the nodes are full with the stage's other actors and no more can start (max_workers)"
