"""Best-of-N evaluation on Ray: sample N responses per prompt from a policy through RolloutActors, score every sample
with each proxy RM and the gold RM in Ray tasks, and compute the unbiased BoN curves (`umm_ray.algo.bon`).

    curves = run_bon(cfg, "runs/x/sft/model", {"dense": RewardSource.parse("runs/x/rm_dense/model"),
                     "ens-uwo": RewardSource.parse("runs/x/rm_ensemble/model/manifest.json#uwo:0.5")},
                     gold=RewardSource("testbed"), out_dir="runs/x/bon")

Each distinct RM path is scored once: an ensemble manifest returns its members' scores, and every requested
aggregate (mean / WCO / UWO with its lambda) is computed from them in the driver.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch
from tqdm.auto import tqdm

from umm_ray.actors.placement import on_single_cpu_node
from umm_ray.actors.reward import RewardSpec, build_scorer, spec_settings
from umm_ray.algo.bon import BoNCurve, bon_curve, bon_ns
from umm_ray.algo.ensemble import aggregate
from umm_ray.config import Config
from umm_ray.data import load_prompts
from umm_ray.layout import RunLayout
from umm_ray.ppo.roles import make_engine
from umm_ray.resources import role_resources, usable_cores
from umm_ray.reward_source import RewardSource


@dataclass
class BoNSamples:
    """N sampled responses for each of P prompts: `responses[i]` has N entries for `prompts[i]`."""

    prompts: list[str]
    responses: list[list[str]]

    def __post_init__(self):
        if len(self.prompts) != len(self.responses) or not self.prompts:
            raise ValueError(f"BoNSamples: {len(self.prompts)} prompts but {len(self.responses)} response lists")
        sizes = {len(r) for r in self.responses}
        if len(sizes) != 1:
            raise ValueError(f"BoNSamples: every prompt needs the same N samples, got sizes {sorted(sizes)}")

    @property
    def n(self) -> int:
        return len(self.responses[0])

    def flat(self) -> tuple[list[str], list[str]]:
        """Prompt-major flattening: P*N prompts (each repeated N times) and the matching responses."""
        return [p for p in self.prompts for _ in range(self.n)], [r for rs in self.responses for r in rs]


def start_rollout_engine(cfg: Config, policy_path: str, seed: int):
    """One RolloutActor (cfg.rollout.*, `ppo.roles.make_engine`) on `policy_path`; `ray.get(actor.ready.remote())`
    waits for its start-up."""
    return make_engine(cfg, policy_path, seed)


def sample_responses(cfg: Config, policy_path: str, prompts: list[str], n: int) -> BoNSamples:
    """N samples per prompt from the policy, prompts sharded over `cfg.rollout.num_engines` RolloutActors."""
    engines = max(1, min(cfg.rollout.num_engines, len(prompts)))
    shards = [prompts[k::engines] for k in range(engines)]
    actors = []
    try:
        actors = [start_rollout_engine(cfg, policy_path, cfg.run.seed + k) for k in range(engines)]
        ray.get([a.ready.remote() for a in actors])  # engines start in parallel; constructor errors surface here
        refs = [a.generate.remote(s, n=n, seed=cfg.run.seed + k) for k, (a, s) in enumerate(zip(actors, shards))]
        rollouts = ray.get(refs)
    finally:
        for a in actors:
            ray.kill(a)
    by_prompt: dict[int, list[str]] = {}
    for k, (shard, ro) in enumerate(zip(shards, rollouts)):
        if len(ro.responses) != len(shard) * n:
            raise RuntimeError(f"RolloutActor {k}: returned {len(ro.responses)} responses for {len(shard)} prompts "
                               f"x n={n}")
        for j, p in enumerate(shard):
            got = ro.prompts[j * n:(j + 1) * n]
            if any(g != p for g in got):
                raise RuntimeError(f"RolloutActor {k}: responses are not grouped prompt-major (prompt {j})")
            by_prompt[k + j * engines] = list(ro.responses[j * n:(j + 1) * n])
    return BoNSamples(list(prompts), [by_prompt[i] for i in range(len(prompts))])


@ray.remote
def score_task(specs: list[RewardSpec], prompts: list[str], responses: list[str]) -> list[dict]:
    """Score in a Ray worker with each Scorer the `RewardSpec`s name (testbed gold, RM dir, ensemble manifest, URL), one
    after another on one thread (`score_groups`: several of these run at once).

    Returns:
        Per spec: {"scores": [B] or None, "members": [k][B] or None (ensembles), "aggregate", "lam", "seconds"}.
    """
    torch.set_num_threads(1)
    return [_score_one(spec, prompts, responses) for spec in specs]


def _score_one(spec: RewardSpec, prompts: list[str], responses: list[str]) -> dict:
    t0 = time.perf_counter()
    scorer = build_scorer(spec, "cuda" if torch.cuda.is_available() else "cpu")  # Ray hides GPUs not granted
    with torch.no_grad():
        if hasattr(scorer, "member_scores"):
            out = {"scores": None, "members": scorer.member_scores(prompts, responses),
                   "aggregate": scorer.aggregate, "lam": scorer.lam}
        else:
            out = {"scores": scorer.score(prompts, responses), "members": None}
    out["seconds"] = time.perf_counter() - t0
    return out


def check_scores(values, count: int, who: str) -> np.ndarray:
    """[count] finite floats or a ValueError naming the scorer (never a silent zero)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (count,):
        raise ValueError(f"{who}: returned {arr.shape} scores for {count} samples")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{who}: non-finite scores at samples {bad[:10].tolist()} (of {count})")
    return arr


def resolve_scores(name: str, source: RewardSource, result: dict, count: int) -> np.ndarray:
    """One RM's [count] scores from its task result, aggregating ensemble members as the source asks."""
    if result["members"] is None:
        if source.aggregate is not None:
            raise ValueError(f"RM {name!r}: aggregate {source.aggregate!r} given but {source.location} is not an "
                             "ensemble")
        return check_scores(result["scores"], count, f"RM {name!r} ({source.location})")
    members = [check_scores(m, count, f"RM {name!r} member {i} ({source.location})")
               for i, m in enumerate(result["members"])]
    how = source.aggregate or result["aggregate"]
    lam = source.lam if source.lam is not None else result["lam"]
    return aggregate(torch.tensor(np.stack(members)), how, lam).numpy()


def score_groups(n_specs: int) -> list[list[int]]:
    """Which scorers (indices, gold first) each scoring task takes: one task each, all in flight at once; on a single
    CPU node as many tasks as it has cores, dealt round-robin, so k cores start k worker processes (each imports
    torch and transformers: ~4 s on 2 cores) instead of one per scorer that would only share them."""
    tasks = min(n_specs, usable_cores()) if on_single_cpu_node() else n_specs
    return [list(range(t, n_specs, tasks)) for t in range(tasks)]


def score_samples(cfg: Config, samples: BoNSamples, sources: dict[str, RewardSource], gold: RewardSource
                  ) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, float]]:
    """Score every sample with every RM and the gold: each distinct path or URL once, in Ray tasks (`score_groups`).

    Returns:
        (proxy {name: [P, N]}, gold [P, N], throughput {name or 'gold': sequences per second of its task}).
    """
    load = spec_settings(cfg)
    rspecs: dict[str, RewardSpec] = {}  # one scoring task per checkpoint / URL, whatever its aggregates
    for name, source in sources.items():
        source.check_exists(f"RM {name!r}")
        if source.location not in rspecs:
            rspecs[source.location] = RewardSpec.load(RewardSource(source.location), f"bon:{name}", **load)
    gold_rs = RewardSpec.load(gold, "gold", **spec_settings(cfg, "gold"))
    prompts, responses = samples.flat()
    p_ref, r_ref = ray.put(prompts), ray.put(responses)
    specs = [gold_rs, *rspecs.values()]
    groups = score_groups(len(specs))
    refs = [score_task.options(**role_resources(cfg, "gold" if 0 in g else "proxy").options()).remote(
        [specs[i] for i in g], p_ref, r_ref) for g in groups]
    by_index = {i: got for g, out in zip(groups, _gather(refs, groups, len(prompts))) for i, got in zip(g, out)}
    gold_res, results = by_index[0], {loc: by_index[i + 1] for i, loc in enumerate(rspecs)}
    shape = (len(samples.prompts), samples.n)
    proxy = {name: resolve_scores(name, s, results[s.location], len(prompts)).reshape(shape)
             for name, s in sources.items()}
    gold_scores = check_scores(gold_res["scores"], len(prompts), f"gold scorer ({gold})").reshape(shape)
    tput = {name: len(prompts) / max(results[s.location]["seconds"], 1e-9) for name, s in sources.items()}
    tput["gold"] = len(prompts) / max(gold_res["seconds"], 1e-9)
    return proxy, gold_scores, tput


def _gather(refs: list, groups: list[list[int]], n: int) -> list:
    """ray.get of the scoring tasks, in order, with a progress bar of the scorers done (each scores n responses:
    minutes apiece for 135M RMs on CPU)."""
    size = dict(zip(refs, map(len, groups)))
    with tqdm(total=sum(size.values()), desc=f"bon: scorers done ({n} responses each)", unit="rm") as bar:
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # a failed task raises here, as soon as it fails
            bar.update(size[done[0]])
    return ray.get(refs)


def write_outputs(out_dir: Path, samples: BoNSamples, proxy: dict, gold: np.ndarray, curves: dict[str, BoNCurve],
                  meta: dict) -> None:
    """bon.json (curves + meta), scores.json (every score, [P][N]) and samples.jsonl (prompt + N responses)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bon.json").write_text(json.dumps({"curves": {k: c.to_dict() for k, c in curves.items()},
                                                  **meta}, indent=1))
    (out_dir / "scores.json").write_text(json.dumps({"gold": gold.tolist(),
                                                     "proxy": {k: v.tolist() for k, v in proxy.items()}}))
    with open(out_dir / "samples.jsonl", "w") as f:
        for p, rs in zip(samples.prompts, samples.responses):
            f.write(json.dumps({"prompt": p, "responses": rs}) + "\n")


def read_bon(path: str | Path) -> tuple[dict[str, BoNCurve], dict]:
    """Curves and meta (throughput, sizes, timings) from a bon.json written by run_bon."""
    data = json.loads(Path(path).read_text())
    curves = {k: BoNCurve.from_dict(v) for k, v in data.pop("curves").items()}
    return curves, data


def run_bon(cfg: Config, policy_path: str, sources: dict[str, RewardSource], gold: RewardSource,
            prompts: list[str] | None = None, out_dir: str | Path | None = None,
            samples: BoNSamples | None = None) -> dict[str, BoNCurve]:
    """Best-of-N curves of every proxy RM against the gold.

    Args:
        cfg: config (bon.n_samples = N, bon.n_prompts, rollout.*, run.*, rm.max_len, reward.batch_size).
        policy_path: HF causal LM dir to sample from (the SFT policy).
        sources: {name: RewardSource}; an ensemble manifest may carry its aggregate ('#uwo:0.5').
        gold: the gold scorer (testbed, an HF reward-model path or an endpoint).
        prompts: prompt strings (default: cfg.bon.prompts or the run's prepare/prompts_bon.jsonl), first
            cfg.bon.n_prompts used.
        out_dir: when given, writes bon.json, scores.json and samples.jsonl there.
        samples: pre-drawn samples (skips sampling; used to score new RMs on the same responses).

    Returns:
        {name: BoNCurve} over n = 1, 2, 4, ... <= N.
    """
    if not sources:
        raise ValueError("run_bon: no proxy RMs given (bon.rms or reward.proxy_path)")
    t0 = time.perf_counter()
    if samples is None:
        prompts = (prompts if prompts is not None else default_prompts(cfg))[:cfg.bon.n_prompts]
        if not prompts:
            raise ValueError("run_bon: the prompt set is empty")
        samples = sample_responses(cfg, policy_path, prompts, cfg.bon.n_samples)
    t_sample = time.perf_counter() - t0
    proxy, gold_scores, tput = score_samples(cfg, samples, sources, gold)
    curves = {name: bon_curve(p, gold_scores, bon_ns(samples.n)) for name, p in proxy.items()}
    meta = {"policy": str(policy_path), "gold": str(gold), "n_prompts": len(samples.prompts),
            "n_samples": samples.n, "rms": {k: str(v) for k, v in sources.items()},
            "throughput_seq_per_s": tput, "seconds": {"sample": t_sample, "total": time.perf_counter() - t0}}
    if out_dir is not None:
        write_outputs(Path(out_dir), samples, proxy, gold_scores, curves, meta)
    return curves


def default_prompts(cfg: Config) -> list[str]:
    """cfg.bon.prompts when set, else the testbed's <output_dir>/prepare/prompts_bon.jsonl."""
    spec = cfg.bon.prompts or str(RunLayout(cfg.run.output_dir).prompts_bon)
    if not cfg.bon.prompts and not Path(spec).is_file():
        raise FileNotFoundError(f"{spec}: no BoN prompts; run `python -m jobs.prepare` first or set --bon.prompts")
    return [r.prompt for r in load_prompts(spec, limit=cfg.bon.n_prompts)]


def curve_table(curves: dict[str, BoNCurve]) -> str:
    """A plain-text table of gold (and proxy) per n for the job's log."""
    names = list(curves)
    ns = curves[names[0]].ns
    head = f"{'n':>5} {'KL':>6} " + " ".join(f"{n[:14]:>15}" for n in names)
    rows = [f"{n:>5} {curves[names[0]].kl[i]:6.3f} " +
            " ".join(f"{curves[k].gold[i]:7.3f}/{curves[k].proxy[i]:<7.3f}" for k in names)
            for i, n in enumerate(ns)]
    return "\n".join([head + "   (gold/proxy)"] + rows)
