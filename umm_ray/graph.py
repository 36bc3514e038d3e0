"""The stage graph: which cached stage feeds which, for the compare job and for every job's upstream.

    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force)
    graph = StageGraph(cfg, runner)
    graph.rm("umm", 4)          # runs (or reuses) prepare -> sft -> pairs, then rm_umm4 (RunLayout.rm_stage)
    result = graph.compare()    # every RM, eval, bon, ppo_<proxy>

Testbed data: prepare -> sft -> pairs -> rm_<name>. Own preferences (rm.data set): one `pairs` stage splits them;
prepare -> sft only run when an RM needs the testbed policy as its backbone (no rm.base_path, no ppo.policy_path).
With compare.dmoe, rm_dmoe (the DMoERM baseline) joins the RMs. Then eval and bon (every proxy, after every RM)
and one ppo_<proxy> stage per PPO proxy (after its RM), plus ppo_kl_<proxy> for the KL-penalised regime
(compare.ppo_kl_rms, beta compare.ppo_kl_coef). With compare.seeds K, seeds 1..K-1 repeat the RM, eval, bon
and ppo stages as seed<k>/<stage> with their own run.seed (`seed_config`); upstream stages are shared.

The config keys each stage reads are declared next to its function in `umm_ray.stages`; this module adds only the
edges and the stage arguments (which are part of the cache key too). `impl` swaps the functions that do the work —
the graph test runs the real wiring with instant stand-ins — while the declared reads stay those of the real stages.
"""

from __future__ import annotations

import dataclasses
import functools
import queue
import shutil
import time
import types
from dataclasses import dataclass
from typing import Any

from umm_ray import stages as S
from umm_ray.config import Config
from umm_ray.layout import RunLayout
from umm_ray.pipeline import Stage, StageRunner, declared_reads
from umm_ray.schedule import JobGraph


def compare_rms(cfg: Config) -> list[tuple[str, int | None]]:
    """(kind, expert count) of every RM the comparison trains: dense, a UMM per compare.expert_counts, an ensemble,
    and the DMoERM baseline when compare.dmoe is set."""
    rms = [("dense", None)] + [("umm", int(n)) for n in cfg.compare.expert_counts] + [("ensemble", None)]
    return rms + ([("dmoe", None)] if cfg.compare.dmoe else [])


SEED_STRIDE = 1000  # seed k runs with run.seed + 1000 k: ensemble members (run.seed + i) never meet another seed's


def seed_config(cfg: Config, k: int) -> Config:
    """The config of seed k of compare.seeds: seed 0 is `cfg` itself (its stages and cache are those of a one-seed
    run); seed k > 0 has run.seed + 1000 k and rm.split_seed pinned, so own preference data splits as for seed 0."""
    if k == 0:
        return cfg
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=cfg.run.seed + SEED_STRIDE * k),
                               rm=dataclasses.replace(cfg.rm, split_seed=cfg.rm.data_split_seed(cfg.run.seed)))


@dataclass(frozen=True)
class CompareResult:
    """What the compare stages produced: proxies by display name (seed 0's; every seed has the same), and per seed
    (list index = seed) the eval rows, BoN curves, BoN stage names and PPO runs by proxy name (without and with the
    KL penalty)."""

    proxies: dict[str, S.Proxy]
    evals: list[dict]
    bon: list[dict]
    bon_stages: list[str]
    ppo: list[dict]
    ppo_kl: list[dict]


class StageGraph:
    """Runs stages through `runner` in dependency order; each method returns the stage summary (cached or fresh)."""

    def __init__(self, cfg: Config, runner: StageRunner, impl: types.ModuleType | Any = S):
        self.cfg, self.runner, self.impl = cfg, runner, impl
        self.layout = RunLayout(runner.root)
        self._upstream: tuple[str, ...] | None = None
        self.summaries: dict[str, dict] = {}  # of the stages run (or reused) so far, by name

    def _stage(self, name: str, fn: str, *args: Any, deps: tuple[str, ...] = (), extra: dict | None = None,
               seed: int = 0, kl_coef: float | None = None, **call: Any) -> Stage:
        """Stage `name` = `umm_ray.stages.<fn>(cfg, *args, out, **call)`; `args` are inputs (keyed), `call` not.
        With `seed` k > 0 the stage is `seed<k>/<name>` and runs with that seed's config; `kl_coef` sets a fixed PPO
        KL penalty (the KL-penalised regime)."""
        cfg = seed_config(self.cfg, seed)
        if kl_coef is not None:
            cfg = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, kl_coef=kl_coef, kl_target=0.0))
        reads = declared_reads(getattr(S, fn), cfg, *args)
        work = getattr(self.impl, fn)
        key_extra = {"stage_fn": fn, "args": [repr(a) for a in args], **(extra or {})}
        return Stage(RunLayout.seed_stage(name, seed), lambda out: work(cfg, *args, out, **call), reads=reads,
                     deps=deps, extra=key_extra, config=cfg)

    def _run(self, *args: Any, **kw: Any) -> dict:
        """Run (or reuse) the stage `_stage(*args, **kw)`; returns its summary."""
        stage = self._stage(*args, **kw)
        self.summaries[stage.name] = self.runner.run(stage)
        return self.summaries[stage.name]

    def needs_testbed_policy(self) -> bool:
        """Testbed pairs are sampled from the SFT policy; own pairs need it only as the RMs' default backbone."""
        return S.uses_testbed(self.cfg) or not (self.cfg.rm.base_path or self.cfg.ppo.policy_path)

    def prepare(self) -> dict:
        """The testbed world (its world.json)."""
        return self._run("prepare", "prepare")

    def sft(self) -> dict:
        """prepare -> sft."""
        self.prepare()
        return self._run("sft", "sft", deps=("prepare",))

    def upstream(self) -> tuple[str, ...]:
        """Run what the RM stages read (pairs, and the SFT policy when needed); returns the stages they depend on."""
        if self._upstream is None:
            if self.needs_testbed_policy():
                self.sft()
            if S.uses_testbed(self.cfg):
                self._run("pairs", "pairs", deps=("sft",))
            else:
                self._run("pairs", "own_pairs")
            self._upstream = ("pairs", "sft") if self.needs_testbed_policy() else ("pairs",)
        return self._upstream

    def pairs(self) -> dict:
        """The preference pairs stage (after what it needs)."""
        self.upstream()
        return self.summaries["pairs"]

    def _rm_stage(self, kind: str, num_experts: int | None, seed: int) -> tuple[Stage, dict]:
        """One RM's stage (after its upstream) and its `extra` argument ({'num_experts': n} for umm and moe)."""
        extra = {"num_experts": int(num_experts)} if kind in ("umm", "moe") else {}
        return self._stage(RunLayout.rm_stage(kind, num_experts), "train_rm", kind, extra, deps=self.upstream(),
                           seed=seed), extra

    def rm(self, kind: str, num_experts: int | None = None, seed: int = 0) -> dict:
        """Train (or reuse) one RM after its upstream; the summary has kind, model, and moe / manifest paths."""
        stage, _ = self._rm_stage(kind, num_experts, seed)
        self.summaries[stage.name] = self.runner.run(stage)
        return self.summaries[stage.name]

    def _train_rms_together(self, rm_stages: dict[int, dict[str, tuple[str, int | None]]]) -> None:
        """compare.rm_worker_group: when the RM stages run one after another, ready every one that will run and let
        `stages.train_rm_group` train their runs in one worker group first (each stage then finds its models done).
        Its time is the timings' 'rm_group'; its checkpoints go once every RM stage is done."""
        if self.cfg.compare.parallel_stages != 1 or self.cfg.compare.rm_worker_group == "per_stage":
            return
        pending = []
        for k, stages in rm_stages.items():
            for kind, n in stages.values():
                stage, extra = self._rm_stage(kind, n, k)
                out = self.runner.begin(stage)
                if out is not None:
                    pending.append((stage.config, kind, extra, out))
        if pending:
            t0 = time.perf_counter()
            if self.impl.train_rm_group(self.cfg, pending, self.layout.rm_group):
                self.runner.timings["rm_group"], self.runner.cached["rm_group"] = time.perf_counter() - t0, False

    def compare(self, pools: list | None = None) -> CompareResult:
        """Per seed: every RM, then accuracy eval and Best-of-N of every proxy; then per seed one PPO run per
        compare.ppo_rms entry ('umm_best' is chosen once, by validation accuracy averaged over the seeds, so every
        seed runs PPO against the same rows).

        `pools` (`RolePool`s, one per PPO run at once: compare.parallel_ppo) let the PPO runs share their actors; they
        are not part of any stage's inputs.
        """
        hh = S.hh_pairs_path(self.cfg)  # 'auto' depends on the file system: the resolved file is an input
        seeds = range(self.cfg.compare.seeds)
        self.upstream()  # shared by every RM stage: run once before the graph fans out
        rm_stages = {k: {RunLayout.seed_stage(RunLayout.rm_stage(kind, n), k): (kind, n)
                         for kind, n in compare_rms(self.cfg)} for k in seeds}

        def seed_proxies(k: int) -> dict[str, S.Proxy]:
            return S.compare_proxies(self.cfg, {name: self.summaries[name] for name in rm_stages[k]})

        def evaluate(k: int) -> dict:
            return self._run("eval", "evaluate", seed_proxies(k), deps=tuple(rm_stages[k]), extra={"hh": str(hh or "")},
                             seed=k)

        def bon(k: int) -> dict:
            return self._run("bon", "bon", seed_proxies(k), deps=tuple(rm_stages[k]), seed=k)

        # Per seed: its RMs, then eval (alone: it times the RMs) and bon; run concurrently up to
        # compare.parallel_stages, in exactly this order when it is 1.
        jobs = JobGraph()
        for k in seeds:
            rms = tuple(jobs.add(name, functools.partial(self.rm, kind, n, seed=k))
                        for name, (kind, n) in rm_stages[k].items())
            jobs.add(RunLayout.seed_stage("eval", k), functools.partial(evaluate, k), needs=rms, exclusive=True)
            jobs.add(RunLayout.seed_stage("bon", k), functools.partial(bon, k), needs=rms)
        self._train_rms_together(rm_stages)
        done = jobs.run(self.cfg.compare.parallel_stages)
        if not self.cfg.run.keep_checkpoints:  # every RM stage is done: the shared group's resume state is spent
            shutil.rmtree(self.layout.rm_group, ignore_errors=True)
        proxies = [seed_proxies(k) for k in seeds]
        evals = [done[RunLayout.seed_stage("eval", k)] for k in seeds]
        bon_runs = [done[RunLayout.seed_stage("bon", k)] for k in seeds]
        # PPO: up to compare.parallel_ppo runs at once, each holding one of `pools` (policy ranks, engines, reference,
        # gold) while it runs; with one pool they run one after another in the order below and share its actors.
        mean, kl = S.mean_evals(evals), self.cfg.compare.ppo_kl_coef
        free: queue.Queue = queue.Queue()
        for p in pools or [None]:
            free.put(p)

        def ppo(name: str, proxy: S.Proxy, k: int, **kw: Any) -> dict:
            pool = free.get()
            try:
                return self._run(name, "ppo", proxy, deps=(proxy.stage,), seed=k, pool=pool, **kw)
            finally:
                free.put(pool)

        runs, ppo_jobs = [], JobGraph()
        for k in seeds:
            regimes = {"ppo": S.ppo_proxies(self.cfg, mean, proxies[k]),
                       "ppo_kl": S.ppo_proxies(self.cfg, mean, proxies[k], kl=True)}
            # Each proxy's KL-penalised run right after its stress test: a shared pool then keeps that proxy's
            # reward actors for both (starting an ensemble's members is ~15 s on 2 cores). Order is no input.
            for name in dict.fromkeys([*regimes["ppo"], *regimes["ppo_kl"]]):
                for prefix, extra in (("ppo", {}), ("ppo_kl", {"kl_coef": kl})):
                    if name in regimes[prefix]:
                        run = functools.partial(ppo, f"{prefix}_{name}", regimes[prefix][name], k, **extra)
                        job = ppo_jobs.add(RunLayout.seed_stage(f"{prefix}_{name}", k), run)
                        runs.append((k, prefix, name, job))
        done = ppo_jobs.run(min(self.cfg.compare.parallel_ppo, free.qsize()))
        ppo_runs = [{name: done[job] for j, p, name, job in runs if (j, p) == (k, "ppo")} for k in seeds]
        ppo_kl = [{name: done[job] for j, p, name, job in runs if (j, p) == (k, "ppo_kl")} for k in seeds]
        return CompareResult(proxies[0], evals, bon_runs, [RunLayout.seed_stage("bon", k) for k in seeds], ppo_runs,
                             ppo_kl)
