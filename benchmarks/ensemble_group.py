"""The ensemble stage's wall time against its members' training time, per worker group mode, side by side in one run.

    python -m benchmarks.ensemble_group --preset tiny [--members 4] [--out runs/bench/ensemble_group.json]
        [any job config override, e.g. --rm.epochs 1]

The testbed world (prepare -> sft -> pairs) is built once through the stage cache under run.output_dir; then the
ensemble stage (`umm_ray.train.ensemble.train_ensemble`) runs once per `ensemble.worker_group` mode on the same data
and seeds, each into its own directory: `per_member` (k Ray Train runs launched at once, a worker-group start-up
each) and `shared` (one worker group training the members in turn). Per mode: the stage's wall seconds, the members'
own training seconds (first step to last, from their workers' clocks; sum and max), and wall / sum. Both modes train
the same members (tests/train/test_group.py), so the comparison is of time only.

On a 2-core machine the k concurrent runs of `per_member` contend for the same cores, and their start-ups overlap;
on a cluster with room for every member's workers they run on separate nodes. Read the ratio for the machine it
was measured on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

from jobs.common import init_ray, job_config
from umm_ray.graph import StageGraph
from umm_ray.layout import RunLayout
from umm_ray.pipeline import StageRunner
from umm_ray.train.ensemble import train_ensemble

MODES = ("per_member", "shared")


def run_mode(cfg, layout: RunLayout, mode: str, out_dir: Path) -> dict:
    """One ensemble stage in `mode`; returns its wall seconds and the members' training seconds."""
    cfg = dataclasses.replace(cfg, ensemble=dataclasses.replace(cfg.ensemble, worker_group=mode))
    shutil.rmtree(out_dir / mode, ignore_errors=True)  # a rerun must train, not resume a finished run
    t0 = time.perf_counter()
    res = train_ensemble(cfg, layout, stage_dir=out_dir / mode)
    wall = time.perf_counter() - t0
    train = [m["train_seconds"] for m in res.eval["members"]]
    return {"mode": mode, "wall_s": wall, "member_train_s": train, "sum_train_s": sum(train), "max_train_s": max(train),
            "wall_over_sum": wall / sum(train), "test_accuracy": res.eval["test"]["accuracy"]}


def table(rows: list[dict], members: int) -> str:
    lines = [f"| worker_group | members | stage wall s | member train s (sum / max) | wall / sum train | "
             f"ensemble test acc |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['mode']} | {members} | {r['wall_s']:.1f} | {r['sum_train_s']:.1f} / {r['max_train_s']:.1f}"
                     f" | {r['wall_over_sum']:.2f} | {r['test_accuracy']:.3f} |")
    by = {r["mode"]: r for r in rows}
    if len(by) == 2:
        lines.append(f"\nper_member wall / shared wall: {by['per_member']['wall_s'] / by['shared']['wall_s']:.2f}")
    return "\n".join(lines)


def main(argv: list[str]) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--members", type=int, default=4, help="ensemble members (ensemble.members)")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated worker_group modes, run in this order")
    ap.add_argument("--out", default="runs/bench/ensemble_group.json", help="where the JSON result goes")
    args, rest = ap.parse_known_args(argv)
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in MODES]
    if bad:
        ap.error(f"--modes: unknown {bad}; choose from {list(MODES)}")
    cfg, _ = job_config(["--rm.kind", "ensemble", "--ensemble.members", str(args.members), *rest], "train_rm")
    init_ray(cfg)
    runner = StageRunner(cfg.run.output_dir, cfg)
    StageGraph(cfg, runner).pairs()  # the world and its pairs, once (cached for later runs of this benchmark)
    layout = RunLayout(cfg.run.output_dir)
    bench_dir = Path(cfg.run.output_dir) / "bench_ensemble_group"
    rows = []
    for mode in modes:
        print(f"[ensemble_group] {mode}: training {args.members} members ...", flush=True)
        rows.append(run_mode(cfg, layout, mode, bench_dir))
        print(f"[ensemble_group] {mode}: stage {rows[-1]['wall_s']:.1f} s, members' training "
              f"{rows[-1]['sum_train_s']:.1f} s in all", flush=True)
    print(table(rows, args.members))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"members": args.members, "rows": rows, "argv": argv}, indent=1))
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
