"""Configuration of the compare job: the `compare` section of `Config` (kept in its own module: config.py is at its
size limit)."""

from __future__ import annotations

from dataclasses import dataclass

from umm_ray.config_fields import ConfigError, is_int, opt

__all__ = ["CompareConfig"]


@dataclass
class CompareConfig:
    expert_counts: list = opt([2, 4, 6], "UMM expert counts to train and compare.")
    force: list = opt([], "Stages to redo even if cached.")
    ppo_rms: list = opt(["dense", "umm_best", "ensemble-mean", "dmoe"], "Proxies PPO runs against; 'umm_best' = the "
                        "UMM with the best validation accuracy (mean over seeds); 'dmoe' runs when compare.dmoe trains "
                        "it; 'ensemble-wco' / 'ensemble-uwo' (small and gpu presets add them) are left out for speed.")
    ppo_kl_coef: float = opt(0.05, "Fixed KL penalty beta of the second PPO regime (the one practitioners run), beside "
                                   "the ppo.kl_coef stress test; its runs are the ppo_kl_<proxy> stages.", lo=0)
    ppo_kl_rms: list = opt(["dense", "umm_best", "ensemble-mean"],
                           "Proxies of the KL-penalised PPO regime (names as in ppo_rms); [] = only the stress test.")
    bon_uwo_lambda: float = opt(0.5, "UWO variance penalty used in Best-of-N (PPO uses ensemble.uwo_lambda).", lo=0)
    hh_eval: str = opt("auto", "Real HH pairs for accuracy: a file, 'auto' (../shared/data when present) or ''.")
    hh_eval_pairs: int = opt(200, "How many HH pairs (from the start of the file) to score; 0 = all.", lo=0)
    seeds: int = opt(1, "Independent seeds: seed k (0-based) trains its own RMs (init, router, data order), samples "
                        "its own BoN responses and runs its own PPO with run.seed + 1000 k, in <output_dir>/seed<k>/ "
                        "(seed 0 in <output_dir>/ itself); the report's intervals and verdicts pool the seeds. The "
                        "world, SFT policy and preference pairs are shared.", lo=1)
    parallel_stages: int = opt(1, "Stages of the compare graph run at once (RMs of every seed, then per seed eval and "
                                  "bon as soon as its RMs are done; eval runs alone since it times the RMs; PPO runs "
                                  "follow compare.parallel_ppo). 1 = one after another; on a cluster, the "
                                  "number of RM stages (the autoscaler adds nodes for them).", lo=1)
    rm_worker_group: str = opt("auto", "How the RM stages' training runs start their Ray Train worker groups when the "
                                       "stages run one after another (compare.parallel_stages 1): 'shared' = one "
                                       "worker group trains every RM stage that will run (dense, each UMM's MoE and "
                                       "merge, the ensemble's members; not dmoe, nor members training at once, "
                                       "ensemble.worker_group per_member) in turn before the stages evaluate them, "
                                       "paying the start-up (~15 s on 2 cores) once; 'per_stage' = each stage its own; "
                                       "'auto' = shared on a single node with CPUs and no GPUs, else per_stage. The "
                                       "same models either way, so no stage input.",
                               choices=("auto", "shared", "per_stage"))
    parallel_ppo: int = opt(1, "PPO runs at once, each holding a role pool of its own (policy ranks, engines, "
                               "reference, proxy, gold) for its duration. 1 = one after another, sharing one pool. "
                               "Checked before any stage runs: the cluster must place that many PPO layouts at once.",
                            lo=1)
    dmoe: bool = opt(False, "Also train the DMoERM baseline (rm_dmoe, settings in the dmoe section) and report a "
                            "'dmoe' row (params, forward passes, accuracy, BoN, and PPO while compare.ppo_rms lists "
                            "'dmoe', as by default). On the testbed "
                            "its capability labels come from the gold's rubric terms; with rm.data the file (or "
                            "dmoe.capability_data) needs task and cap_<name> columns.")

    def __post_init__(self):
        # '--compare.expert_counts 2,4' arrives as strings; stage names and the MoE need integers >= 2
        self.expert_counts = [int(n) if isinstance(n, str) and is_int(n) else n for n in self.expert_counts]
        bad = [n for n in self.expert_counts if isinstance(n, bool) or not isinstance(n, int) or n < 2]
        if bad:
            raise ConfigError(f"compare.expert_counts: expected integers >= 2, got {bad!r}")
