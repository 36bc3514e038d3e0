"""The compare job's stages as plain functions: each reads the config, calls the library, returns a JSON summary.

`jobs/compare.py` wires them in order with caching; they are kept here so the job reads top to bottom and every stage
can be run or tested on its own.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from umm_ray.config import Config

SHARED_HH = ("shared", "data", "hh-rlhf", "harmless-base", "test.jsonl.gz")


def _root(cfg: Config) -> Path:
    return Path(cfg.run.output_dir)


def uses_testbed(cfg: Config) -> bool:
    """The embedded world (prepare -> SFT -> gold-labelled pairs) unless rm.data names the user's own preferences."""
    return cfg.rm.data == "testbed"


def policy_path(cfg: Config) -> str:
    """The policy PPO starts from: ppo.policy_path, else the SFT stage's model."""
    return cfg.ppo.policy_path or str(_root(cfg) / "sft" / "model")


def ppo_prompts(cfg: Config) -> str:
    return cfg.ppo.prompts or str(_root(cfg) / "prepare" / "prompts_ppo.jsonl")


def check_own_data(cfg: Config) -> None:
    """With rm.data set the testbed stages are skipped, so the policy, prompts and gold must come from the user."""
    missing = []
    if not cfg.ppo.policy_path:
        missing.append("--ppo.policy_path (the SFT policy BoN samples from and PPO starts from)")
    if not cfg.ppo.prompts:
        missing.append("--ppo.prompts (prompt file or hub dataset; also BoN's unless --bon.prompts is set)")
    if cfg.reward.gold == "testbed":
        missing.append("--reward.gold (an HF reward model path or 'remote'; the testbed gold scores testbed prompts "
                       "only)")
    if missing:
        raise ValueError(f"compare with --rm.data {cfg.rm.data!r} (your own preferences) also needs: "
                         + "; ".join(missing))


def own_pairs(cfg: Config, out: Path) -> dict:
    """The user's preference data, split train/val/test by seed exactly as the RM stages split it, written to `out`
    so every RM is evaluated on the same held-out pairs."""
    from umm_ray.data import write_jsonl
    from umm_ray.train.reward import load_rm_data

    data = load_rm_data(cfg)
    splits = {"train": data.train, "val": data.val, "test": data.test}
    for split, rows in splits.items():
        write_jsonl(out / f"pairs_{split}.jsonl", rows)
    stats = {"source": data.source, "notes": data.notes, **{f"n_{k}": len(v) for k, v in splits.items()}}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def prepare(cfg: Config) -> dict:
    from umm_ray.testbed.prepare import prepare_world

    world = prepare_world(cfg)
    return json.loads(Path(world.world_json).read_text())


def sft(cfg: Config) -> dict:
    from umm_ray.testbed.prepare import world_paths
    from umm_ray.train.sft import run_sft

    model_dir = run_sft(cfg, world_paths(cfg.run.output_dir))
    return {"model": str(model_dir), **json.loads((_root(cfg) / "sft" / "eval.json").read_text())}


def pairs(cfg: Config, out: Path) -> dict:
    from jobs.pairs import run_pairs
    from umm_ray.testbed.prepare import world_paths

    world = world_paths(cfg.run.output_dir)
    return run_pairs(cfg, world.prompts_sft, _root(cfg) / "sft" / "model", out)


def train_rm(cfg: Config, kind: str, extra: dict, out: Path) -> dict:
    """Train one RM kind into `out`; returns {'model': path, 'moe': path (umm), 'manifest': path (ensemble), ...}."""
    from umm_ray.testbed.prepare import world_paths
    from umm_ray.train.reward import train_rm as train

    cfg = dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, kind=kind))
    if not uses_testbed(cfg) and not cfg.rm.base_path:  # own data: the RMs start from the user's policy
        cfg = dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, base_path=cfg.ppo.policy_path))
    if "num_experts" in extra:
        n = extra["num_experts"]
        cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, num_experts=n, top_k=min(cfg.moe.top_k, n)))
    result = train(cfg, world_paths(cfg.run.output_dir), kind=kind, stage_dir=out)
    summary = {"model": str(result.model_path), "eval": result.eval}
    if kind == "umm":
        summary["moe"] = str(out / "moe" / "model")
    if kind == "ensemble":
        summary["manifest"] = str(result.model_path)
    return summary


def proxy_specs(cfg: Config, rms: dict[str, dict]) -> dict[str, dict]:
    """Every proxy to evaluate: name -> {spec, stage, kind}. UMM stages also yield their unmerged MoE."""
    specs = {}
    for name, summary in rms.items():
        if name == "ensemble":
            manifest = summary["manifest"]
            for how, lam in (("mean", None), ("wco", None), ("uwo", cfg.compare.bon_uwo_lambda)):
                suffix = f"#{how}" + (f":{lam}" if lam is not None else "")
                specs[f"ensemble-{how}"] = {"spec": manifest + suffix, "stage": name, "kind": "ensemble"}
        elif name.startswith("umm"):
            n = name[3:]
            specs[f"umm-{n}"] = {"spec": summary["model"], "stage": name, "kind": "umm"}
            specs[f"moe-{n}"] = {"spec": summary["moe"], "stage": name, "kind": "moe"}
        else:
            specs[name] = {"spec": summary["model"], "stage": name, "kind": "dense"}
    return specs


def hh_pairs_path(cfg: Config) -> Path | None:
    """The real HH harmless file for accuracy, if configured or (auto) present beside the project."""
    if cfg.compare.hh_eval not in ("", "auto"):
        return Path(cfg.compare.hh_eval)
    if cfg.compare.hh_eval == "auto":
        for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
            cand = base.parent.joinpath(*SHARED_HH)
            if cand.is_file():
                return cand
    return None


def evaluate(cfg: Config, specs: dict[str, dict], out: Path) -> dict:
    """Held-out accuracy, parameter count and scoring throughput of every proxy, on the same test pairs."""
    from umm_ray.eval.rm_metrics import evaluate_rms

    return evaluate_rms(cfg, specs, _root(cfg) / "pairs" / "pairs_test.jsonl", out, hh_pairs_path(cfg))


def bon(cfg: Config, specs: dict[str, dict], out: Path) -> dict:
    """Best-of-N for every proxy on the same samples of bon.policy_path (default: the PPO starting policy)."""
    from umm_ray.data import load_prompts
    from umm_ray.eval.bon import run_bon

    prompts = None
    if not cfg.bon.prompts and not uses_testbed(cfg):  # own data: BoN samples the PPO prompts
        prompts = [p.prompt for p in load_prompts(cfg.ppo.prompts, limit=cfg.bon.n_prompts)]
    curves = run_bon(cfg, cfg.bon.policy_path or policy_path(cfg), {k: v["spec"] for k, v in specs.items()},
                     gold_spec=cfg.reward.gold, prompts=prompts, out_dir=out)
    return {k: c.to_dict() for k, c in curves.items()}


def ppo_proxies(cfg: Config, evals: dict, specs: dict[str, dict]) -> dict[str, dict]:
    """The proxies PPO runs against, resolving 'umm_best' to the UMM with the best validation accuracy."""
    chosen = {}
    for name in cfg.compare.ppo_rms:
        if name == "umm_best":
            umms = [k for k in specs if specs[k]["kind"] == "umm"]
            if not umms:
                continue
            name = max(umms, key=lambda k: (evals[k].get("acc_val", 0.0), -len(k)))
        if name not in specs:
            raise ValueError(f"compare.ppo_rms: {name!r} is not a trained RM; have {sorted(specs)}")
        spec = dict(specs[name])
        if name == "ensemble-uwo":  # PPO's UWO lambda differs from BoN's (Coste et al.: 0.1 vs 0.5)
            spec["spec"] = spec["spec"].split("#")[0] + f"#uwo:{cfg.ensemble.uwo_lambda}"
        chosen[name] = spec
    return chosen


def ppo(cfg: Config, spec: dict, out: Path, pool=None) -> dict:
    """One PPO run against `spec`; `pool` (a `RolePool`) lets consecutive runs share their actors."""
    from jobs.ppo import run_ppo
    from umm_ray.report.metrics import read_metrics

    t0 = time.perf_counter()
    run_ppo(cfg, policy_path(cfg), spec["spec"], cfg.reward.gold, ppo_prompts(cfg), out, pool=pool)
    rows = read_metrics(out / "metrics.jsonl")
    return {"spec": spec["spec"], "rows": rows, "seconds": time.perf_counter() - t0}


def report(cfg: Config, specs: dict[str, dict], evals: dict, bon_curves: dict, ppo_runs: dict, out: Path,
           notes: list[str]) -> Path:
    from umm_ray.algo.bon import BoNCurve
    from umm_ray.report.build import build_report
    from umm_ray.report.records import PPOCurve, RMResult

    results = []
    for name, spec in specs.items():
        e = evals.get(name, {})
        ppo_run = ppo_runs.get(name)
        results.append(RMResult(
            name=name, kind=spec["kind"], params=e.get("params"), throughput=e.get("throughput"),
            acc_testbed=e.get("acc_test"), acc_hh=e.get("acc_hh"),
            bon=BoNCurve.from_dict(bon_curves[name]) if name in bon_curves else None,
            ppo=PPOCurve.from_metrics(ppo_run["rows"], kl_coef=cfg.ppo.kl_coef) if ppo_run else None,
            notes=spec["spec"]))
    return build_report(results, config=cfg, out_dir=out, notes=notes)
