"""Seconds per policy -> rollout-engine weight sync, collective group vs object store, side by side in one run.

    python -m benchmarks.weight_sync [--models tiny,smollm2-135m] [--repeats 5] [--bucket-mb 64]
        [--out runs/bench/weight_sync.json]

For each model: one policy rank (DeepSpeed ZeRO-0, as the PPO job's default) and one vLLM engine in Ray actors, both
paths set up on the same actors, then `repeats` rounds each timing one `sync_weights` per path (the order alternates
between rounds, so drift in machine load hits both). A sync is what the PPO loop times as its `sync` phase: from
the driver's call until every engine has loaded the weights. `tiny` is the testbed Llama of
benchmarks/rollout_throughput.py; `smollm2-135m` is resolved through UMM_RAY_MODEL_CACHE (e.g. /work/models).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray

from benchmarks.rollout_throughput import build_policy, start_ray
from umm_ray.actors.policy import PolicyGroup
from umm_ray.actors.rollout import RolloutActor
from umm_ray.config import PPOConfig
from umm_ray.pretrained import resolve_model
from umm_ray.ppo.roles import sync_weights
from umm_ray.ppo.sync import CollectiveSync

PATHS = ("collective", "object_store")


def bench_model(name: str, path: str, args) -> dict:
    """Time both sync paths on one policy rank + one vLLM engine; returns seconds per sync for each path."""
    policy = PolicyGroup(path, PPOConfig(world_size=1, zero_stage=0, micro_batch_size=1), num_cpus=1)
    engine = ray.remote(num_cpus=1)(RolloutActor).remote(path, backend="vllm", max_new_tokens=8, max_model_len=256,
                                                         num_threads=args.threads)
    ray.get(engine.ready.remote())
    t = time.perf_counter()
    link = CollectiveSync(policy, [engine], bucket_mb=args.bucket_mb)
    setup_s = time.perf_counter() - t
    seconds: dict[str, list[float]] = {p: [] for p in PATHS}
    try:
        for p in PATHS:  # warm-up: first-call allocations on both sides
            sync_weights(policy, [engine], link if p == "collective" else None)
        for rep in range(args.repeats):
            for p in (PATHS if rep % 2 == 0 else PATHS[::-1]):
                t = time.perf_counter()
                sync_weights(policy, [engine], link if p == "collective" else None)
                seconds[p].append(time.perf_counter() - t)
    finally:
        link.close()
        ray.kill(engine)
        policy.shutdown()
    med = {p: statistics.median(s) for p, s in seconds.items()}
    return {"model": name, "bytes": link.num_bytes, "buckets": len(link.layout), "setup_s": setup_s,
            "seconds": seconds, "median_s": med,
            "object_store_over_collective": med["object_store"] / med["collective"]}


def print_table(rows: list[dict]) -> None:
    print(f"\n{'model':14} {'MiB':>7} {'buckets':>7} {'collective s':>13} {'object store s':>15} {'ratio':>7} "
          f"{'group setup s':>14}")
    for r in rows:
        m = r["median_s"]
        print(f"{r['model']:14} {r['bytes'] / 2 ** 20:7.1f} {r['buckets']:7d} {m['collective']:13.3f} "
              f"{m['object_store']:15.3f} {r['object_store_over_collective']:6.1f}x {r['setup_s']:14.1f}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,smollm2-135m", help="comma list: tiny and/or a catalog name / path")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the engine actor")
    ap.add_argument("--out", default="runs/bench/weight_sync.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for name in args.models.split(","):
            if name == "tiny":
                paths[name] = build_policy(Path(tmp), 8, hidden=128, layers=2, vocab=1024)[0]
            else:
                paths[name] = resolve_model(name)
        start_ray()
        try:
            rows = [bench_model(name, path, args) for name, path in paths.items()]
        finally:
            ray.shutdown()
    print_table(rows)
    result = {"config": vars(args), "load_avg_1m": os.getloadavg()[0], "cpu_count": os.cpu_count(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} (1-min load average {result['load_avg_1m']:.1f} on {os.cpu_count()} cores: shared)")
    return result


if __name__ == "__main__":
    main()
