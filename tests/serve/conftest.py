"""Tiny reward models on disk for the serve tests, and a free loopback port for a real Ray Serve proxy."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures import free_port, save_tiny_rm, tiny_tokenizer, write_manifest


def world_texts(n: int = 80) -> tuple[list[str], list[str]]:
    """Testbed prompts and one SFT response each: realistic texts for tokenizer training and scoring."""
    from umm_ray.testbed.world import make_prompts, sft_responses

    prompts = [p.prompt for p in make_prompts(n, seed=0)]
    responses = [sft_responses(p, 1, i)[0] for i, p in enumerate(prompts)]
    return prompts, responses


def build_rms(root: Path, members: int = 3) -> dict[str, Path]:
    """{"dense": dir, "m0".. : member dirs, "ensemble": manifest.json} under `root`: tiny testbed Llama RMs
    (hidden 128, head_dim 64) with a visible score scale (head std 1)."""
    prompts, responses = world_texts()
    tok = tiny_tokenizer(prompts + responses, vocab_size=400, out_dir=root / "tokenizer")
    out = {"dense": Path(save_tiny_rm(root / "dense", tok, seed=0, head_std=1.0))}
    for i in range(members):
        out[f"m{i}"] = Path(save_tiny_rm(root / f"m{i}", tok, seed=10 + i, head_std=1.0))
    # Member paths relative to the manifest.
    out["ensemble"] = Path(write_manifest(root / "ensemble.json", [f"m{i}" for i in range(members)]))
    return out


@pytest.fixture(scope="session")
def tiny_rms(tmp_path_factory) -> dict[str, Path]:
    """Tiny dense RM + 3 ensemble members + manifest, built once per session."""
    return build_rms(tmp_path_factory.mktemp("serve_rms"))


@pytest.fixture(scope="session")
def pairs() -> tuple[list[str], list[str]]:
    """Eight testbed (prompt, response) pairs."""
    prompts, responses = world_texts()
    return prompts[:8], responses[:8]


TOKEN = "test-token-123"


@pytest.fixture(scope="session")
def served(ray_local, tiny_rms):
    """A real Ray Serve proxy on 127.0.0.1:<free port> with three apps, shut down after the session.

    /dense: the dense RM; /secure: the same RM behind a bearer token; /ens: the 3-member ensemble (UWO, lambda 0.5).
    Yields {"url": base URL, "port": port, "token": the /secure token}.
    """
    from ray import serve

    from umm_ray.config import load_config
    from umm_ray.serve.app import build_app, http_options

    port = free_port()
    common = ["--serve.port", str(port), "--serve.num_cpus", "0.5", "--serve.max_replicas", "1",
              "--serve.max_items_per_request", "16", "--serve.max_chars_per_item", "2000",
              "--serve.max_request_bytes", "65536"]
    dense = load_config(None, common + ["--reward.proxy_path", str(tiny_rms["dense"])])
    secure = load_config(None, common + ["--reward.proxy_path", str(tiny_rms["dense"]), "--serve.token", TOKEN])
    ens = load_config(None, common + ["--reward.proxy_path", str(tiny_rms["ensemble"]),
                                      "--ensemble.aggregate", "uwo", "--ensemble.uwo_lambda", "0.5"])
    serve.start(http_options=http_options(dense.serve))
    try:
        serve.run_many([serve.RunTarget(build_app(c), name=n, route_prefix=f"/{n}")
                        for n, c in (("dense", dense), ("secure", secure), ("ens", ens))])
        yield {"url": f"http://127.0.0.1:{port}", "port": port, "token": TOKEN}
    finally:
        serve.shutdown()
