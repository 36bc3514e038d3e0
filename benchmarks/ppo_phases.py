"""PPO benchmark: per-phase seconds, weight-sync share, vLLM vs HF tokens/s, peak memory, and reward hacking.

    python -m benchmarks.ppo_phases --preset tiny --run.output_dir runs/bench [--ppo.steps 60] [--bench.kl 0,0.05]

1. Builds (or reuses, with the compare job's stage cache) the testbed world, the SFT policy and the dense proxy RM.
2. Runs PPO against the dense proxy once per KL coefficient (default 0 and 0.05) with the testbed gold watching.
3. Reports, per run: the gold peak (step, value, KL there), the final gold, the drop from the peak, proxy first -> last;
   and from the kl=0 run the mean seconds of every phase (step 1 excluded: it includes lazy start-up) and the
   weight-sync share of the step time.
4. Times vLLM and HF `generate` on the same prompts in one process pair (tokens/s ratio).
Writes `<output_dir>/bench/ppo_phases.json` and prints a Markdown summary.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import ray

from jobs.common import init_ray, parse_job_args
from umm_ray import stages as S
from umm_ray.config import Config
from umm_ray.graph import StageGraph
from umm_ray.pipeline import StageRunner
from umm_ray.reward_source import RewardSource

SMOOTH = 5  # steps in the moving average used to locate the gold peak (per-step gold is a noisy batch mean)


def build_world(cfg: Config) -> dict:
    """prepare -> sft -> pairs -> dense RM, cached exactly like jobs.compare (the same stage graph)."""
    rm = StageGraph(cfg, StageRunner(Path(cfg.run.output_dir), cfg)).rm("dense")
    return {"policy": S.policy_path(cfg), "proxy": rm["model"], "prompts": S.ppo_prompts(cfg)}


def moving_average(xs: list[float], k: int) -> list[float]:
    """Trailing mean over up to k values (same length as xs)."""
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def hacking_summary(rows: list[dict]) -> dict:
    """Gold peak (smoothed), final gold, drop, KL at both, proxy first -> last, from one run's metrics rows."""
    gold = moving_average([r["gold_reward"] for r in rows], SMOOTH)
    proxy = moving_average([r["proxy_reward"] for r in rows], SMOOTH)
    peak = max(range(len(gold)), key=gold.__getitem__)
    return {"steps": len(rows), "gold_start": rows[0]["gold_reward"], "gold_peak": gold[peak],
            "gold_peak_step": rows[peak]["step"], "kl_k2_at_peak": rows[peak]["kl_k2"], "gold_final": gold[-1],
            "gold_drop_from_peak": gold[peak] - gold[-1], "kl_k2_final": rows[-1]["kl_k2"],
            "kl_k1_final": rows[-1]["kl_k1"], "proxy_start": proxy[0], "proxy_final": proxy[-1],
            "response_length_start": rows[0]["response_length"], "response_length_final": rows[-1]["response_length"],
            "smoothing_window": SMOOTH}


def phase_summary(rows: list[dict]) -> dict:
    """Mean seconds per phase over steps 2.. (step 1 pays actor start-up), the sync share and generation tokens/s.

    Checkpoint saves happen every K steps outside the step timer; they are reported apart (mean seconds per save).
    """
    body = rows[1:] or rows
    keys = sorted({k for r in body for k in r if k.startswith("time/") and k != "time/last_checkpoint"})
    means = {k[5:]: sum(r.get(k) or 0.0 for r in body) / len(body) for k in keys}
    step = means.pop("step")
    saves = sorted({r["time/last_checkpoint"] for r in rows if r.get("time/last_checkpoint")})
    return {"seconds_per_step": step, "phases": means, "share": {k: v / step for k, v in means.items()},
            "sync_share": means.get("sync", 0.0) / step, "checkpoint_save_seconds": saves,
            "tokens_per_s": sum(r["tokens_per_s"] for r in body) / len(body)}


def engine_ratio(cfg: Config, policy: str, prompts: list[str], repeats: int = 5) -> dict:
    """Generated tokens/s of vLLM and HF `generate` on the same prompts, calls interleaved so that load changes on a
    shared machine hit both engines alike (one warm-up call each first)."""
    from umm_ray.actors.rollout import RolloutActor

    actors = {b: ray.remote(RolloutActor).options(num_cpus=1).remote(
        policy, backend=b, max_new_tokens=cfg.rollout.max_new_tokens, temperature=1.0) for b in ("vllm", "hf")}
    ray.get([a.generate.remote(prompts[:4], n=1, seed=0) for a in actors.values()])
    tokens, seconds = {b: 0 for b in actors}, {b: 0.0 for b in actors}
    for i in range(repeats):
        for b, a in actors.items():
            t0 = time.perf_counter()
            roll = ray.get(a.generate.remote(prompts, n=1, seed=i + 1))
            seconds[b] += time.perf_counter() - t0
            tokens[b] += sum(len(r) for r in roll.response_ids)
    for a in actors.values():
        ray.kill(a)
    out = {b: tokens[b] / seconds[b] for b in actors}
    out["vllm_over_hf"] = out["vllm"] / out["hf"]
    out["prompts"], out["repeats"] = len(prompts), repeats
    return out


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    """Gold and proxy (smoothed) against step and against sqrt(KL k2), one line per KL coefficient."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for kl, rows in runs.items():
        steps = [r["step"] for r in rows]
        d = [max(r["kl_k2"], 0.0) ** 0.5 for r in rows]
        for key, style in (("gold_reward", "-"), ("proxy_reward", "--")):
            ys = moving_average([r[key] for r in rows], SMOOTH)
            axes[0].plot(steps, ys, style, label=f"{key.split('_')[0]} (kl_coef {kl})")
            axes[1].plot(d, ys, style, label=f"{key.split('_')[0]} (kl_coef {kl})")
    axes[0].set_xlabel("PPO step")
    axes[1].set_xlabel("sqrt(KL k2)")
    for ax in axes:
        ax.set_ylabel(f"reward ({SMOOTH}-step mean)")
        ax.legend(fontsize=8)
    fig.suptitle("PPO on the dense proxy: proxy rises, gold peaks then falls")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = ["| kl_coef | gold start | gold peak (step, KL k2) | gold final | drop | KL k2 final "
             "| proxy start -> final |",
             "|---|---|---|---|---|---|---|"]
    for kl, h in result["hacking"].items():
        lines.append(f"| {kl} | {h['gold_start']:.3f} | {h['gold_peak']:.3f} ({h['gold_peak_step']}, "
                     f"{h['kl_k2_at_peak']:.2f}) | {h['gold_final']:.3f} | {h['gold_drop_from_peak']:.3f} | "
                     f"{h['kl_k2_final']:.2f} | {h['proxy_start']:.3f} -> {h['proxy_final']:.3f} |")
    p = result["phases"]
    lines += ["", f"seconds per step {p['seconds_per_step']:.2f}; sync share {100 * p['sync_share']:.1f}%; "
              f"generation {p['tokens_per_s']:.0f} tokens/s; checkpoint saves {p['checkpoint_save_seconds']} s",
              "", "| phase | seconds | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {100 * p['share'][k]:.1f}% |" for k, v in sorted(p["phases"].items())]
    e = result.get("engines")
    if e:
        lines += ["", f"vLLM {e['vllm']:.0f} tok/s, HF generate {e['hf']:.0f} tok/s: ratio {e['vllm_over_hf']:.2f}x"]
    lines += ["", f"peak memory (MiB): {json.dumps(result['peak_memory_mb'])}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    import dataclasses

    from umm_ray.ppo.driver import run_ppo  # heavy: DeepSpeed, vLLM
    from umm_ray.data.prompts import load_prompts
    from umm_ray.report.metrics import read_metrics

    argv = list(sys.argv[1:] if argv is None else argv)
    kls = [0.0, 0.05]
    if "--bench.kl" in argv:  # benchmark-only flag, not part of the job config
        i = argv.index("--bench.kl")
        kls = [float(x) for x in argv[i + 1].split(",")]
        del argv[i:i + 2]
    cfg = parse_job_args(argv, "ppo_phases")
    init_ray(cfg)
    world = build_world(cfg)
    bench = Path(cfg.run.output_dir) / "bench"
    result = {"config": {"steps": cfg.ppo.steps, "rollout_batch_size": cfg.ppo.rollout_batch_size,
                         "max_new_tokens": cfg.rollout.max_new_tokens, "backend": cfg.rollout.backend,
                         "world_size": cfg.ppo.world_size, "zero_stage": cfg.ppo.zero_stage},
               "hacking": {}, "peak_memory_mb": {}}
    runs = {}
    for kl in kls:
        run_cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, kl_coef=kl))
        proxy = RewardSource.parse(world["proxy"])
        out = run_ppo(run_cfg, world["policy"], proxy, S.gold_source(cfg), world["prompts"], bench / f"kl{kl:g}")
        rows = runs[f"{kl:g}"] = read_metrics(out / "metrics.jsonl")
        result["hacking"][f"{kl:g}"] = hacking_summary(rows)
        result["peak_memory_mb"][f"kl{kl:g}"] = json.loads((out / "summary.json").read_text())["peak_memory_mb"]
        if kl == kls[0]:
            result["phases"] = phase_summary(rows)
    prompts = [p.prompt for p in load_prompts(world["prompts"])][:cfg.ppo.rollout_batch_size]
    result["engines"] = engine_ratio(cfg, world["policy"], prompts)
    bench.mkdir(parents=True, exist_ok=True)
    (bench / "ppo_phases.json").write_text(json.dumps(result, indent=1))
    plot(runs, bench / "ppo_hacking.png")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
