"""The `serve` section of the config: the Ray Serve reward endpoint of `jobs.serve_rm` (kept apart from
`umm_ray.config` to keep that file readable; `Config.serve` holds it)."""

from __future__ import annotations

from dataclasses import dataclass

from umm_ray.config_fields import opt


@dataclass
class ServeConfig:
    host: str = opt("127.0.0.1", "Bind address (loopback by default).")
    port: int = opt(8000, "HTTP port.", lo=1, hi=65535)
    token: str = opt("", "Bearer token required on requests (empty = none).")
    max_batch_size: int = opt(32, "Ray Serve dynamic batching: max batch.", lo=1)
    batch_wait_timeout_s: float = opt(0.01, "Ray Serve dynamic batching: wait.", lo=0)
    max_items_per_request: int = opt(256, "Reject requests with more texts than this.", lo=1)
    max_chars_per_item: int = opt(16384, "Reject texts longer than this.", lo=1)
    min_replicas: int = opt(1, "Autoscaling: minimum replicas.", lo=0)
    max_replicas: int = opt(2, "Autoscaling: maximum replicas.", lo=1)
    target_ongoing_requests: float = opt(8.0, "Autoscaling: ongoing requests per replica that trigger scaling.", lo=1)
    max_ongoing_requests: int = opt(64, "Requests one replica accepts at once; more wait in Serve's queue.", lo=1)
    max_request_bytes: int = opt(4194304, "Reject request bodies larger than this (413).", lo=1)
    num_cpus: float = opt(1.0, "Logical CPUs per replica (also its torch threads).", lo=0)
    num_gpus: float = opt(0.0, "GPUs per replica (0 on CPU machines).", lo=0)
