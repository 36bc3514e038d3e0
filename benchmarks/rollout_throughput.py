"""Generated tokens/s of the rollout backends side by side (vLLM vs HF generate), and weight-sync time.

    python -m benchmarks.rollout_throughput [--prompts 64] [--new-tokens 48] [--repeats 3] [--threads 2]
        [--model smollm2-135m] [--out runs/bench/rollout_throughput.json]

Runs at the demo size by default: 64 testbed prompts x 48 new tokens on the tiny testbed Llama (hidden 128,
2 layers, vocab 1024). `--model` benchmarks a real checkpoint instead (a local HF directory or a catalog name such as
`smollm2-135m`, fetched on first use) on the same testbed prompts, rendered through its chat template as in PPO.
Each backend runs in its own RolloutActor, one at a time (the other is killed), with the same torch thread count.
Sync time = driver `ray.put(state_dict)` + `update_weights(ref)` round trip, new weights each time.
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
import torch

from jobs.common import start_local_ray
from umm_ray.actors.rollout import RolloutActor
from umm_ray.pretrained import resolve_model
from umm_ray.testbed.models import make_causal_lm, save_model
from umm_ray.testbed.tokenizer import train_tokenizer
from umm_ray.testbed.world import make_prompts


def build_policy(out_dir: Path, n_prompts: int, hidden: int, layers: int, vocab: int) -> tuple[str, list[str]]:
    """A tiny testbed Llama + tokenizer trained on testbed prompts; returns (model dir, benchmark prompts)."""
    records = make_prompts(max(n_prompts, 512), seed=0)
    tok = train_tokenizer([r.prompt for r in records], vocab_size=vocab)
    model = make_causal_lm("llama", tok, seed=0, hidden_size=hidden, num_layers=layers,
                           intermediate_size=2 * hidden, max_seq_len=256)
    return str(save_model(model, tok, out_dir / "policy")), [r.prompt for r in records[:n_prompts]]


def bench_backend(backend: str, path: str, prompts: list[str], args, state_dict: Path) -> dict:
    """Start one engine, warm it up, time `repeats` generate calls and `repeats` weight syncs."""
    t0 = time.perf_counter()
    actor = ray.remote(num_cpus=1)(RolloutActor).remote(
        path, backend=backend, max_new_tokens=args.new_tokens, temperature=1.0, top_p=1.0, seed=0,
        max_model_len=256, num_threads=args.threads, hf_batch_size=len(prompts))
    ray.get(actor.ready.remote())
    start_s = time.perf_counter() - t0
    ray.get(actor.generate.remote(prompts[:4], seed=0))  # warm-up: first-call allocations, lazy imports
    gen_s, tokens = [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        out = ray.get(actor.generate.remote(prompts, n=1, seed=100 + rep))
        gen_s.append(time.perf_counter() - t)
        tokens.append(sum(len(r) for r in out.response_ids))
    base = {k: v.clone() for k, v in torch.load(state_dict).items()}  # the policy's own weights, perturbed below
    sync_s, engine_s = [], []
    for rep in range(args.repeats):
        sd = {k: v + 1e-3 * (rep + 1) for k, v in base.items()}
        t = time.perf_counter()
        stats = ray.get(actor.update_weights.remote(ray.put(sd)))
        sync_s.append(time.perf_counter() - t)
        engine_s.append(stats.seconds)
    ray.kill(actor)
    return {"backend": backend, "start_s": start_s, "gen_s": gen_s, "tokens": tokens,
            "tokens_per_s": sum(tokens) / sum(gen_s), "sync_s_median": statistics.median(sync_s),
            "sync_engine_s_median": statistics.median(engine_s), "sync_bytes": stats.num_bytes}


def start_ray() -> None:
    """A fresh local Ray in this process (never one a `make demo` left running), sized like a small node."""
    start_local_ray(num_cpus=4, include_dashboard=False, log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}})


def print_table(rows: list[dict]) -> None:
    print(f"\n{'backend':8} {'start s':>8} {'tokens/call':>11} {'s/call':>8} {'tokens/s':>10} "
          f"{'sync s':>8} {'(in engine)':>11}")
    for r in rows:
        print(f"{r['backend']:8} {r['start_s']:8.1f} {statistics.mean(r['tokens']):11.0f} "
              f"{statistics.mean(r['gen_s']):8.2f} {r['tokens_per_s']:10.0f} {r['sync_s_median']:8.3f} "
              f"{r['sync_engine_s_median']:11.3f}")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads in each engine actor")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--backends", default="vllm,hf")
    ap.add_argument("--model", default="", help="a real policy (HF directory or catalog name) instead of the "
                    "testbed Llama; --hidden/--layers/--vocab are then unused")
    ap.add_argument("--out", default="runs/bench/rollout_throughput.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            path, prompts = resolve_model(args.model), [r.prompt for r in make_prompts(args.prompts, seed=0)]
        else:
            path, prompts = build_policy(Path(tmp), args.prompts, args.hidden, args.layers, args.vocab)
        from transformers import AutoModelForCausalLM
        state_dict = Path(tmp) / "sd.pt"  # beside the run, never inside a user's model directory
        torch.save(AutoModelForCausalLM.from_pretrained(path).state_dict(), state_dict)
        start_ray()
        try:
            rows = [bench_backend(b, path, prompts, args, state_dict) for b in args.backends.split(",")]
        finally:
            ray.shutdown()
    print_table(rows)
    result = {"config": vars(args), "load_avg_1m": os.getloadavg()[0], "rows": rows}
    by = {r["backend"]: r for r in rows}
    if "vllm" in by and "hf" in by:
        result["vllm_over_hf_tokens_per_s"] = by["vllm"]["tokens_per_s"] / by["hf"]["tokens_per_s"]
        print(f"vLLM / HF generated tokens/s: {result['vllm_over_hf_tokens_per_s']:.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":  # vLLM may spawn processes; keep the guard
    main()
