"""Bounded load test of the Ray Serve reward endpoint on 127.0.0.1: dense vs merged UMM vs ensemble (vs MoE).

Builds tiny testbed reward models (dense; merged = upcycle -> mergeable -> `export_merged`, a plain HF checkpoint;
an ensemble of `--members` dense seeds; an unmerged MoE), deploys each as its own Serve application on one loopback
proxy, then for each kind fires `--requests` POST /v1/score requests at once (asyncio + aiohttp, `--concurrency`
in flight, each with `--items` pairs) under a per-request and a total time bound. Reports per kind: status counts
(zero 5xx required), p50 / p99 latency, requests/s and scored pairs/s. Exit status 1 if any 5xx or transport error.

    python benchmarks/serve_load.py                                # 200 concurrent requests per kind
    python benchmarks/serve_load.py --requests 400 --items 8 --kinds dense,merged
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# The served model layouts this benchmark builds (not the training stages' RM_KINDS: "merged" is a UMM export).
SERVED_KINDS = ("dense", "merged", "ensemble", "moe")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(SERVED_KINDS), help=f"comma list of {SERVED_KINDS}")
    ap.add_argument("--requests", type=int, default=200, help="requests per kind (all launched at once)")
    ap.add_argument("--concurrency", type=int, default=200, help="max requests in flight")
    ap.add_argument("--items", type=int, default=4, help="(prompt, response) pairs per request")
    ap.add_argument("--members", type=int, default=4, help="ensemble members")
    ap.add_argument("--experts", type=int, default=4, help="normal experts of the MoE / merged model")
    ap.add_argument("--max-batch-size", type=int, default=32, help="serve.max_batch_size (texts per batch)")
    ap.add_argument("--batch-wait", type=float, default=0.01, help="serve.batch_wait_timeout_s")
    ap.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request before it counts failed")
    ap.add_argument("--total-timeout", type=float, default=900.0, help="seconds for one kind's whole load run")
    ap.add_argument("--out", default="runs/bench/serve_load.json")
    return ap.parse_args(argv)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_models(root: Path, members: int, experts: int) -> tuple[dict[str, Path], str]:
    """Tiny testbed RMs on disk: {"dense", "merged", "ensemble" (manifest), "moe"}; returns (paths, merged note)."""
    import torch

    from umm_ray.models.reward_model import load_reward_model
    from umm_ray.models.upcycle import save_moe, upcycle
    from umm_ray.testbed.models import make_reward_model, save_model
    from umm_ray.testbed.tokenizer import train_tokenizer
    from umm_ray.testbed.world import make_prompts, sft_responses

    prompts = [p.prompt for p in make_prompts(200, seed=0)]
    texts = prompts + [sft_responses(p, 1, i)[0] for i, p in enumerate(prompts)]
    tok = train_tokenizer(texts, vocab_size=1024, out_dir=root / "tokenizer")
    paths = {"dense": save_model(make_reward_model("llama", tok, seed=0), tok, root / "dense")}
    for i in range(members):
        save_model(make_reward_model("llama", tok, seed=100 + i), tok, root / f"member{i}")
    (root / "ensemble.json").write_text(json.dumps({"members": [f"member{i}" for i in range(members)],
                                                    "scale": [[0.0, 1.0]] * members}))  # load only: scale immaterial
    paths["ensemble"] = root / "ensemble.json"
    dense, _ = load_reward_model(paths["dense"])
    moe = upcycle(dense, num_experts=experts, top_k=2, seed=0).eval()
    paths["moe"] = save_moe(moe, tok, root / "moe")
    try:
        from umm_ray.models.merge import export_merged, make_mergeable
    except ImportError:
        return paths, "umm_ray.models.merge is missing: no merged model"
    with torch.no_grad():  # untrained theta: the export path and the served checkpoint are what matter here
        paths["merged"] = export_merged(make_mergeable(moe, alpha=0.5), tok, root / "merged")
    return paths, f"UMM export: upcycle({experts} experts, top-2) -> make_mergeable(alpha 0.5) -> export_merged"


def pairs(n: int) -> tuple[list[str], list[str]]:
    from umm_ray.testbed.world import make_prompts, sft_responses

    prompts = [p.prompt for p in make_prompts(n, seed=7)]
    return prompts, [sft_responses(p, 1, i)[0] for i, p in enumerate(prompts)]


def deploy(paths: dict[str, Path], kinds: list[str], args) -> str:
    """Start local Ray + Serve on 127.0.0.1:<free port>; one application per kind at /<kind>. Returns the base URL."""
    import ray
    from ray import serve

    from umm_ray.config import load_config
    from umm_ray.serve.app import build_app, http_options

    port = free_port()
    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}})
    common = ["--serve.port", str(port), "--serve.max_replicas", "1", "--serve.num_cpus", "1",
              "--serve.max_batch_size", str(args.max_batch_size), "--serve.batch_wait_timeout_s", str(args.batch_wait),
              "--serve.max_ongoing_requests", str(args.concurrency)]
    cfgs = {k: load_config(None, common + ["--reward.proxy_path", str(paths[k])]) for k in kinds}
    assert cfgs[kinds[0]].serve.host == "127.0.0.1", "the load test only ever binds loopback"
    serve.start(http_options=http_options(cfgs[kinds[0]].serve))
    serve.run_many([serve.RunTarget(build_app(c), name=k, route_prefix=f"/{k}") for k, c in cfgs.items()])
    return f"http://127.0.0.1:{port}"


async def _one(session, url: str, body: dict, timeout: float) -> tuple[int, float]:
    """(status, seconds); status -1 for a transport error or timeout."""
    import aiohttp

    t0 = time.perf_counter()
    try:
        async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            await resp.read()
            return resp.status, time.perf_counter() - t0
    except (aiohttp.ClientError, asyncio.TimeoutError):
        return -1, time.perf_counter() - t0


async def load(url: str, bodies: list[dict], concurrency: int, req_timeout: float, total_timeout: float) -> dict:
    """Fire all requests at once (at most `concurrency` in flight); statistics of one kind's run."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    conn = aiohttp.TCPConnector(limit=concurrency)

    async with aiohttp.ClientSession(connector=conn) as session:
        async def bounded(body):
            async with sem:
                return await _one(session, url, body, req_timeout)

        t0 = time.perf_counter()
        results = await asyncio.wait_for(asyncio.gather(*[bounded(b) for b in bodies]), total_timeout)
        wall = time.perf_counter() - t0
    lat = sorted(s for status, s in results if status == 200)
    codes: dict[str, int] = {}
    for status, _ in results:
        codes[str(status)] = codes.get(str(status), 0) + 1
    items = sum(len(b["prompts"]) for b, (status, _) in zip(bodies, results) if status == 200)
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) >= 2 else lat * 99
    return {"requests": len(bodies), "ok": len(lat), "status": codes,
            "n_5xx": sum(n for c, n in codes.items() if c.startswith("5")), "errors": codes.get("-1", 0),
            "p50_ms": 1000 * statistics.median(lat) if lat else None, "p99_ms": 1000 * q[98] if lat else None,
            "max_ms": 1000 * lat[-1] if lat else None, "wall_s": wall, "req_per_s": len(lat) / wall,
            "pairs_per_s": items / wall}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    kinds = [k for k in args.kinds.split(",") if k]
    if bad := [k for k in kinds if k not in SERVED_KINDS]:
        raise SystemExit(f"--kinds: unknown {bad}; choose from {SERVED_KINDS}")
    root = Path(tempfile.mkdtemp(prefix="umm_serve_load_"))
    paths, merged_note = build_models(root, args.members, args.experts)
    kinds = [k for k in kinds if k in paths]
    prompts, responses = pairs(64)
    bodies = [{"prompts": [prompts[(r * args.items + j) % 64] for j in range(args.items)],
               "responses": [responses[(r * args.items + j) % 64] for j in range(args.items)]}
              for r in range(args.requests)]
    base = deploy(paths, kinds, args)
    report = {"base_url": base, "merged": merged_note, "args": vars(args), "kinds": {}}
    try:
        for kind in kinds:
            url = f"{base}/{kind}/v1/score"
            asyncio.run(load(url, bodies[:5], 5, args.request_timeout, args.total_timeout))  # warm-up, not reported
            report["kinds"][kind] = asyncio.run(load(url, bodies, args.concurrency, args.request_timeout,
                                                     args.total_timeout))
            print(kind, json.dumps(report["kinds"][kind]), flush=True)
    finally:
        from ray import serve

        serve.shutdown()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(f"\n{'kind':9s} {'ok':>5s} {'5xx':>4s} {'err':>4s} {'p50 ms':>8s} {'p99 ms':>8s} {'req/s':>7s} "
          f"{'pairs/s':>8s}")
    for kind, r in report["kinds"].items():
        print(f"{kind:9s} {r['ok']:5d} {r['n_5xx']:4d} {r['errors']:4d} {r['p50_ms'] or 0:8.0f} "
              f"{r['p99_ms'] or 0:8.0f} {r['req_per_s']:7.1f} {r['pairs_per_s']:8.1f}")
    print(f"merged: {merged_note}\nwritten: {args.out}")
    return int(any(r["n_5xx"] or r["errors"] for r in report["kinds"].values()))


if __name__ == "__main__":
    raise SystemExit(main())
