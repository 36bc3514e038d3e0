"""Where a training worker's resident memory goes: RSS after every step of Bradley-Terry training on real, variable-
length preference pairs, once per glibc malloc setting, each case in a fresh subprocess (malloc reads its settings at
process start).

The real-HH table's training worker held 3.5-4.5x the bytes its tensors need (7.6 GB for the 135M dense RM, 17.7 GB for
UMM-4's MoE), while `plan_calibration` (fixed-length batches, two steps) measured peaks close to the live bytes. This
benchmark runs what differs: many steps whose batches all have different sequence lengths, as a real data set gives.

    python -m benchmarks.worker_memory --model smollm2-135m \
        --data ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz --pairs 16 --max-len 128 --steps 20

Cases (`--cases`): `default` (glibc as is), `mmap64k` (MALLOC_MMAP_THRESHOLD_=65536: blocks from 64 KiB up are mapped
and unmapped on their own, so freed activations go back to the OS instead of staying in the heap), `arena2`
(MALLOC_ARENA_MAX=2: fewer per-thread heaps). Writes `runs/bench/worker_memory.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

from umm_ray.pretrained import resolve_model

CASES = {"default": {}, "mmap64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}, "arena2": {"MALLOC_ARENA_MAX": "2"}}


def _rss_gb() -> float:
    """This process's resident set now (not the high-water mark): /proc/self/statm pages x page size."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 30


def measure(model: str, data: str, kind: str, experts: int, pairs: int, max_len: int, steps: int, threads: int,
            precision: str, upcycle_layers: str = "", seed: int = 0) -> dict:
    """`steps` BT training steps on `pairs` pairs a step drawn from `data` (shuffled by `seed`, truncated to
    `max_len`, so every batch has its own length); RSS after each step, and the tensors' own bytes for comparison."""
    import torch

    from benchmarks.plan_calibration import train_step
    from umm_ray.data.preferences import load_preferences
    from umm_ray.train.bt_task import BTTask

    torch.set_num_threads(threads)
    rows = load_preferences(data, on_error="skip")
    random.Random(seed).shuffle(rows)
    if len(rows) < steps * pairs:
        raise SystemExit(f"--data {data}: {len(rows)} usable pairs, fewer than --steps x --pairs = {steps * pairs}")
    layers = tuple(int(i) for i in upcycle_layers.split(",")) if upcycle_layers else ()
    task = BTTask("moe" if kind == "moe" else "dense", model, max_len, num_experts=experts, top_k=2, aux_coef=1.0,
                  upcycle_layers=layers)
    torch.manual_seed(seed)
    raw = task.build().train()
    opt = torch.optim.AdamW([p for p in raw.parameters() if p.requires_grad], lr=1e-5)
    after_build = _rss_gb()
    rss, lengths, seconds = [], [], []
    for s in range(steps):
        batch = task.collate(rows[s * pairs:(s + 1) * pairs])  # ids [2 * pairs, T], T = this batch's longest row
        lengths.append(int(batch["ids"].shape[1]))
        sec, _ = train_step(task, raw, batch, opt, precision)
        seconds.append(round(sec, 2))
        rss.append(round(_rss_gb(), 3))
    # What the tensors themselves hold between steps: parameters, gradients and AdamW's two moments.
    state = sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if torch.is_tensor(t))
    params = sum(p.numel() * p.element_size() for p in raw.parameters())
    grads = sum(p.grad.numel() * p.grad.element_size() for p in raw.parameters() if p.grad is not None)
    return {"malloc_env": {k: os.environ.get(k) for k in sorted({k for c in CASES.values() for k in c})},
            "after_build_gb": round(after_build, 3), "rss_gb": rss, "lengths": lengths, "step_seconds": seconds,
            "tensor_gb": round((params + grads + state) / 2 ** 30, 3),
            "params": sum(p.numel() for p in raw.parameters())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="HF checkpoint directory of the backbone")
    ap.add_argument("--data", default="../shared/data/hh-rlhf/harmless-base/test.jsonl.gz",
                    help="preference pairs (any file load_preferences reads)")
    ap.add_argument("--kind", choices=("dense", "moe"), default="dense")
    ap.add_argument("--experts", type=int, default=4, help="experts when --kind moe")
    ap.add_argument("--upcycle-layers", default="", help="comma list of layers to upcycle when --kind moe (all: '')")
    ap.add_argument("--pairs", type=int, default=16, help="pairs a step (the RM's batch)")
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--cases", default="default,mmap64k,arena2", help=f"comma list of {list(CASES)}")
    ap.add_argument("--out", default="runs/bench/worker_memory.json")
    ap.add_argument("--one", action="store_true", help="run one case in this process (used by the parent)")
    a = ap.parse_args(argv)
    a.model = resolve_model(a.model)  # a catalog name -> its cached HF directory
    if a.one:
        print(json.dumps(measure(a.model, a.data, a.kind, a.experts, a.pairs, a.max_len, a.steps, a.threads,
                                 a.precision, a.upcycle_layers)))
        return
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"--cases: {unknown} not among {list(CASES)}")
    results = {}
    for case in cases:
        cmd = [sys.executable, "-m", "benchmarks.worker_memory", "--one", *sum(
            ([f"--{k.replace('_', '-')}", str(v)] for k, v in vars(a).items()
             if k not in ("one", "cases", "out")), [])]
        t0 = time.time()
        proc = subprocess.run(cmd, env={**os.environ, **CASES[case]}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"case {case} failed:\n{proc.stderr[-3000:]}")
        results[case] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "env": CASES[case],
                         "wall_s": round(time.time() - t0, 1)}
        r = results[case]
        print(f"{case:8s} tensors {r['tensor_gb']:.2f} GB | RSS after build {r['after_build_gb']:.2f}, after step 1 "
              f"{r['rss_gb'][0]:.2f}, max {max(r['rss_gb']):.2f}, last {r['rss_gb'][-1]:.2f} GB | "
              f"s/step {sum(r['step_seconds'][1:]) / max(1, len(r['step_seconds']) - 1):.2f}", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"args": {k: v for k, v in vars(a).items() if k != "one"},
                                       "cases": results}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
