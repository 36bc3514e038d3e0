"""The placement plan and memory check before launch: every role's devices, memory and placement, per stage.

    python -m jobs.plan --preset gpu --cluster cluster.yaml     # against the cluster's node types
    python -m jobs.plan --preset tiny                            # against this machine
    python -m jobs.plan --preset small --json                    # machine-readable
    python -m jobs.plan --preset gpu --cluster cluster.yaml --checkpointing   # as if gradient checkpointing were on

Per role: its actors, the CPUs / GPU share / accelerator type it asks Ray for (resources.*), the model, dtype and
memory by kind, and the placement group it joins with its strategy (STRICT_PACK for GPU rank groups; "in policy
bundle i" for roles resources.colocate puts beside the policy ranks); per stage the nodes it lands on.

Exit 0 when every stage fits, 3 with the offending stage, role and numbers when one does not, 2 on a bad config or
cluster file. Estimates come from umm_ray.plan (no Ray needed); they assume full-length sequences (max_len tokens
in every row), so they err high for short data.
"""

from __future__ import annotations

import inspect
import json
import sys

from jobs.common import init_ray, parse_job_args
from jobs.inputs import resolve_models
from umm_ray.plan import Plan, explain, make_plan
from umm_ray.plan_cluster import ClusterError, local_cluster, read_cluster
from umm_ray.plan_memory import GiB, PlanError
from umm_ray.pretrained import FetchError

EXIT_DOES_NOT_FIT = 3
COLUMNS = ("params", "grads", "optimizer", "buffers", "activations", "kv_cache", "runtime")


def _gib(v: int) -> str:
    return f"{v / GiB:.2f}" if v else "-"


def table(plan: Plan) -> str:
    """A readable table: per stage its roles (memory in GiB per actor), its placement, and any problem."""
    lines = [f"cluster: {plan.cluster.source}"]
    lines += [f"  {t.describe()}, usable RAM {t.usable_ram / GiB:.1f} GiB, max {t.max_workers}"
              for t in plan.cluster.node_types]
    head = ["role", "n", "CPU", "GPU", "model", "params", "dtype", *COLUMNS, "total", "where", "asks Ray for"]
    for s in plan.stages:
        rows = [head]
        for r in s.roles:
            m = r.memory
            model = r.model if len(r.model) <= 28 else "..." + r.model[-25:]
            rows.append([r.name, str(r.count), f"{r.cpus:g}", f"{r.gpus:g}", model, f"{r.params / 1e6:.1f}M",
                         r.dtype, *[_gib(getattr(m, c)) for c in COLUMNS], _gib(m.total),
                         "GPU" if m.device == "gpu" else "RAM", r.placement])
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines.append("")
        lines.append(f"== stage {s.name} ==")
        lines += ["  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
                  for row in rows]
        lines += [f"    {r.name}: {r.detail}" for r in s.roles]
        if s.placement is not None:
            for node, roles in s.placement.nodes.items():
                counts: dict[str, int] = {}
                for name in roles:
                    counts[name] = counts.get(name, 0) + 1
                lines.append(f"  on {node}: " + ", ".join(f"{n} x{c}" for n, c in counts.items()))
        lines += [f"  DOES NOT FIT: {p}" for p in s.problems()]
    lines.append("")
    lines.append("verdict: fits" if plan.ok else "verdict: DOES NOT FIT\n" + explain(plan))
    return "\n".join(lines)


def as_json(plan: Plan) -> dict:
    stages = []
    for s in plan.stages:
        roles = [{"role": r.name, "count": r.count, "cpus": r.cpus, "gpus": r.gpus, "model": r.model,
                  "params": r.params, "dtype": r.dtype, "device": r.memory.device, "bytes": r.memory.parts(),
                  "total_bytes": r.memory.total, "detail": r.detail, "accelerator": r.accelerator,
                  "group": r.group, "strategy": r.strategy, "colocated": r.colocated, "placement": r.placement,
                  **({"kv_tokens": r.kv.kv_tokens, "max_model_len": r.kv.max_model_len} if r.kv else {})}
                 for r in s.roles]
        stages.append({"stage": s.name, "roles": roles, "placement": s.placement.nodes if s.placement else {},
                       "problems": s.problems()})
    nodes = [{"name": t.name, "cpus": t.cpus, "gpus": t.gpus, "ram_bytes": t.ram, "usable_ram_bytes": t.usable_ram,
              "gpu_memory_bytes": t.gpu_memory, "accelerator": t.accelerator, "max_workers": t.max_workers}
             for t in plan.cluster.node_types]
    return {"cluster": plan.cluster.source, "node_types": nodes, "fits": plan.ok, "problems": plan.problems,
            "stages": stages}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cluster_file, want_json, ckpt, rest = None, False, False, []
    i = 0
    while i < len(argv):
        if argv[i] == "--cluster" and i + 1 < len(argv):
            cluster_file, i = argv[i + 1], i + 2
            continue
        if argv[i] in ("--json", "--checkpointing"):
            want_json, ckpt = want_json or argv[i] == "--json", ckpt or argv[i] == "--checkpointing"
        else:
            rest.append(argv[i])
        i += 1
    cfg = parse_job_args(rest, "plan")
    try:
        cfg = resolve_models(cfg)  # a catalog name (the smol preset's smollm2-135m): its cached dir, fetched if absent
        # Without a cluster file: this machine, with the logical CPUs a job's local Ray cluster advertises.
        cluster = read_cluster(cluster_file) if cluster_file else \
            local_cluster(logical_cpus=inspect.signature(init_ray).parameters["num_cpus"].default)
        plan = make_plan(cfg, cluster, checkpointing=ckpt)
    except (ClusterError, PlanError, FetchError) as e:
        print(f"plan error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(as_json(plan), indent=1) if want_json else table(plan))
    if not plan.ok:
        print(f"jobs.plan: {len(plan.problems)} problem(s); the first: {plan.problems[0]}", file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
