"""Quieter Ray worker logs for clusters this project starts itself (`--run.ray_address local`).

Ray Train (v2) starts a detached placement-group cleaner with every training run; it asks the State API once a second
whether the run's controller is alive. The State API is served by the dashboard, which a local cluster here starts
without (`include_dashboard=False`: seconds and memory a one-machine job does not need), so every question fails and
the cleaner logs "Failed to query Ray Train Controller actor state" about once a second for the whole run: 122 lines
in the first three minutes of a compare job's SFT stage, burying the job's own progress. The cleaner has nothing to
do there anyway: a local cluster ends with its job and its placement groups with it. `quiet_train_cleaner` runs in
every worker process of such a cluster (Ray's `worker_process_setup_hook`) and raises only that logger's level;
errors still show. A cluster started by `ray start` (make demo, a real cluster) has its dashboard and is left alone.
"""

from __future__ import annotations

import logging

CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
SETUP_HOOK = f"{__name__}.quiet_train_cleaner"  # the runtime_env value: importable on every worker


def quiet_train_cleaner() -> None:
    """Worker setup hook: Ray Train's placement-group cleaner logs errors only (see the module note)."""
    logging.getLogger(CLEANER_LOGGER).setLevel(logging.ERROR)
