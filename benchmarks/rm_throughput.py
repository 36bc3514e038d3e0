"""Reward-model scoring throughput and parameter count, side by side on the same inputs.

Variants: dense RM, merged UMM (upcycle -> mergeable -> export -> reloaded as a plain HF checkpoint), unmerged MoE
with 2/4/6 normal experts (top-2, eval mode), and an ensemble of 4 dense members (mean). All score the same
(prompt, response) pairs from the testbed world through the same Scorer path (`RewardModelScorer`). Timing rounds are
interleaved across variants (variant order rotates each round) so background load hits all of them alike; the
median round gives sequences/s, both by wall clock and by process CPU time (steadier on a shared machine), and the
median of per-round paired ratios gives throughput relative to dense. Writes JSON and prints a table.

    python benchmarks/rm_throughput.py                         # tiny testbed shapes, CPU
    python benchmarks/rm_throughput.py --hidden 512 --layers 4 --inter 1536 --device cuda
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from umm_ray.models.merge import export_merged, make_mergeable  # noqa: E402
from umm_ray.models.moe import moe_layers  # noqa: E402
from umm_ray.models.reward_model import EnsembleScorer, RewardModelScorer, load_reward_model  # noqa: E402
from umm_ray.models.upcycle import upcycle  # noqa: E402
from umm_ray.testbed.models import make_reward_model  # noqa: E402
from umm_ray.testbed.tokenizer import train_tokenizer  # noqa: E402
from umm_ray.testbed.world import make_prompts, sft_responses  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="llama", choices=("llama", "qwen2", "gpt_neox", "gpt2"))
    ap.add_argument("--hidden", type=int, default=128, help="hidden size (multiple of 64)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--inter", type=int, default=256, help="FFN intermediate size")
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--num-seqs", type=int, default=512, help="(prompt, response) pairs scored per round")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per variant (after one warm-up)")
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (0 = torch's default); 1 is steadiest on a shared small machine")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/rm_throughput.json")
    return ap.parse_args(argv)


def make_inputs(n: int, seed: int) -> tuple[list[str], list[str]]:
    """n testbed prompts with one SFT-style response each."""
    prompts = make_prompts(n, seed)
    rng = random.Random(seed)
    responses = [sft_responses(p, 1, rng)[0] for p in prompts]
    return [p.prompt for p in prompts], responses


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def build_variants(args, tok, workdir: Path) -> dict[str, tuple[object, int]]:
    """name -> (scorer, parameter count). Experts are perturbed so the MoE is not a trivially repeated FFN."""
    dtype = getattr(torch, args.dtype)
    sizes = dict(hidden_size=args.hidden, num_layers=args.layers, intermediate_size=args.inter,
                 max_seq_len=args.max_len)
    dense = make_reward_model(args.family, tok, seed=args.seed, **sizes).eval()
    scorer = lambda m: RewardModelScorer(m.to(args.device, dtype), tok, args.max_len, args.batch_size)  # noqa: E731
    out = {"dense": (scorer(dense), n_params(dense))}
    merged = make_mergeable(_perturbed(upcycle(dense, 4, min(args.top_k, 4), seed=args.seed)), alpha=0.5)
    export_merged(merged, tok, workdir / "merged")
    reloaded, tok2 = load_reward_model(workdir / "merged", dtype=dtype)
    out["merged UMM (4e)"] = (RewardModelScorer(reloaded.to(args.device), tok2, args.max_len, args.batch_size),
                              n_params(reloaded))
    for n in (2, 4, 6):
        moe = _perturbed(upcycle(dense, n, min(args.top_k, n), seed=args.seed)).eval()
        out[f"MoE {n}e top{min(args.top_k, n)}"] = (scorer(moe), n_params(moe))
    members = [make_reward_model(args.family, tok, seed=args.seed + 1 + i, **sizes).eval() for i in range(4)]
    out["ensemble x4 (mean)"] = (EnsembleScorer([scorer(m) for m in members], "mean"),
                                 sum(n_params(m) for m in members))
    return out


@torch.no_grad()
def _perturbed(moe):
    g = torch.Generator().manual_seed(1234)
    for layer in moe_layers(moe):
        for p in layer.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.device, p.dtype) * 0.01)
    return moe


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(variants: dict, prompts: list[str], responses: list[str], rounds: int, device: str
                  ) -> dict[str, dict[str, list[float]]]:
    """Warm up every variant once, then `rounds` interleaved timed passes.

    Returns:
        {"wall": {name: [seconds per pass]}, "cpu": {name: [process CPU seconds per pass]}}. On a shared CPU machine
        the CPU time is the steadier measure of the work a pass costs (wall time includes waiting for the cores).
    """
    names = list(variants)
    for name in names:
        variants[name][0].score(prompts, responses)
    times = {"wall": {n: [] for n in names}, "cpu": {n: [] for n in names}}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]  # rotate who goes first
        for name in order:
            _sync(device)
            w0, c0 = time.perf_counter(), time.process_time()
            variants[name][0].score(prompts, responses)
            _sync(device)
            times["wall"][name].append(time.perf_counter() - w0)
            times["cpu"][name].append(time.process_time() - c0)
    return times


def _paired(dense: list[float], other: list[float]) -> float:
    """Median over rounds of dense_time / variant_time (rounds are adjacent in time, so load hits both alike)."""
    return statistics.median(d / v for d, v in zip(dense, other))


def report(variants: dict, times: dict, n_seqs: int) -> list[dict]:
    """Per variant: params, median seq/s by wall and by CPU time, and throughput relative to dense."""
    base_params = variants["dense"][1]
    rows = []
    for name, (_, params) in variants.items():
        wall, cpu = times["wall"][name], times["cpu"][name]
        rows.append({"variant": name, "params": params, "params_vs_dense": params / base_params,
                     "seq_per_s_wall": n_seqs / statistics.median(wall),
                     "seq_per_s_cpu": n_seqs / statistics.median(cpu),
                     "vs_dense_wall": _paired(times["wall"]["dense"], wall),
                     "vs_dense_cpu": _paired(times["cpu"]["dense"], cpu),
                     "wall_s": wall, "cpu_s": cpu})
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'variant':<22}{'params':>12}{'x dense':>9}{'seq/s wall':>12}{'seq/s cpu':>11}"
          f"{'x dense wall':>14}{'x dense cpu':>13}")
    for r in rows:
        print(f"{r['variant']:<22}{r['params']:>12,}{r['params_vs_dense']:>9.2f}{r['seq_per_s_wall']:>12.1f}"
              f"{r['seq_per_s_cpu']:>11.1f}{r['vs_dense_wall']:>14.3f}{r['vs_dense_cpu']:>13.3f}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    prompts, responses = make_inputs(args.num_seqs, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tok = train_tokenizer(prompts + responses, args.vocab, Path(tmp) / "tok")
        variants = build_variants(args, tok, Path(tmp))
        times = time_variants(variants, prompts, responses, args.rounds, args.device)
    rows = report(variants, times, args.num_seqs)
    result = {"args": vars(args), "device": _device_name(args.device), "torch_threads": torch.get_num_threads(),
              "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(rows)
    merged = next(r for r in rows if r["variant"].startswith("merged"))
    print(f"merged/dense throughput: {merged['vs_dense_wall']:.3f} wall, {merged['vs_dense_cpu']:.3f} CPU time "
          f"(goal >= 0.97); wrote {out}")
    return result


def _device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


if __name__ == "__main__":
    main()
