"""The compare job's stage graph run concurrently vs sequentially, side by side in one run, on a fake multi-node
cluster.

    python -m benchmarks.stage_graph [--nodes 4] [--node-cpus 2] [--parallel 3] [--repeats 2]
        [--out runs/bench/stage_graph] [--timeout-s 1800] [--section.key value ...]

Starts Ray's `cluster_utils.Cluster` on this machine (a head with no CPUs, as in cluster.yaml, and `nodes` raylets
of `node-cpus` logical CPUs each), then runs `python -m jobs.compare` against it with the same config, `repeats`
times with `--compare.parallel_stages <parallel>` (in `<out>/concurrent/run<r>/`) and as often with 1 (in
`<out>/sequential/run<r>/`). Each run has its own output directory, so no stage is reused from another. The runs
alternate in ABBA order (concurrent, sequential, sequential, concurrent, ...): the first job on a fresh cluster is
slower (its PPO stage took 82 s vs 32 s in the first measurement, role start-up, not steps), and this order makes
that warm-up and any drift in machine load hit both modes alike. Figures are means over a mode's runs.

The job config is JOB_DEFAULTS (below): the tiny preset shrunk so one run takes a few minutes on 2 cores (200
prompts / 120 pairs, 1 epoch, 1 Ray Train worker per run, expert_counts [2], 2 ensemble members, one 3-step PPO
run against the dense RM, no KL-penalised runs, no HH accuracy); any further `--section.key value` flag is passed to
both runs after those, so it overrides them.

Per mode, from the job process and the stages' `_done.json` (started, seconds, deps): the job's wall seconds, the sum
of its stages' seconds, the critical path through the stages' dependencies (the wall time with unlimited slots and
no contention; the job also runs PPO after every RM, eval and bon, one run at a time, which this path ignores), the
most stages in progress at one instant, and the ratio sequential wall / concurrent wall. From rm_ensemble/eval.json:
the ensemble stage's seconds vs its members' `train_seconds` (sum and max), whose members always train at once.
Writes `<out>/stage_graph.json` and `stage_graph.md` and prints the table; docs/cluster.md has the measured one.

Caveat: the nodes are processes on ONE machine. With 2 real cores, concurrent stages (and the ensemble's members)
contend for the same cores, so the ratio here says that the graph overlaps stages, not what a real cluster gains;
each stage is slower when run beside others (compare the two modes' sums of stage seconds). Nothing is tuned for it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
JOB_DEFAULTS = ["--preset", "tiny", "--testbed.n_prompts", "200", "--testbed.n_pairs", "120",
                "--sft.epochs", "1", "--sft.num_workers", "1", "--rm.epochs", "1", "--rm.num_workers", "1",
                "--compare.expert_counts", "2", "--ensemble.members", "2", "--compare.ppo_rms", "dense",
                "--compare.ppo_kl_rms", "[]", "--compare.hh_eval", "", "--ppo.steps", "3",
                "--ppo.rollout_batch_size", "8", "--ppo.micro_batch_size", "8", "--bon.n_prompts", "8",
                "--bon.n_samples", "8", "--rollout.max_new_tokens", "16"]
MODES = ("concurrent", "sequential")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """(benchmark options, job overrides): flags this parser does not know are `--section.key value` job config."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4, help="worker raylets of the fake cluster (the head has 0 CPUs)")
    ap.add_argument("--node-cpus", type=int, default=2, help="logical CPUs of each worker raylet")
    ap.add_argument("--parallel", type=int, default=3, help="compare.parallel_stages of the concurrent run")
    ap.add_argument("--out", default="runs/bench/stage_graph", help="directory of both runs and of the results")
    ap.add_argument("--repeats", type=int, default=2, help="runs per mode, in the order concurrent, sequential, "
                    "sequential, concurrent, ...: warm-up and drift in machine load hit both modes alike")
    ap.add_argument("--timeout-s", type=float, default=1800.0, help="give up on a job run after this many seconds")
    args, job = ap.parse_known_args(argv)
    for name in ("nodes", "node_cpus", "parallel", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(args, name)}")
    if args.parallel == 1:
        ap.error("--parallel: 1 is the sequential run; give the concurrent run's slots (>= 2)")
    if job and not job[0].startswith("--"):
        ap.error(f"unexpected argument {job[0]!r}: job overrides look like --section.key value")
    stray = [a for a in job if a.startswith("--compare.parallel_stages") or a.startswith("--run.output_dir")
             or a.startswith("--run.ray_address")]
    if stray:
        ap.error(f"{stray[0]}: set by the benchmark itself (use --parallel / --out)")
    return args, job


def stage_records(root: Path) -> dict[str, dict]:
    """{stage name ('rm_dense', 'seed1/eval'): {started, seconds, finished, deps}} from every `_done.json` under
    `root`; `finished` is started + seconds (the runner's own stamp also counts the marker write)."""
    out = {}
    for marker in sorted(root.rglob("_done.json")):
        done = json.loads(marker.read_text())
        name = marker.parent.relative_to(root).as_posix()
        out[name] = {"started": done["started"], "seconds": done["seconds"],
                     "finished": done["started"] + done["seconds"], "deps": sorted(done["inputs"]["deps"])}
    return out


def max_overlap(records: dict[str, dict]) -> int:
    """The most stages in progress at one instant (a stage covers [started, finished); one ending as another starts
    does not overlap it). 0 for no stages."""
    return max((sum(r["started"] <= t["started"] < r["finished"] for r in records.values())
                for t in records.values()), default=0)


def critical_path(records: dict[str, dict]) -> tuple[float, list[str]]:
    """(seconds, stages) of the longest chain through the stages' dependencies, each weighing its seconds: the job's
    wall time with unlimited slots. Dependencies not among `records` (not run here) count 0."""
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(name: str, seen: tuple[str, ...] = ()) -> tuple[float, list[str]]:
        if name in seen:
            raise ValueError(f"stage dependencies form a cycle through {name!r}")
        if name not in best:
            ups = [longest(d, (*seen, name)) for d in records[name]["deps"] if d in records]
            up = max(ups, default=(0.0, []))
            best[name] = (up[0] + records[name]["seconds"], [*up[1], name])
        return best[name]

    return max((longest(n) for n in records), default=(0.0, []))


def ensemble_times(root: Path, records: dict[str, dict]) -> dict | None:
    """The rm_ensemble stage's seconds vs its members' train_seconds (from its eval.json); None if it did not run."""
    report = root / "rm_ensemble" / "eval.json"
    if "rm_ensemble" not in records or not report.is_file():
        return None
    train = [m["train_seconds"] for m in json.loads(report.read_text())["members"]]
    stage = records["rm_ensemble"]["seconds"]
    return {"stage_s": stage, "member_train_s": train, "member_sum_s": sum(train), "member_max_s": max(train),
            "stage_over_member_sum": stage / sum(train), "stage_over_member_max": stage / max(train)}


def summarise(root: Path, wall: float) -> dict:
    """One mode's figures from its run directory and the job process's wall seconds."""
    records = stage_records(root)
    path_s, path = critical_path(records)
    return {"wall_s": wall, "stages": len(records), "stage_sum_s": sum(r["seconds"] for r in records.values()),
            "critical_path_s": path_s, "critical_path": path, "max_overlap": max_overlap(records),
            "ensemble": ensemble_times(root, records), "records": records}


def run_order(repeats: int) -> list[tuple[str, int]]:
    """(mode, repeat) in the order run: ABBA pairs (c s, s c, c s, ...), so the first run on a fresh cluster, which
    pays for starting Ray's workers and warming caches, is not always the same mode."""
    return [(mode, r) for r in range(repeats) for mode in (MODES if r % 2 == 0 else MODES[::-1])]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def combine(runs: list[dict]) -> dict:
    """One mode's figures over its runs (`summarise` results): means, the most stages at once of any run, the
    ensemble's mean seconds, and each stage's mean seconds."""
    ens = [r["ensemble"] for r in runs if r["ensemble"]]
    ensemble = None
    if ens:
        stage, total, top = (_mean([e[k] for e in ens]) for k in ("stage_s", "member_sum_s", "member_max_s"))
        ensemble = {"stage_s": stage, "member_sum_s": total, "member_max_s": top,
                    "stage_over_member_sum": stage / total, "stage_over_member_max": stage / top}
    names = sorted({n for r in runs for n in r["records"]})
    return {"runs": len(runs), "walls_s": [r["wall_s"] for r in runs], "wall_s": _mean([r["wall_s"] for r in runs]),
            "stage_sum_s": _mean([r["stage_sum_s"] for r in runs]),
            "critical_path_s": _mean([r["critical_path_s"] for r in runs]), "critical_path": runs[0]["critical_path"],
            "max_overlap": max(r["max_overlap"] for r in runs), "ensemble": ensemble,
            "stage_s": {n: _mean([r["records"][n]["seconds"] for r in runs if n in r["records"]]) for n in names},
            "per_run": runs}


@contextmanager
def fake_cluster(nodes: int, node_cpus: int) -> Iterator[str]:
    """A Ray cluster of `nodes` raylets on this machine (head with 0 CPUs); yields its address."""
    from ray.cluster_utils import Cluster  # here, not at the top: the pure helpers above are tested without Ray

    address_file = Path("/tmp/ray/ray_current_cluster")  # Cluster() points `ray.init("auto")` here: put it back
    before = address_file.read_text() if address_file.is_file() else None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=node_cpus)
        cluster.wait_for_nodes(timeout=180)  # raylets start slowly on a loaded 2-core machine
        if before is not None:
            address_file.write_text(before)
        yield cluster.address
    finally:
        cluster.shutdown()


def run_job(out: Path, parallel: int, address: str, job: list[str], timeout_s: float) -> float:
    """Run the compare job into `out` with `parallel` slots; echoes its stage lines, returns its wall seconds."""
    argv = [sys.executable, "-m", "jobs.compare", *JOB_DEFAULTS, *job, "--run.output_dir", str(out),
            "--run.ray_address", address, "--compare.parallel_stages", str(parallel)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_ADDRESS": "", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}  # its stage lines reach the log (and our progress) as they happen
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    partial = ""  # a line the job is still writing
    with open(out / "job.log", "w") as log, open(out / "job.log") as tail:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        while True:  # poll, not a blocking read: a job that hangs silently still meets the timeout
            rc = proc.poll()
            *lines, partial = (partial + tail.read()).split("\n")
            for line in lines:  # progress: the runner's '[stage x] running / done' lines
                if line.startswith("[stage "):
                    print(f"  {time.perf_counter() - t0:7.1f} s  {line.rstrip()}", flush=True)
            if rc is not None:
                break
            if time.perf_counter() - t0 > timeout_s:
                proc.kill()
            time.sleep(1.0)
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"compare job (parallel_stages {parallel}) exited {rc} after {wall:.0f} s; "
                           f"see {out}/job.log")
    return wall


def markdown(result: dict) -> str:
    """The side-by-side table (means over the runs; the ensemble and per-stage rows after) as Markdown."""
    c, s = result["modes"]["concurrent"], result["modes"]["sequential"]
    walls = [" / ".join(f"{w:.0f}" for w in m["walls_s"]) for m in (c, s)]
    rows = [f"| mean of {c['runs']} / {s['runs']} runs | concurrent (parallel_stages {result['config']['parallel']}) "
            "| sequential (parallel_stages 1) |", "|---|---|---|",
            f"| job wall s | {c['wall_s']:.0f} ({walls[0]}) | {s['wall_s']:.0f} ({walls[1]}) |",
            f"| sum of stage s | {c['stage_sum_s']:.0f} | {s['stage_sum_s']:.0f} |",
            f"| critical path s (dependencies only) | {c['critical_path_s']:.0f} | {s['critical_path_s']:.0f} |",
            f"| most stages at once | {c['max_overlap']} | {s['max_overlap']} |"]
    for label, key, fmt in (("rm_ensemble stage s", "stage_s", ".0f"),
                            ("its members' train s: sum", "member_sum_s", ".1f"),
                            ("its members' train s: max", "member_max_s", ".1f"),
                            ("ensemble stage / members' train sum", "stage_over_member_sum", ".1f"),
                            ("ensemble stage / members' train max", "stage_over_member_max", ".1f")):
        if c["ensemble"] and s["ensemble"]:
            rows.append(f"| {label} | {c['ensemble'][key]:{fmt}} | {s['ensemble'][key]:{fmt}} |")
    for name in sorted(set(c["stage_s"]) | set(s["stage_s"])):
        got = [f"{m['stage_s'][name]:.1f}" if name in m["stage_s"] else "-" for m in (c, s)]
        rows.append(f"| stage {name} s | {got[0]} | {got[1]} |")
    cfg = result["config"]
    return ("\n".join(rows) + f"\n\nsequential wall / concurrent wall: **{result['speedup']:.2f}x** "
            f"({cfg['nodes']} nodes x {cfg['node_cpus']} logical CPUs, fake cluster on {result['cpu_count']} real "
            f"cores, 1-min load {result['load_avg_1m']:.1f}). The nodes share this machine's cores, so concurrent "
            "stages contend for them: the ratio shows the overlap, not a real cluster's gain.\n")


def main(argv: list[str] | None = None) -> dict:
    args, job = parse_args(argv)
    out = Path(args.out).resolve()
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    print(f"fake cluster: {args.nodes} nodes x {args.node_cpus} CPUs; job overrides: {' '.join(JOB_DEFAULTS + job)}")
    with fake_cluster(args.nodes, args.node_cpus) as address:
        for mode, r in run_order(args.repeats):
            parallel = args.parallel if mode == "concurrent" else 1
            run_dir = out / mode / f"run{r}"
            if run_dir.exists() and any(run_dir.iterdir()):
                raise SystemExit(f"{run_dir} is not empty: a reused stage would not be timed (choose another --out)")
            print(f"{mode} run {r} (parallel_stages {parallel}) into {run_dir}", flush=True)
            wall = run_job(run_dir, parallel, address, job, args.timeout_s)
            runs[mode].append(summarise(run_dir, wall))
            print(f"{mode} run {r}: {wall:.0f} s wall, {runs[mode][-1]['stage_sum_s']:.0f} s of stages", flush=True)
    modes = {mode: combine(rs) for mode, rs in runs.items()}
    result = {"config": vars(args), "job_args": JOB_DEFAULTS + job, "cpu_count": os.cpu_count(),
              "load_avg_1m": os.getloadavg()[0], "modes": modes,
              "speedup": modes["sequential"]["wall_s"] / modes["concurrent"]["wall_s"]}
    (out / "stage_graph.json").write_text(json.dumps(result, indent=1))
    table = markdown(result)
    print("\n" + table)
    (out / "stage_graph.md").write_text(table)
    print(f"wrote {out}/stage_graph.json and stage_graph.md")
    return result


if __name__ == "__main__":
    main()
