"""PPO settings sweep: under which settings does the gold rise, peak, then fall when PPO optimises the dense proxy?

    python -m benchmarks.ppo_sweep --preset tiny --run.output_dir runs/sweep \\
        --sweep.grid "ppo.actor_lr=1e-5,3e-5 ppo.kl_coef=0,0.05" [--sweep.grid "ppo.entropy_coef=0.01"] \\
        [--sweep.name tiny] [--ppo.steps 40 ...]

Each `--sweep.grid` is a space-separated list of axes `key=v1,v2,...` whose cartesian product is run; several
`--sweep.grid` flags are run one after the other (a one-axis-at-a-time sweep is one flag per axis). Keys may be `ppo.*`,
`rollout.*`, `run.seed` (the seed of the PPO run only: the world below is built once, from the base config) or the PPO
roles' `resources.*` (e.g. `resources.policy_cpus=1,2` times the policy's threads side by side).
Every other flag is the usual job config (`--preset`, `--section.key value`) and is the base of every point.
`--sweep.worlds 0,1,2,3` repeats the whole grid on several testbed worlds, world k built with `run.seed k` in
`<output_dir>/world<k>/` (its PPO runs seeded k too, unless the grid sets run.seed): a setting chosen on one world is
one draw (another CPU's rounding builds another world), so the table then counts, per setting, the worlds it works on.

1. The world: with `--reward.proxy_path` set, the user's own policy (`--ppo.policy_path`, else `<out>/sft/model`),
   prompts (`--ppo.prompts`), proxy and gold (`--reward.gold`), resolved like `jobs.ppo`; otherwise the testbed world,
   SFT policy and dense proxy RM, built or reused through the compare job's stage cache (`benchmarks.ppo_phases`).
2. One PPO run per grid point into `<output_dir>/sweep/<name>/<label>/` (a finished run there is reused).
3. Per run (`curve_summary`): gold start, smoothed peak and where it is, the rise with its 95% CI, the final gold, the
   drop from the peak with its CI, KL at the peak, wall seconds and seconds per step, and whether the curve has the
   over-optimisation shape (rise and drop intervals above 0, peak at >= 10% of the steps). The intervals are the
   compare report's (`report.uncertainty.ppo_intervals`), so this table and the report's verdict cannot disagree.
Writes `<output_dir>/sweep/<name>/ppo_sweep.json` and `ppo_sweep.md` after every run and prints the Markdown table
(with several worlds, also the per-setting count of worlds with the shape).
docs/ppo-sweep.md has the sweeps as run for the presets and what was chosen.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
import sys
import time
from pathlib import Path

from umm_ray.algo.stats import wilson_interval
from umm_ray.report.fits import smooth
from umm_ray.report.records import PPOCurve
from umm_ray.report.uncertainty import PPOData, ppo_intervals
from umm_ray.report.verdict import never_rose, ppo_window

MIN_PEAK_FRAC = 0.1  # the peak must come after this fraction of the steps (not a lucky first batch)
# What a point may change: the world is built once, from the base; the PPO roles' resources (threads, placement) may
# vary, so a sweep can time them side by side, but resources.train_* only acts on the world's training stages.
GRID_SECTIONS = ("ppo.", "rollout.", "run.seed") + tuple(f"resources.{role}_" for role in
                                                        ("policy", "rollout", "reference", "proxy", "gold"))


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
                raise ValueError(f"--sweep.grid: {key!r} is not a ppo.*, rollout.*, run.seed or PPO role resources.* "
                                 f"key (the world is built once, from the base config)")
            axes.append([(key, v) for v in values.split(",")])
        for combo in itertools.product(*axes):
            point = dict(combo)
            if point not in points:
                points.append(point)
    return points or [{}]


def label(point: dict[str, str]) -> str:
    """A directory-safe name for a grid point, e.g. 'actor_lr=1e-5,kl_coef=0.05' ('base' for no overrides)."""
    return ",".join(f"{k.rpartition('.')[2]}={v}" for k, v in point.items()) or "base"


def curve_summary(rows: list[dict], batch_size: int) -> dict:
    """The over-optimisation shape of one PPO run's gold curve, with the compare report's own 95% intervals.

    Everything comes from `report.uncertainty.ppo_intervals` on the run's `PPOCurve`, the statistic the report's
    verdict reads: the gold is smoothed as the report smooths it (`fits.smooth`, window `verdict.ppo_window`, ~1/8 of
    the steps), 'start' is the smoothed first value, the rise is the smoothed gold at the point estimate's peak minus
    the start, and its interval bootstraps each step's rollout noise (gold_reward_std / sqrt(batch_size)) with the
    peak held at that step, so the maximum of noisy draws does not lift it above 0. 'Rises' is exactly the report's
    `not never_rose(rise)`: a run this table calls a rise the report does not call a collapse, and the reverse.

    Args:
        rows: metrics rows (step, gold_reward, gold_reward_std, proxy_reward, kl_k2) in step order; rows without a
            gold score (ppo.gold_every > 1) are left out.
        batch_size: responses per step (ppo.rollout_batch_size).
    """
    curve = PPOCurve.from_metrics(rows, batch_size=batch_size)
    ci = ppo_intervals(PPOData.from_curves([curve]))
    n = len(curve.steps)
    w = ppo_window(n)
    g = [float(x) for x in smooth(curve.gold, w)]
    peak = max(range(n), key=g.__getitem__)
    rise, drop = ci["rise"], ci["drop"]
    steps = curve.steps[-1]
    peak_frac = curve.steps[peak] / steps
    rises, late, falls = not never_rose(rise), peak_frac >= MIN_PEAK_FRAC, drop.lo > 0
    proxy = smooth(curve.proxy, w)  # the optimised score: did PPO move it at all?
    return {"steps": steps, "window": w, "gold_step1": curve.gold[0], "gold_start": g[0], "gold_peak": g[peak],
            "peak_step": curve.steps[peak], "peak_frac": peak_frac, "rise": rise.value, "rise_ci": [rise.lo, rise.hi],
            "gold_final": g[-1], "drop": drop.value, "drop_ci": [drop.lo, drop.hi], "kl_k2_at_peak": curve.kl[peak],
            "kl_k2_final": curve.kl[-1], "proxy_start": float(proxy[0]), "proxy_final": float(proxy[-1]),
            "rises": rises, "peak_late": late, "falls": falls,
            "shape_ok": rises and late and falls}


def step_seconds(rows: list[dict]) -> float:
    """Mean seconds of a PPO step over steps 2.. (step 1 pays the actors' lazy start-up)."""
    body = rows[1:] or rows
    return sum(r.get("time/step") or 0.0 for r in body) / len(body)


def _ci(value: float, ci: list[float]) -> str:
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def markdown(name: str, results: list[dict]) -> str:
    """The sweep's table: one row per grid point."""
    lines = [f"PPO sweep `{name}` (gold: smoothed, centred window; [95% bootstrap interval] of the rollout noise, "
             "as in the compare report)", "",
             "| setting | gold start | peak (step, frac) | rise [CI] | final | drop [CI] | KL k2 at peak | "
             "proxy start -> final | wall s | s/step | shape |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["summary"]
        verdict = "yes" if s["shape_ok"] else "no: " + ", ".join(
            why for ok, why in ((s["rises"], "no rise"), (s["peak_late"], "early peak"), (s["falls"], "no fall"))
            if not ok)
        lines.append(f"| {r['label']} | {s['gold_start']:.3f} | {s['gold_peak']:.3f} ({s['peak_step']}, "
                     f"{s['peak_frac']:.2f}) | {_ci(s['rise'], s['rise_ci'])} | {s['gold_final']:.3f} | "
                     f"{_ci(s['drop'], s['drop_ci'])} | {s['kl_k2_at_peak']:.2f} | "
                     f"{s['proxy_start']:.2f} -> {s['proxy_final']:.2f} | {r['wall_s']:.0f} | "
                     f"{r['step_s']:.2f} | {verdict} |")
    return "\n".join(lines)


def robustness(results: list[dict]) -> str:
    """Per setting, on how many worlds its curve rises, falls and has the whole shape (a table; '' for one world).

    The last column is the share of worlds with the whole shape and its 95% Wilson interval: with a handful of worlds
    it is wide (3 of 4: 0.75 [0.30, 0.95]), so two settings a world apart are not told apart by the counts alone.
    """
    worlds = sorted({r["world"] for r in results if r.get("world") is not None})
    if len(worlds) < 2:
        return ""
    lines = [f"Per setting over worlds {', '.join(map(str, worlds))} (run.seed of the world's build):", "",
             "| setting | worlds run | rises | falls | whole shape | shape share [95% Wilson] |",
             "|---|---|---|---|---|---|"]
    for setting in dict.fromkeys(r["setting"] for r in results):
        runs = [r["summary"] for r in results if r["setting"] == setting]
        shaped = sum(s["shape_ok"] for s in runs)
        share = wilson_interval(shaped, len(runs))
        lines.append(f"| {setting} | {len(runs)} | {sum(s['rises'] for s in runs)} | {sum(s['falls'] for s in runs)} "
                     f"| {shaped} | {share.value:.2f} [{share.lo:.2f}, {share.hi:.2f}] |")
    return "\n".join(lines)


def parse_worlds(spec: str | None) -> list[int | None]:
    """World seeds from `--sweep.worlds 0,1,2` ([None] = the one world of the base config)."""
    if spec is None:
        return [None]
    try:
        worlds = [int(x) for x in spec.split(",")]
    except ValueError:
        raise ValueError(f"--sweep.worlds: {spec!r} is not a comma-separated list of integer seeds") from None
    if len(set(worlds)) != len(worlds) or min(worlds) < 0:
        raise ValueError(f"--sweep.worlds: {spec!r} repeats a seed or has a negative one")
    return worlds


def split_sweep_args(argv: list[str]) -> tuple[list[str], list[str], str, str | None]:
    """(grid specs, the job's own argv, sweep name, worlds spec or None): `--sweep.*` is not job config."""
    specs, rest, name, worlds = [], [], "sweep", None
    i = 0
    while i < len(argv):
        if argv[i] in ("--sweep.grid", "--sweep.name", "--sweep.worlds") and i + 1 < len(argv):
            if argv[i] == "--sweep.grid":
                specs.append(argv[i + 1])
            elif argv[i] == "--sweep.name":
                name = argv[i + 1]
            else:
                worlds = argv[i + 1]
            i += 2
            continue
        if argv[i].startswith("--sweep."):
            raise ValueError(f"unknown sweep flag {argv[i]!r} (use --sweep.grid, --sweep.name or --sweep.worlds, "
                             f"each with a value)")
        rest.append(argv[i])
        i += 1
    return specs, rest, name, worlds


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
        specs, rest, name, worlds_spec = split_sweep_args(argv)
        points, worlds = parse_grid(specs), parse_worlds(worlds_spec)
    except ValueError as e:
        print(f"ppo_sweep: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    # Ray Train workers and actors run in other working directories: a relative run.output_dir must be made absolute
    out = Path(parse_job_args(rest, "ppo_sweep").run.output_dir).resolve()
    base = parse_job_args(rest + ["--run.output_dir", str(out)], "ppo_sweep")
    if worlds != [None] and base.reward.proxy_path:
        print("ppo_sweep: --sweep.worlds builds testbed worlds; with --reward.proxy_path the world is your own",
              file=sys.stderr)
        raise SystemExit(2)

    def world_argv(w: int | None) -> list[str]:
        return ["--run.output_dir", str(out)] if w is None else ["--run.seed", str(w), "--run.output_dir",
                                                                  str(out / f"world{w}")]

    # every world and every point of it is checked before any compute
    world_bases = {w: parse_job_args(rest + world_argv(w), "ppo_sweep") for w in worlds}
    cfgs = {w: [parse_job_args(rest + world_argv(w) + point_argv(p), "ppo_sweep") for p in points] for w in worlds}
    tables = out / "sweep" / name  # the whole sweep's tables, beside the base world's runs (world<k>/ hold theirs)
    tables.mkdir(parents=True, exist_ok=True)
    init_ray(base)
    results = []
    for w in worlds:
        world = resolve_world(world_bases[w])
        root = Path(world_bases[w].run.output_dir) / "sweep" / name
        root.mkdir(parents=True, exist_ok=True)
        for point, cfg in zip(points, cfgs[w]):
            rows, wall = run_point(cfg, world, root / label(point))
            setting = label(point)
            results.append({"label": setting if w is None else f"world={w},{setting}", "setting": setting,
                            "world": w, "point": point, "wall_s": wall, "step_s": step_seconds(rows),
                            "settings": point_settings(cfg),
                            "summary": curve_summary(rows, cfg.ppo.rollout_batch_size)})
            table = markdown(name, results)
            summary = robustness(results)
            (tables / "ppo_sweep.json").write_text(json.dumps({"command": argv, "results": results}, indent=1))
            (tables / "ppo_sweep.md").write_text(table + "\n" + (f"\n{summary}\n" if summary else ""))
            print(table.splitlines()[-1], flush=True)
    print(markdown(name, results))
    if len(worlds) > 1:
        print("\n" + robustness(results))
    return results


if __name__ == "__main__":
    main()
