"""Calibrate the memory plan (umm_ray/plan.py) on CPU: peak RSS of one Bradley-Terry training step, measured vs
estimated.

Each case runs in a fresh subprocess (ru_maxrss is a per-process high-water mark): build the reward model from a real
checkpoint the way a Ray Train worker does (`BTTask.build`: dense fp32, or upcycled to a shared-expert MoE), then two
steps of forward + backward + AdamW on `pairs` preference pairs padded/truncated to exactly `max_len` tokens, in fp32
or bf16 autocast (--precision), with or without gradient checkpointing (--grad-ckpt).

    python -m benchmarks.plan_calibration --model smollm2-135m --pairs 8 --max-len 128
    python -m benchmarks.plan_calibration --pairs 4 --layers 6 --precision bf16 --grad-ckpt   # 6-layer random init
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from umm_ray.pretrained import resolve_model


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def build_raw(task, model: str, layers: int):
    """The RewardNet `task` trains: from the checkpoint as the workers build it, or with `layers` > 0 a random-init
    model of the checkpoint's shape cut to that many decoder layers (a short benchmark of a real model's widths)."""
    if not layers:
        return task.build()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from umm_ray.models.upcycle import upcycle
    from umm_ray.train.bt_task import RewardNet

    config = AutoConfig.from_pretrained(model)
    config.num_hidden_layers, config.num_labels = layers, 1
    config.pad_token_id = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    rm = AutoModelForSequenceClassification.from_config(config).float()
    if task.stage == "moe":
        rm = upcycle(rm, task.num_experts, task.top_k, inplace=True, layers=task.upcycle_layers)
    return RewardNet(rm)


def measure(model: str, kind: str, experts: int, top_k: int, pairs: int, max_len: int, threads: int,
            precision: str = "fp32", grad_ckpt: bool = False, layers: int = 0, moe_layers: int = 0,
            steps: int = 2) -> dict:
    """`steps` training steps in this process; returns peak RSS (MiB) at each phase and the step times (s).

    precision 'bf16' / grad_ckpt run the step the way umm_ray.train.loop does with rm.precision / rm.grad_checkpointing.
    moe_layers > 0 upcycles only the first that many layers (moe.upcycle_layers).
    """
    import torch

    from umm_ray.records import PreferencePair
    from umm_ray.train.bt_task import BTTask
    from umm_ray.train.levers import enable_grad_checkpointing

    torch.set_num_threads(threads)
    after_import = _rss_mb()
    task = BTTask("moe" if kind == "moe" else "dense", model, max_len, num_experts=experts, top_k=top_k,
                  aux_coef=1.0, upcycle_layers=tuple(range(moe_layers)))
    torch.manual_seed(0)
    raw = build_raw(task, model, layers).train()
    if grad_ckpt:
        enable_grad_checkpointing(raw)
    after_build = _rss_mb()
    params = sum(p.numel() for p in raw.parameters())
    opt = torch.optim.AdamW([p for p in raw.parameters() if p.requires_grad], lr=1e-5)
    long = " ".join(f"word{i}" for i in range(4 * max_len))  # truncated to max_len: every row is full length
    batch = task.collate([PreferencePair(prompt=f"question {i}: {long}", chosen=f"yes {long}", rejected=f"no {long}")
                          for i in range(pairs)])
    assert batch["ids"].shape == (2 * pairs, max_len), batch["ids"].shape
    t0 = time.time()
    peaks, times, losses = [], [], []
    # In the order of umm_ray.train.loop's engine (forward, zero_grad, backward, step): from the second step on, the
    # forward runs with last step's gradients and the AdamW moments alive, so step 2 is the steady peak.
    for _ in range(steps):
        seconds, loss = train_step(task, raw, batch, opt, precision)
        times.append(seconds)
        peaks.append(_rss_mb())
        losses.append(loss)
    return {"kind": kind, "experts": experts if kind == "moe" else 0, "params": params, "pairs": pairs,
            "max_len": max_len, "threads": threads, "precision": precision, "grad_ckpt": grad_ckpt,
            "layers": layers or None, "moe_layers": moe_layers or None, "rss_after_import_mb": after_import,
            "rss_after_build_mb": after_build, "peak_rss_step1_mb": peaks[0], "peak_rss_mb": peaks[-1],
            "step_seconds": times, "losses": losses, "seconds": time.time() - t0,
            "param_dtypes": sorted({str(p.dtype) for p in raw.parameters()})}


def train_step(task, raw, batch, opt, precision: str) -> tuple[float, float]:
    """One step in the order of umm_ray.train.loop's engine (forward, zero_grad, backward, step): (seconds, loss)."""
    from umm_ray.train.levers import autocast  # heavy: torch (the CLI parses its flags first)

    t = time.perf_counter()
    with autocast(precision):
        loss, _ = task.loss(raw, raw, batch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t, loss.item()


def run_case(a, kind: str, precision: str = "fp32", grad_ckpt: bool = False) -> dict:
    """One case in a fresh subprocess (ru_maxrss is per process), with the plan's estimate beside the measurement."""
    from umm_ray.plan import bt_step_estimate
    from umm_ray.plan_memory import arch_from_config

    cmd = [sys.executable, "-m", "benchmarks.plan_calibration", "--one", kind, "--model", a.model, "--pairs",
           str(a.pairs), "--max-len", str(a.max_len), "--threads", str(a.threads), "--experts", str(a.experts),
           "--top-k", str(a.top_k), "--precision", precision, "--layers", str(a.layers), "--moe-layers",
           str(a.moe_layers), "--steps", str(a.steps)] + (["--grad-ckpt"] if grad_ckpt else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    m = json.loads(out)
    arch = None
    if a.layers:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(a.model)
        config.num_hidden_layers = a.layers
        arch = arch_from_config(config, f"{a.model} ({a.layers} layers)")
    est = bt_step_estimate(a.model, experts=m["experts"], top_k=a.top_k, pairs=a.pairs, max_len=a.max_len,
                           precision=precision, checkpointing=grad_ckpt, moe_layers=a.moe_layers or None, arch=arch)
    m["estimate_mb"] = est.total / 2 ** 20
    m["estimate_parts_mb"] = {k: round(v / 2 ** 20, 1) for k, v in est.parts().items()}
    m["estimate_over_measured"] = m["estimate_mb"] / m["peak_rss_mb"]
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--experts", type=int, default=2)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--grad-ckpt", action="store_true")
    ap.add_argument("--layers", type=int, default=0, help="random-init model of the checkpoint's shape, N layers")
    ap.add_argument("--moe-layers", type=int, default=0, help="upcycle only the first N layers (0 = all)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", choices=("dense", "moe"), help="run one case in this process (used by the parent)")
    a = ap.parse_args(argv)
    a.model = resolve_model(a.model)  # a catalog name -> its cached HF directory
    if a.one:
        print(json.dumps(measure(a.model, a.one, a.experts, a.top_k, a.pairs, a.max_len, a.threads, a.precision,
                                 a.grad_ckpt, a.layers, a.moe_layers, a.steps)))
        return
    for kind in ("dense", "moe"):
        print(json.dumps(run_case(a, kind, a.precision, a.grad_ckpt)), flush=True)


if __name__ == "__main__":
    main()
