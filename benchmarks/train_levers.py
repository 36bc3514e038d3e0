"""SFT and PPO-update levers side by side: step time and peak memory of fp32 vs bf16 autocast, each with the batch
padded to its longest row vs in token-budget micro-batches (sft/ppo.micro_batch_tokens), on CPU.

The batch has rows of varied length (uniform between max_len / 8 and max_len, seeded), as real SFT data and PPO
rollouts do; padding is what the token budget skips. The steps run the training code itself: SFT through
`SFTTask.loss` / `SFTTask.micro_batches` / `accumulate_step` (umm_ray.train.levers), the PPO update through
`ActorCritic` / `token_budget_pieces` / `joint_loss`, with AdamW.

Speed: one process per workload, the four cases interleaved round by round (fp32, bf16, fp32 + budget, bf16 +
budget, then again) so that load from other jobs on a shared machine falls on every case alike; round 0 is a
warm-up. Reported: median and min step time and the min's speed-up over fp32 padded. Memory: each case in a fresh
subprocess (ru_maxrss is per process) for two steps.

    python -m benchmarks.train_levers --model testbed                                   # the testbed's tiny LM
    python -m benchmarks.train_levers --model /work/models/smollm2-135m --layers 6 --rows 8 --max-len 256

Measured (2026-11-26, the 2-core CPU box shared with other jobs, so timings are noisy; --rounds 2, 1 thread), a
6-layer random-init cut of SmolLM2-135M, 8 rows of 32..256 tokens, budget 1024 tokens. Min step s / step RSS MiB
(peak RSS minus RSS before the steps): SFT fp32 padded 22.1 / 2121, bf16 13.5 / 2080, fp32 + budget 16.0 / 1230,
bf16 + budget 11.5 / 1266; PPO update (policy + critic trunk) fp32 padded 20.6 / 4495, bf16 10.3 / 4209, fp32 +
budget 16.0 / 2451, bf16 + budget 12.6 / 2456. Losses agree to 1e-4 across the cases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time

CASES = (("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True))


def _name(precision: str, budget: bool) -> str:
    return precision + ("+budget" if budget else "")


def _lm(a):
    """(causal LM, base model for the PPO critic): the testbed's tiny config, or the checkpoint's shape (random init,
    cut to --layers when > 0; the checkpoint's weights when 0)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    if a.model == "testbed":
        from umm_ray.testbed.models import tiny_config

        config = tiny_config("llama", vocab_size=1024)
    else:
        config = AutoConfig.from_pretrained(a.model)
    if a.layers:
        config.num_hidden_layers = a.layers
    if a.model != "testbed" and not a.layers:
        return (AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32),
                AutoModel.from_pretrained(a.model, dtype=torch.float32) if a.workload == "ppo" else None)
    return (AutoModelForCausalLM.from_config(config).float(),
            AutoModel.from_config(config).float() if a.workload == "ppo" else None)


def _lengths(a) -> list[int]:
    import random

    rng = random.Random(a.seed)
    return [rng.randint(max(4, a.max_len // 8), a.max_len) for _ in range(a.rows)]


class _Engine:
    """umm_ray.train.loop's engine verbs over a plain AdamW (one process, no DDP)."""

    def __init__(self, model, opt):
        self.model, self.opt = model, opt

    def accumulating(self, last: bool):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def update(self):
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)


def sft_setup(a):
    """A step function `step(precision, budget) -> loss` over one SFT batch [rows, max_len] (right-padded)."""
    import torch

    from umm_ray.train.levers import accumulate_step, autocast
    from umm_ray.train.sft import IGNORE, SFTTask

    lm, _ = _lm(a)
    lm.train()
    lengths = _lengths(a)
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(4, lm.config.vocab_size, (a.rows, max(lengths)), generator=g)
    mask = (torch.arange(ids.shape[1])[None] < torch.tensor(lengths)[:, None]).long()
    labels = (ids * mask).masked_fill(mask == 0, IGNORE)
    for row, n in enumerate(lengths):
        labels[row, :n // 3] = IGNORE  # the prompt third
    batch = {"input_ids": ids * mask, "attention_mask": mask, "labels": labels}
    task = SFTTask("unused", max_len=a.max_len)
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-6)  # tiny lr: the weights barely move between the cases
    engine = _Engine(lm, opt)

    def step(precision: str, budget: bool) -> float:
        pieces = task.micro_batches(batch, a.budget) if budget else []
        if len(pieces) > 1:
            return accumulate_step(engine, task, lm, pieces, precision, "cpu")[0]
        with autocast(precision):
            loss, _ = task.loss(lm, lm, batch)
        loss.backward()
        engine.update()
        return loss.item()

    return step, lm


def ppo_setup(a):
    """A step function over one PPO micro-batch: prompts left-padded to max_len / 4, responses right-padded."""
    import torch

    from umm_ray.algo.ppo import joint_loss
    from umm_ray.ppo.experience import Experience, make_policy_batch, token_budget_pieces
    from umm_ray.ppo.modeling import ActorCritic, gather_logprobs
    from umm_ray.train.levers import autocast

    lm, base = _lm(a)
    model = ActorCritic(lm, base).train()
    g = torch.Generator().manual_seed(a.seed)
    resp = _lengths(a)
    prompt = [max(2, n // 4) for n in _lengths(argparse.Namespace(**{**vars(a), "seed": a.seed + 1}))]
    V = lm.config.vocab_size
    b = make_policy_batch([torch.randint(4, V, (n,), generator=g).tolist() for n in prompt],
                          [torch.randint(4, V, (n,), generator=g).tolist() for n in resp], pad_id=0)
    m = b.response_mask
    exp = Experience(b.input_ids, b.attention_mask, m, b.prompt_width, old_logprobs=-5.0 * m,
                     old_values=0.1 * m, advantages=torch.randn(m.shape, generator=g) * m,
                     returns=torch.randn(m.shape, generator=g) * m)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def loss_of(mb, precision):
        with autocast(precision):
            logits, values = model(mb.input_ids, mb.attention_mask, mb.position_ids, mb.prompt_width)
        return joint_loss(logits, gather_logprobs(logits, mb.response_ids), values, mb.old_logprobs, mb.advantages,
                          mb.old_values, mb.returns, mb.response_mask, clip_eps=0.2, value_clip=0.2, vf_coef=0.5,
                          entropy_coef=0.0)[0]

    def step(precision: str, budget: bool) -> float:
        pieces = token_budget_pieces(exp, a.budget) if budget else [(exp, 1.0)]
        total = 0.0
        for piece, w in pieces:
            loss = loss_of(piece, precision)
            (loss * w if len(pieces) > 1 else loss).backward()
            total += w * loss.item()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    return step, model


SETUPS = {"sft": sft_setup, "ppo": ppo_setup}


def interleaved(a) -> dict[str, list[float]]:
    import torch

    torch.set_num_threads(a.threads)
    step, _ = SETUPS[a.workload](a)
    times: dict[str, list[float]] = {}
    for r in range(a.rounds + 1):  # round 0: warm-up of every case
        for precision, budget in CASES:
            t = time.perf_counter()
            step(precision, budget)
            if r:
                times.setdefault(_name(precision, budget), []).append(time.perf_counter() - t)
    return times


def one_case(a) -> dict:
    """Two steps of one case in this (fresh) process: peak RSS and the losses."""
    import torch

    torch.set_num_threads(a.threads)
    step, model = SETUPS[a.workload](a)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    losses = [step(a.precision, a.budget_on) for _ in range(2)]
    return {"rss_before_steps_mb": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "losses": losses, "params": sum(p.numel() for p in model.parameters()),
            "param_dtypes": sorted({str(p.dtype) for p in model.parameters()})}


def _args(a, *extra: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.train_levers", "--model", a.model, "--layers", str(a.layers),
            "--rows", str(a.rows), "--max-len", str(a.max_len), "--budget", str(a.budget), "--threads",
            str(a.threads), "--rounds", str(a.rounds), "--seed", str(a.seed), *extra]


def _last_json(cmd: list[str]):
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def table(rows: list[dict]) -> str:
    out = ["| workload | precision | micro-batches | step s (median) | step s (min) | speed-up (min) | peak RSS MiB "
           "| step RSS MiB | loss |", "|" + "---|" * 9]
    base: dict[str, dict] = {}
    for r in rows:
        b = base.setdefault(r["workload"], r)
        step, fastest = statistics.median(r["seconds"]), min(r["seconds"])
        how = f"budget {r['budget']}" if r["budget_on"] else "padded"
        out.append(f"| {r['workload']} | {r['precision']} | {how} | {step:.3f} | {fastest:.3f} "
                   f"| {min(b['seconds']) / fastest:.2f}x | {r['peak_rss_mb']:.0f} "
                   f"| {r['peak_rss_mb'] - r['rss_before_steps_mb']:.0f} | {r['losses'][-1]:.4f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="testbed", help="'testbed' (the tiny testbed LM) or a checkpoint directory")
    ap.add_argument("--layers", type=int, default=0, help="random-init cut to N layers (0 = the model itself)")
    ap.add_argument("--rows", type=int, default=16, help="rows per batch (SFT) / per micro-batch (PPO)")
    ap.add_argument("--max-len", type=int, default=128, help="longest row; rows are uniform in [max_len/8, max_len]")
    ap.add_argument("--budget", type=int, default=0, help="micro_batch_tokens (0 = 4 x max_len)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per case (after one warm-up round)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workloads", default="sft,ppo")
    ap.add_argument("--workload", help="(internal) the workload of a --timing / --one run")
    ap.add_argument("--timing", action="store_true", help="(internal) interleaved timing in this process")
    ap.add_argument("--one", help="(internal) one memory case, PRECISION[+budget]")
    ap.add_argument("--json", help="also write the raw rows here")
    a = ap.parse_args(argv)
    a.budget = a.budget or 4 * a.max_len
    if a.timing:
        print(json.dumps(interleaved(a)))
        return
    if a.one:
        a.precision, _, flag = a.one.partition("+")
        a.budget_on = flag == "budget"
        print(json.dumps(one_case(a)))
        return
    rows = []
    for w in a.workloads.split(","):
        times = _last_json(_args(a, "--workload", w, "--timing"))
        for precision, budget in CASES:
            m = _last_json(_args(a, "--workload", w, "--one", _name(precision, budget)))
            rows.append({"workload": w, "precision": precision, "budget_on": budget, "budget": a.budget,
                         "seconds": times[_name(precision, budget)], **m})
            print(json.dumps(rows[-1]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    print(table(rows))


if __name__ == "__main__":
    main()
