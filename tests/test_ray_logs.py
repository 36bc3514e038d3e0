"""A local cluster started by a job quiets Ray Train's placement-group cleaner in every worker (`umm_ray.ray_logs`):
without a dashboard its State API queries all fail and it would warn once a second for a whole training run."""

import logging
import subprocess
import sys

from tests.fixtures import ROOT, job_env
from umm_ray.ray_logs import CLEANER_LOGGER, quiet_train_cleaner

PROBE = f"""
import logging, ray
from jobs.common import init_ray, job_config
cfg, _ = job_config(["--run.ray_address", "local", "--run.output_dir", {{out!r}}], "probe")
init_ray(cfg, num_cpus=2)
level = ray.get(ray.remote(lambda: logging.getLogger({CLEANER_LOGGER!r}).getEffectiveLevel()).remote())
print("LEVEL", level)
"""


def test_hook_raises_only_the_cleaner_logger():
    before = logging.getLogger(CLEANER_LOGGER).level
    try:
        quiet_train_cleaner()
        assert logging.getLogger(CLEANER_LOGGER).getEffectiveLevel() == logging.ERROR
        assert logging.getLogger("ray.train").getEffectiveLevel() < logging.ERROR  # the rest of Ray Train untouched
    finally:
        logging.getLogger(CLEANER_LOGGER).setLevel(before)


def test_local_cluster_workers_run_the_hook(tmp_path):
    """A real local cluster from the job entry (`init_ray` with run.ray_address local): a task's process has it."""
    proc = subprocess.run([sys.executable, "-c", PROBE.format(out=str(tmp_path / "run"))], cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"LEVEL {logging.ERROR}" in proc.stdout, proc.stdout[-2000:]
