"""Configuration of seed ensembles: the `ensemble` section of `Config` (kept in its own module: config.py is near its
size limit)."""

from __future__ import annotations

from dataclasses import dataclass

from umm_ray.config_fields import opt

__all__ = ["EnsembleConfig"]


@dataclass
class EnsembleConfig:
    members: int = opt(4, "Ensemble members, differing only in seed.", lo=2)
    aggregate: str = opt("mean", "How member scores combine.", choices=("mean", "wco", "uwo"))
    uwo_lambda: float = opt(0.1, "Variance penalty lambda for UWO (0.5 BoN, 0.1 PPO).", lo=0)
    calibration_pairs: int = opt(256, "Training pairs whose chosen and rejected responses set each member's mean and "
                                      "std when the ensemble is built (kept in manifest.json as 'scale'); every "
                                      "aggregate combines the standardised scores (score - mean) / std, because a "
                                      "BT-trained member's offset is arbitrary and WCO/UWO would otherwise compare "
                                      "offsets. The first N pairs of a seeded shuffle; all of them when fewer.", lo=1)
    placement: str = opt("SPREAD", "Placement strategy of members.", choices=("SPREAD", "PACK", "STRICT_SPREAD"))
    score_actors: str = opt("per_member", "How an ensemble proxy scores PPO rollouts: 'per_member' = a reward actor "
                                          "per member (placed by ensemble.placement; the members score at once where "
                                          "there are cores for them); 'shared' = one actor holds every member and "
                                          "scores them in turn: one process to start instead of one per member (~10 s "
                                          "less on 2 cores), each step's scoring slower where the members would have "
                                          "shared the cores (~0.1 s of a 1.5 s tiny step: docs/ppo-sweep.md), so it "
                                          "pays in short runs (the tiny preset). The scores are the same either way.",
                            choices=("per_member", "shared"))
    worker_group: str = opt("auto", "How members train: 'per_member' = one Ray Train run each, all launched at once "
                                    "(a worker-group start-up each; they overlap where the cluster has room); 'shared' "
                                    "= one worker group trains them one after another (one start-up in all); 'auto' = "
                                    "shared when Ray runs on one CPU-only node (the members would only contend for its "
                                    "cores), per_member otherwise. The members come out the same either way.",
                            choices=("auto", "per_member", "shared"), keyed_at_default=False)
