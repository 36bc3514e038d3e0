"""RM training levers side by side: step time and peak memory of fp32 vs bf16 autocast, with and without gradient
checkpointing, on a model of SmolLM2-135M's shape (hidden 576, 9 heads / 3 KV heads, FFN 1536, vocab 49152).

Each case is one fresh subprocess (`benchmarks.plan_calibration --one`, so ru_maxrss is that case's own peak): build
the reward model, run `--steps` BT training steps (forward in the precision's autocast, backward, AdamW) on `pairs`
pairs of exactly `max_len` tokens, and report the median step time after the first (warm-up) step, the peak RSS,
the final loss, the parameter dtypes after training (bf16 keeps fp32 master weights) and the plan's estimate.

    python -m benchmarks.rm_levers --layers 6 --pairs 4 --max-len 128          # a 6-layer cut, ~3 minutes
    python -m benchmarks.rm_levers --layers 0 --moe                           # the full 30 layers, + MoE cases
"""

from __future__ import annotations

import argparse
import json
import statistics

from benchmarks.plan_calibration import run_case

CASES = (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True))


def table(rows: list[dict]) -> str:
    """Markdown table of the measured cases; speed-up and memory are relative to the first row of the same kind."""
    out = [("| model | precision | grad ckpt | step s (median) | step s (min) | speed-up (min) | peak RSS MiB "
            "| est. MiB | est/meas | loss | param dtypes |"), "|" + "---|" * 11]
    base: dict[str, dict] = {}
    for r in rows:
        what = "dense" if r["kind"] == "dense" else f"MoE {r['experts']}+1" + (
            f" in {r['moe_layers']} layers" if r["moe_layers"] else "")
        timed = r["step_seconds"][1:] or r["step_seconds"]  # the first step is warm-up (allocator, autocast)
        # min as well as median: on a shared machine other jobs only ever add time to a step
        step, fastest = statistics.median(timed), min(timed)
        b = base.setdefault(what, {"step": fastest})
        out.append(f"| {what} ({r['params'] / 1e6:.0f}M) | {r['precision']} | {'on' if r['grad_ckpt'] else 'off'} "
                   f"| {step:.2f} | {fastest:.2f} | {b['step'] / fastest:.2f}x | {r['peak_rss_mb']:.0f} | {r['estimate_mb']:.0f} "
                   f"| {r['estimate_over_measured']:.2f} | {r['losses'][-1]:.4f} | {','.join(r['param_dtypes'])} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/models/smollm2-135m", help="checkpoint whose shape (and tokenizer) "
                                                                           "the benchmark uses")
    ap.add_argument("--layers", type=int, default=6, help="random-init cut to N layers (0 = the checkpoint itself)")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3, help="training steps per case (the first is warm-up)")
    ap.add_argument("--moe", action="store_true", help="also fp32 vs bf16 + grad ckpt for an upcycled MoE")
    ap.add_argument("--experts", type=int, default=6)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-layers", type=int, default=0, help="upcycle only the first N layers (0 = all)")
    ap.add_argument("--json", help="also write the raw rows here")
    a = ap.parse_args(argv)
    rows = []
    for precision, ckpt in CASES:
        rows.append(run_case(a, "dense", precision, ckpt))
        print(json.dumps(rows[-1]), flush=True)
    if a.moe:
        for precision, ckpt in (("fp32", False), ("bf16", True)):
            rows.append(run_case(a, "moe", precision, ckpt))
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
