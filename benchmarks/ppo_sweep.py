"""PPO settings sweep: under which settings does the gold rise, peak, then fall when PPO optimises the dense proxy?

    python -m benchmarks.ppo_sweep --preset tiny --run.output_dir runs/sweep \\
        --sweep.grid "ppo.actor_lr=1e-5,3e-5 ppo.kl_coef=0,0.05" [--sweep.grid "ppo.entropy_coef=0.01"] \\
        [--sweep.name tiny] [--ppo.steps 40 ...]

Each `--sweep.grid` is a space-separated list of axes `key=v1,v2,...` whose cartesian product is run; several
`--sweep.grid` flags are run one after the other (a one-axis-at-a-time sweep is one flag per axis). Keys may be `ppo.*`,
`rollout.*` or `run.seed` (the seed of the PPO run only: the world below is built once, from the base config).
Every other flag is the usual job config (`--preset`, `--section.key value`) and is the base of every point.

1. The world: with `--reward.proxy_path` set, the user's own policy (`--ppo.policy_path`, else `<out>/sft/model`),
   prompts (`--ppo.prompts`), proxy and gold (`--reward.gold`), resolved like `jobs.ppo`; otherwise the testbed world,
   SFT policy and dense proxy RM, built or reused through the compare job's stage cache (`benchmarks.ppo_phases`).
2. One PPO run per grid point into `<output_dir>/sweep/<name>/<label>/` (a finished run there is reused).
3. Per run (`curve_summary`): gold start, smoothed peak and where it is, the rise with its 95% CI, the final gold, the
   drop from the peak with its CI, KL at the peak, wall seconds and seconds per step, and whether the curve has the
   over-optimisation shape (rise > CI, peak at >= 10% of the steps, drop > CI).
Writes `<output_dir>/sweep/<name>/ppo_sweep.json` and `ppo_sweep.md` after every run and prints the Markdown table.
docs/ppo-sweep.md has the sweeps as run for the presets and what was chosen.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import sys
import time
from pathlib import Path

from umm_ray.report.fits import smooth
from umm_ray.report.verdict import ppo_window

Z95 = 1.959964  # two-sided 95% normal quantile
MIN_PEAK_FRAC = 0.1  # the peak must come after this fraction of the steps (not a lucky first batch)
GRID_SECTIONS = ("ppo.", "rollout.", "run.seed")  # what a point may change: the world is built once, from the base


def parse_grid(specs: list[str]) -> list[dict[str, str]]:
    """Grid points from `--sweep.grid` specs: each spec's axes ('key=v1,v2') multiplied out; specs concatenated.

    Values stay strings: each point becomes `--key value` CLI overrides, so the config parser types and checks them.
    A point repeated by two specs is run once.
    """
    points: list[dict[str, str]] = []
    for spec in specs:
        axes = []
        for axis in spec.split():
            key, sep, values = axis.partition("=")
            if not sep or not values:
                raise ValueError(f"--sweep.grid: {axis!r} is not key=v1,v2,...")
            if not key.startswith(GRID_SECTIONS):
                raise ValueError(f"--sweep.grid: {key!r} is not a ppo.*, rollout.* or run.seed key (the world is "
                                 f"built once, from the base config)")
            axes.append([(key, v) for v in values.split(",")])
        for combo in itertools.product(*axes):
            point = dict(combo)
            if point not in points:
                points.append(point)
    return points or [{}]


def label(point: dict[str, str]) -> str:
    """A directory-safe name for a grid point, e.g. 'actor_lr=1e-5,kl_coef=0.05' ('base' for no overrides)."""
    return ",".join(f"{k.rpartition('.')[2]}={v}" for k, v in point.items()) or "base"


def _window_mean(values: list[float], lo: int, hi: int) -> tuple[list[int], float]:
    """Indices lo..hi clipped to the curve, and the mean of values there (mirrors `fits.smooth`'s edge windows)."""
    idx = list(range(max(0, lo), min(len(values), hi + 1)))
    return idx, sum(values[i] for i in idx) / len(idx)


def _diff_se(se: list[float], a: list[int], b: list[int]) -> float:
    """Standard error of mean(x[a]) - mean(x[b]) for independent per-step means with standard errors `se`.

    The windows may overlap (a peak near the start): shared steps enter with weight 1/|a| - 1/|b|, not twice.
    """
    w = [0.0] * len(se)
    for i in a:
        w[i] += 1.0 / len(a)
    for i in b:
        w[i] -= 1.0 / len(b)
    return math.sqrt(sum((wi * s) ** 2 for wi, s in zip(w, se)))


def curve_summary(rows: list[dict], batch_size: int, window: int | None = None) -> dict:
    """The over-optimisation shape of one PPO run's gold curve, with 95% confidence intervals.

    Smoothing is the report's (`fits.smooth`, a centred moving average, window `verdict.ppo_window`: ~1/8 of the
    steps), so 'start' and 'peak' mean what they mean in the compare report. Each step's gold is the mean over
    `batch_size` responses; its standard error is gold_reward_std / sqrt(batch_size), steps independent given the
    policy. A CI is then Z95 times the standard error of a difference of two window means (`_diff_se`).
    The peak is the maximum of the smoothed curve, which the noise biases upward: the rise CI is a minimum bar.

    Args:
        rows: metrics rows (step, gold_reward, gold_reward_std, proxy_reward, kl_k2) in step order.
        batch_size: responses per step (ppo.rollout_batch_size).
        window: smoothing window; None = `ppo_window(len(rows))`.
    """
    rows = [r for r in rows if r.get("gold_reward") is not None]  # ppo.gold_every > 1: the gold-scored steps only
    gold = [r["gold_reward"] for r in rows]
    se = [r["gold_reward_std"] / math.sqrt(batch_size) for r in rows]
    n = len(rows)
    w = ppo_window(n) if window is None else window
    h = w // 2
    g = [float(x) for x in smooth(gold, w)]
    peak = max(range(n), key=g.__getitem__)
    start_idx, start = _window_mean(gold, 0, h)
    peak_idx, _ = _window_mean(gold, peak - h, peak + h)
    final_idx, final = _window_mean(gold, n - 1 - h, n - 1)
    rise, rise_ci = g[peak] - start, Z95 * _diff_se(se, peak_idx, start_idx)
    drop, drop_ci = g[peak] - final, Z95 * _diff_se(se, peak_idx, final_idx)
    steps = rows[-1]["step"]
    peak_frac = rows[peak]["step"] / steps
    rises, late, falls = rise > rise_ci, peak_frac >= MIN_PEAK_FRAC, drop > drop_ci
    proxy = smooth([r["proxy_reward"] for r in rows], w)  # the optimised score: did PPO move it at all?
    return {"steps": steps, "window": w, "gold_step1": gold[0], "gold_start": start, "gold_peak": g[peak],
            "peak_step": rows[peak]["step"], "peak_frac": peak_frac, "rise": rise, "rise_ci95": rise_ci,
            "gold_final": final, "drop": drop, "drop_ci95": drop_ci, "kl_k2_at_peak": rows[peak]["kl_k2"],
            "kl_k2_final": rows[-1]["kl_k2"], "proxy_start": float(proxy[0]), "proxy_final": float(proxy[-1]),
            "rises": rises, "peak_late": late, "falls": falls,
            "shape_ok": rises and late and falls}


def step_seconds(rows: list[dict]) -> float:
    """Mean seconds of a PPO step over steps 2.. (step 1 pays the actors' lazy start-up)."""
    body = rows[1:] or rows
    return sum(r.get("time/step") or 0.0 for r in body) / len(body)


def markdown(name: str, results: list[dict]) -> str:
    """The sweep's table: one row per grid point."""
    lines = [f"PPO sweep `{name}` (gold: smoothed, centred window; CI: 95%, per-step standard errors)", "",
             "| setting | gold start | peak (step, frac) | rise ± CI | final | drop ± CI | KL k2 at peak | "
             "proxy start -> final | wall s | s/step | shape |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["summary"]
        verdict = "yes" if s["shape_ok"] else "no: " + ", ".join(
            why for ok, why in ((s["rises"], "no rise"), (s["peak_late"], "early peak"), (s["falls"], "no fall"))
            if not ok)
        lines.append(f"| {r['label']} | {s['gold_start']:.3f} | {s['gold_peak']:.3f} ({s['peak_step']}, "
                     f"{s['peak_frac']:.2f}) | {s['rise']:+.3f} ± {s['rise_ci95']:.3f} | {s['gold_final']:.3f} | "
                     f"{s['drop']:+.3f} ± {s['drop_ci95']:.3f} | {s['kl_k2_at_peak']:.2f} | "
                     f"{s['proxy_start']:.2f} -> {s['proxy_final']:.2f} | {r['wall_s']:.0f} | "
                     f"{r['step_s']:.2f} | {verdict} |")
    return "\n".join(lines)


def split_sweep_args(argv: list[str]) -> tuple[list[str], list[str], str]:
    """(grid specs, the job's own argv, sweep name) from the command line: `--sweep.*` is not job config."""
    specs, rest, name = [], [], "sweep"
    i = 0
    while i < len(argv):
        if argv[i] in ("--sweep.grid", "--sweep.name") and i + 1 < len(argv):
            if argv[i] == "--sweep.grid":
                specs.append(argv[i + 1])
            else:
                name = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--sweep."):
            raise ValueError(f"unknown sweep flag {argv[i]!r} (use --sweep.grid or --sweep.name, each with a value)")
        rest.append(argv[i])
        i += 1
    return specs, rest, name


def point_argv(point: dict[str, str]) -> list[str]:
    """A grid point as CLI overrides."""
    return [x for k, v in point.items() for x in (f"--{k}", v)]


def resolve_world(cfg) -> tuple[str, object, object, str]:
    """(policy, proxy, gold, prompts): the user's own with reward.proxy_path set, else the testbed's dense proxy."""
    from umm_ray import stages as S  # local: the helpers above stay importable without ray/torch (tests)
    from umm_ray.reward_source import RewardSource

    if cfg.reward.proxy_path:
        from jobs.ppo import resolve_inputs  # local: loads torch and the PPO driver

        return resolve_inputs(cfg)
    from benchmarks.ppo_phases import build_world  # local: loads ray and the stage graph

    world = build_world(cfg)
    return world["policy"], RewardSource.parse(world["proxy"]), S.gold_source(cfg), world["prompts"]


def point_settings(cfg) -> dict:
    """What a PPO run's curve depends on beyond the world: the ppo and rollout sections and the seed."""
    return json.loads(json.dumps({"ppo": dataclasses.asdict(cfg.ppo), "rollout": dataclasses.asdict(cfg.rollout),
                                  "seed": cfg.run.seed}))


def run_point(cfg, world: tuple, out: Path) -> tuple[list[dict], float]:
    """One PPO run into `out` (metrics rows, wall seconds); a finished run there with the same settings is read back.

    Anything else there (unfinished, or run with other base flags under the same label) is started over rather than
    resumed: its wall seconds must be one whole run's, and its curve this point's.
    """
    import torch  # local, like every heavy import here: the pure helpers are tested without it

    from umm_ray.ppo.driver import run_ppo  # heavy: DeepSpeed, vLLM
    from umm_ray.report.metrics import read_metrics

    done, settings = out / "sweep_point.json", point_settings(cfg)
    if done.is_file() and json.loads(done.read_text()).get("settings") == settings:
        return read_metrics(out / "metrics.jsonl"), json.loads(done.read_text())["wall_s"]
    shutil.rmtree(out, ignore_errors=True)
    policy, proxy, gold, prompts = world
    torch.manual_seed(cfg.run.seed)
    t0 = time.perf_counter()
    run_ppo(cfg, policy, proxy, gold, prompts, out)
    wall = time.perf_counter() - t0
    done.write_text(json.dumps({"wall_s": wall, "settings": settings}))
    return read_metrics(out / "metrics.jsonl"), wall


def main(argv: list[str] | None = None) -> list[dict]:
    from jobs.common import init_ray, parse_job_args  # local: loads the config and Ray helpers

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        specs, rest, name = split_sweep_args(argv)
        points = parse_grid(specs)
    except ValueError as e:
        print(f"ppo_sweep: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    # Ray Train workers and actors run in other working directories: a relative run.output_dir must be made absolute
    rest += ["--run.output_dir", str(Path(parse_job_args(rest, "ppo_sweep").run.output_dir).resolve())]
    base = parse_job_args(rest, "ppo_sweep")
    cfgs = [parse_job_args(rest + point_argv(p), "ppo_sweep") for p in points]  # every point checked before compute
    init_ray(base)
    world = resolve_world(base)
    root = Path(base.run.output_dir) / "sweep" / name
    root.mkdir(parents=True, exist_ok=True)
    results = []
    for point, cfg in zip(points, cfgs):
        rows, wall = run_point(cfg, world, root / label(point))
        results.append({"label": label(point), "point": point, "wall_s": wall, "step_s": step_seconds(rows),
                        "settings": point_settings(cfg),
                        "summary": curve_summary(rows, cfg.ppo.rollout_batch_size)})
        table = markdown(name, results)
        (root / "ppo_sweep.json").write_text(json.dumps({"command": argv, "results": results}, indent=1))
        (root / "ppo_sweep.md").write_text(table + "\n")
        print(table.splitlines()[-1], flush=True)
    print(markdown(name, results))
    return results


if __name__ == "__main__":
    main()
