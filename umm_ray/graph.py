"""The stage graph: which cached stage feeds which, for the compare job and for every job's upstream.

    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force)
    graph = StageGraph(cfg, runner)
    graph.rm("umm", 4)          # runs (or reuses) prepare -> sft -> pairs, then rm_umm4 (RunLayout.rm_stage)
    result = graph.compare()    # every RM, eval, bon, ppo_<proxy>

Testbed data: prepare -> sft -> pairs -> rm_<name>. Own preferences (rm.data set): one `pairs` stage splits them;
prepare -> sft only run when an RM needs the testbed policy as its backbone (no rm.base_path, no ppo.policy_path).
With compare.dmoe, rm_dmoe (the DMoERM baseline) joins the RMs. Then eval and bon (every proxy, after every RM)
and one ppo_<proxy> stage per PPO proxy (after its RM).

The config keys each stage reads are declared next to its function in `umm_ray.stages`; this module adds only the
edges and the stage arguments (which are part of the cache key too). `impl` swaps the functions that do the work —
the graph test runs the real wiring with instant stand-ins — while the declared reads stay those of the real stages.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any

from umm_ray import stages as S
from umm_ray.config import Config
from umm_ray.layout import RunLayout
from umm_ray.pipeline import Stage, StageRunner, declared_reads


def compare_rms(cfg: Config) -> list[tuple[str, int | None]]:
    """(kind, expert count) of every RM the comparison trains: dense, a UMM per compare.expert_counts, an ensemble,
    and the DMoERM baseline when compare.dmoe is set."""
    rms = [("dense", None)] + [("umm", int(n)) for n in cfg.compare.expert_counts] + [("ensemble", None)]
    return rms + ([("dmoe", None)] if cfg.compare.dmoe else [])


@dataclass(frozen=True)
class CompareResult:
    """What the compare stages produced: proxies by display name, eval rows, BoN curves, PPO runs."""

    proxies: dict[str, S.Proxy]
    evals: dict
    bon: dict
    ppo: dict


class StageGraph:
    """Runs stages through `runner` in dependency order; each method returns the stage summary (cached or fresh)."""

    def __init__(self, cfg: Config, runner: StageRunner, impl: types.ModuleType | Any = S):
        self.cfg, self.runner, self.impl = cfg, runner, impl
        self._upstream: tuple[str, ...] | None = None
        self.summaries: dict[str, dict] = {}  # of the stages run (or reused) so far, by name

    def _run(self, name: str, fn: str, *args: Any, deps: tuple[str, ...] = (), extra: dict | None = None,
             **call: Any) -> dict:
        """Run stage `name` = `umm_ray.stages.<fn>(cfg, *args, out, **call)`; `args` are inputs (keyed), `call` not."""
        reads = declared_reads(getattr(S, fn), self.cfg, *args)
        work = getattr(self.impl, fn)
        key_extra = {"stage_fn": fn, "args": [repr(a) for a in args], **(extra or {})}
        self.summaries[name] = self.runner.run(Stage(name, lambda out: work(self.cfg, *args, out, **call),
                                                     reads=reads, deps=deps, extra=key_extra))
        return self.summaries[name]

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

    def rm(self, kind: str, num_experts: int | None = None) -> dict:
        """Train (or reuse) one RM after its upstream; the summary has kind, model, and moe / manifest paths."""
        deps = self.upstream()
        extra = {"num_experts": int(num_experts)} if kind in ("umm", "moe") else {}
        return self._run(RunLayout.rm_stage(kind, num_experts), "train_rm", kind, extra, deps=deps)

    def compare(self, pool: Any = None) -> CompareResult:
        """Every RM, then accuracy eval and Best-of-N of every proxy, then one PPO run per compare.ppo_rms entry.

        `pool` (a `RolePool`) lets the PPO runs share their actors; it is not part of any stage's inputs.
        """
        rms = {RunLayout.rm_stage(kind, n): self.rm(kind, n) for kind, n in compare_rms(self.cfg)}
        proxies = S.compare_proxies(self.cfg, rms)
        deps = tuple(rms)
        hh = S.hh_pairs_path(self.cfg)  # 'auto' depends on the file system: the resolved file is an input
        evals = self._run("eval", "evaluate", proxies, deps=deps, extra={"hh": str(hh or "")})
        bon = self._run("bon", "bon", proxies, deps=deps)
        ppo = {name: self._run(f"ppo_{name}", "ppo", proxy, deps=(proxy.stage,), pool=pool)
               for name, proxy in S.ppo_proxies(self.cfg, evals, proxies).items()}
        return CompareResult(proxies, evals, bon, ppo)
