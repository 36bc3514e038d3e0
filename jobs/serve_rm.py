"""Serve a reward model over HTTP with Ray Serve, until interrupted.

    python -m jobs.serve_rm --reward.proxy_path runs/default/rm_umm4/model [--serve.port 8000] [--serve.host 127.0.0.1]
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.serve_rm --reward.proxy_path DIR

`reward.proxy_path` is a dense / merged UMM HF directory, a MoE directory, an ensemble manifest (.json; aggregate from
`--ensemble.aggregate`, `--ensemble.uwo_lambda`), or `testbed` for the testbed's gold scorer. It binds 127.0.0.1
unless `--serve.host` says otherwise; set a bearer token with `--serve.token` or, better (kept out of the process
list), the environment variable UMM_RAY_SERVE_TOKEN. Routes: see `umm_ray/serve/app.py`. Ctrl-C / SIGTERM (also
`ray job stop`) deletes the application.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from jobs.common import init_ray, job_config
from jobs.inputs import dry_run

APP_NAME = "reward"


def _check(cfg, spec) -> None:
    """Fail before starting Ray: the model must exist; a non-loopback bind without a token gets a warning."""
    if spec.path != "testbed" and not Path(spec.path).exists():
        print(f"config error: reward.proxy_path {spec.path!r} does not exist", file=sys.stderr)
        raise SystemExit(2)
    if cfg.serve.host not in ("127.0.0.1", "localhost", "::1") and not spec.token:
        print(f"warning: serving on {cfg.serve.host} without a token: anyone who can reach port {cfg.serve.port} "
              "can use this endpoint (set UMM_RAY_SERVE_TOKEN or --serve.token)", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    from ray import serve

    from umm_ray.serve.app import build_app, http_options, spec_from_config

    cfg, dry = job_config(argv, "serve_rm")
    if dry:
        dry_run(cfg, "serve_rm", resolve=lambda: spec_from_config(cfg))
    try:
        spec = spec_from_config(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _check(cfg, spec)
    init_ray(cfg)
    serve.start(http_options=http_options(cfg.serve))
    serve.run(build_app(cfg, spec), name=APP_NAME, route_prefix="/")
    host = "127.0.0.1" if cfg.serve.host in ("0.0.0.0", "::") else cfg.serve.host
    print(f"reward endpoint ready: http://{host}:{cfg.serve.port}  (POST /, /score, /v1/score; GET /health; "
          f"serving {spec.path})", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):  # a timed wait keeps the main thread responsive to signals
        pass
    print("stopping: deleting the reward application", flush=True)
    serve.delete(APP_NAME)


if __name__ == "__main__":
    main()
