"""RM training levers side by side: step time and peak memory of fp32 vs bf16 autocast, with and without gradient
checkpointing, on a model of SmolLM2-135M's shape (hidden 576, 9 heads / 3 KV heads, FFN 1536, vocab 49152).

Speed: one process, one model, the cases interleaved round by round (fp32, bf16, fp32 + ckpt, bf16 + ckpt, then
again), so that load from other jobs on a shared machine falls on every case alike; each case's first step is a
warm-up. Reported: median and min step time (BT forward in the case's autocast, backward, AdamW) and the speed-up of
the min over fp32's min. Memory: each case in a fresh subprocess (`benchmarks.plan_calibration --one`, so ru_maxrss
is that case's own peak) for two steps, with the final loss, the parameter dtypes after training (bf16 keeps fp32
master weights) and the plan's estimate (umm_ray.plan_memory) beside the measured peak RSS.

    python -m benchmarks.rm_levers --layers 6 --pairs 4 --max-len 128          # a 6-layer cut, ~5 minutes
    python -m benchmarks.rm_levers --layers 0 --moe                           # the full 30 layers, + MoE cases
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks.plan_calibration import run_case, train_step
from umm_ray.pretrained import resolve_model

CASES = (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True))
MOE_CASES = (("fp32", False), ("bf16", True))


def _passthrough(argv: list[str] | None) -> list[str]:
    """This run's own arguments, for the timing subprocess (--json and --moe stay with the parent)."""
    args = list(sys.argv[1:] if argv is None else argv)
    out, skip = [], False
    for x in args:
        if skip:
            skip = False
        elif x == "--json":
            skip = True
        elif x != "--moe" and not x.startswith("--json="):
            out.append(x)
    return out


def interleaved_times(a, kind: str, cases, rounds: int) -> dict[str, list[float]]:
    """Step seconds per case ('fp32', 'bf16+ckpt', ...), the cases alternating within one process and model."""
    import torch

    from benchmarks.plan_calibration import build_raw
    from umm_ray.records import PreferencePair
    from umm_ray.train.bt_task import BTTask
    from umm_ray.train.levers import enable_grad_checkpointing, hf_models

    torch.set_num_threads(a.threads)
    task = BTTask(kind, a.model, a.max_len, num_experts=a.experts, top_k=a.top_k, aux_coef=1.0,
                  upcycle_layers=tuple(range(a.moe_layers)))
    torch.manual_seed(0)
    raw = build_raw(task, a.model, a.layers).train()
    opt = torch.optim.AdamW(raw.parameters(), lr=1e-6)  # tiny lr: the weights barely move between the cases
    long = " ".join(f"word{i}" for i in range(4 * a.max_len))
    batch = task.collate([PreferencePair(prompt=f"q {i}: {long}", chosen=f"yes {long}", rejected=f"no {long}")
                          for i in range(a.pairs)])
    times: dict[str, list[float]] = {}
    for r in range(rounds + 1):  # round 0: warm-up of every case
        for precision, ckpt in cases:
            if ckpt:
                enable_grad_checkpointing(raw)
            else:
                for m in hf_models(raw):
                    m.gradient_checkpointing_disable()
            seconds, _ = train_step(task, raw, batch, opt, precision)
            if r:
                times.setdefault(_name(precision, ckpt), []).append(seconds)
    return times


def _name(precision: str, ckpt: bool) -> str:
    return precision + ("+ckpt" if ckpt else "")


def table(rows: list[dict]) -> str:
    """Markdown table of the measured cases; speed-up and memory are relative to the first row of the same kind."""
    out = [("| model | precision | grad ckpt | step s (median) | step s (min) | speed-up (min) | peak RSS MiB "
            "| est. MiB | est/meas | loss | param dtypes |"), "|" + "---|" * 11]
    base: dict[str, dict] = {}
    for r in rows:
        what = "dense" if r["kind"] == "dense" else f"MoE {r['experts']}+1" + (
            f" in {r['moe_layers']} layers" if r["moe_layers"] else "")
        timed = r["interleaved_seconds"]
        # min as well as median: on a shared machine other jobs only ever add time to a step
        step, fastest = statistics.median(timed), min(timed)
        b = base.setdefault(what, {"step": fastest})
        out.append(f"| {what} ({r['params'] / 1e6:.0f}M) | {r['precision']} | {'on' if r['grad_ckpt'] else 'off'} "
                   f"| {step:.2f} | {fastest:.2f} | {b['step'] / fastest:.2f}x | {r['peak_rss_mb']:.0f} "
                   f"| {r['estimate_mb']:.0f} | {r['estimate_over_measured']:.2f} | {r['losses'][-1]:.4f} "
                   f"| {','.join(r['param_dtypes'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="checkpoint whose shape (and tokenizer) "
                                                                           "the benchmark uses")
    ap.add_argument("--layers", type=int, default=6, help="random-init cut to N layers (0 = the checkpoint itself)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2, help="training steps per memory case")
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per case (after one warm-up round)")
    ap.add_argument("--timing", choices=("dense", "moe"), help="(internal) the interleaved timing, in this process")
    ap.add_argument("--moe", action="store_true", help="also fp32 vs bf16 + grad ckpt for an upcycled MoE")
    ap.add_argument("--experts", type=int, default=6)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-layers", type=int, default=0, help="upcycle only the first N layers (0 = all)")
    ap.add_argument("--json", help="also write the raw rows here")
    a = ap.parse_args(argv)
    a.model = resolve_model(a.model)  # a catalog name -> its cached HF directory
    if a.timing:
        cases = CASES if a.timing == "dense" else MOE_CASES
        print(json.dumps(interleaved_times(a, a.timing, cases, a.rounds)))
        return
    rows = []
    for kind, cases in (("dense", CASES), *((("moe", MOE_CASES),) if a.moe else ())):
        cmd = [sys.executable, "-m", "benchmarks.rm_levers", "--timing", kind, *_passthrough(argv)]
        times = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        for precision, ckpt in cases:
            rows.append(run_case(a, kind, precision, ckpt) | {"interleaved_seconds": times[_name(precision, ckpt)]})
            print(json.dumps(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows))


def from_json(path: str) -> None:
    """Print the table of rows a previous run wrote with --json."""
    with open(path) as f:
        print(table(json.load(f)))


if __name__ == "__main__":
    main()
