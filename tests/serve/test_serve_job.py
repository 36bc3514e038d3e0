"""`python -m jobs.serve_rm` as a user runs it: a subprocess with its own Ray, serving until SIGINT."""

from __future__ import annotations

import signal
import subprocess
import threading

import pytest
import requests

from tests.fixtures import free_port, job_env, start_job
from umm_ray.models.reward_model import load_scorer


def _run(args: list[str], **kw) -> subprocess.Popen:
    return start_job("jobs.serve_rm", args, env=job_env(RAY_ADDRESS=""), **kw)  # its own Ray, not the tests'


def test_missing_model_fails_before_starting_ray(tmp_path):
    proc = _run(["--reward.proxy_path", str(tmp_path / "nope")])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "does not exist" in out
    proc = _run([])
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "reward.proxy_path is empty" in out


@pytest.mark.slow
def test_job_serves_until_interrupted(tiny_rms, pairs):
    port = free_port()
    proc = _run(["--reward.proxy_path", str(tiny_rms["dense"]), "--serve.port", str(port),
                 "--run.ray_address", "local", "--serve.num_cpus", "0.5"])
    lines: list[str] = []
    ready = threading.Event()

    def pump():  # read output continuously so the child never blocks on a full pipe
        for line in proc.stdout:
            lines.append(line)
            if "reward endpoint ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        while not ready.wait(2.0) and proc.poll() is None:  # fail fast if the job dies while starting
            pass
        assert ready.is_set() and proc.poll() is None, "".join(lines[-40:])
        prompts, responses = pairs
        r = requests.post(f"http://127.0.0.1:{port}/v1/score", json={"prompts": prompts, "responses": responses},
                          timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["rewards"] == pytest.approx(load_scorer(tiny_rms["dense"]).score(prompts, responses),
                                                    abs=1e-4)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=300) == 0, "".join(lines[-40:])
        assert any("stopping" in line for line in lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
