"""Calibrate the memory plan (umm_ray/plan.py) on CPU: peak RSS of one Bradley–Terry training step, measured vs estimated.

Each case runs in a fresh subprocess (ru_maxrss is a per-process high-water mark): build the reward model from a real
checkpoint the way a Ray Train worker does (`BTTask.build`: dense fp32, or upcycled to a shared-expert MoE), then two
steps of forward + backward + AdamW on `pairs` preference pairs padded/truncated to exactly `max_len` tokens.

    python -m benchmarks.plan_calibration --model /work/models/smollm2-135m --pairs 8 --max-len 128
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(model: str, kind: str, experts: int, top_k: int, pairs: int, max_len: int, threads: int) -> dict:
    """One training step in this process; returns peak RSS (MiB) at each phase."""
    import torch

    from umm_ray.records import PreferencePair
    from umm_ray.train.bt_task import BTTask

    torch.set_num_threads(threads)
    after_import = _rss_mb()
    task = BTTask("moe" if kind == "moe" else "dense", model, max_len, num_experts=experts, top_k=top_k,
                  aux_coef=1.0)
    torch.manual_seed(0)
    raw = task.build().train()
    after_build = _rss_mb()
    params = sum(p.numel() for p in raw.parameters())
    opt = torch.optim.AdamW([p for p in raw.parameters() if p.requires_grad], lr=1e-5)
    long = " ".join(f"word{i}" for i in range(4 * max_len))  # truncated to max_len: every row is full length
    batch = task.collate([PreferencePair(prompt=f"question {i}: {long}", chosen=f"yes {long}", rejected=f"no {long}")
                          for i in range(pairs)])
    assert batch["ids"].shape == (2 * pairs, max_len), batch["ids"].shape
    t0 = time.time()
    peaks = []
    # Two steps, in the order of umm_ray.train.loop's engine (forward, zero_grad, backward, step): from the second
    # step on, the forward runs with last step's gradients and the AdamW moments alive, so step 2 is the steady peak.
    for _ in range(2):
        loss, _ = task.loss(raw, raw, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        peaks.append(_rss_mb())
    return {"kind": kind, "experts": experts if kind == "moe" else 0, "params": params, "pairs": pairs,
            "max_len": max_len, "threads": threads, "rss_after_import_mb": after_import,
            "rss_after_build_mb": after_build, "peak_rss_step1_mb": peaks[0], "peak_rss_mb": peaks[1],
            "seconds": time.time() - t0}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="/work/models/smollm2-135m")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--experts", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--one", choices=("dense", "moe"), help="run one case in this process (used by the parent)")
    a = ap.parse_args(argv)
    if a.one:
        print(json.dumps(measure(a.model, a.one, a.experts, a.top_k, a.pairs, a.max_len, a.threads)))
        return
    from umm_ray.plan import bt_step_estimate

    rows = []
    for kind in ("dense", "moe"):
        cmd = [sys.executable, "-m", "benchmarks.plan_calibration", "--one", kind, "--model", a.model, "--pairs",
               str(a.pairs), "--max-len", str(a.max_len), "--threads", str(a.threads), "--experts", str(a.experts),
               "--top-k", str(a.top_k)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        m = json.loads(out)
        est = bt_step_estimate(a.model, experts=m["experts"], top_k=a.top_k, pairs=a.pairs, max_len=a.max_len)
        m["estimate_mb"] = est.total / 2 ** 20
        m["estimate_parts_mb"] = {k: round(v / 2 ** 20, 1) for k, v in est.parts().items()}
        m["estimate_over_measured"] = m["estimate_mb"] / m["peak_rss_mb"]
        rows.append(m)
        print(json.dumps(m), flush=True)


if __name__ == "__main__":
    main()
