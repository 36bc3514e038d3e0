"""Shared test fixtures: tiny testbed worlds (tokenizer, policy, reward models, manifests, prompts, gold-labelled
pairs) and the runner for `python -m jobs.X` drivers in a subprocess, as `ray job submit` would start them.

Plain functions, imported as `from tests.fixtures import ...` (pytest's importlib mode does not let test modules
import conftest files); each test keeps its own sizes and seeds, so what a test checks does not change.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The smallest testbed model the tests use: one layer, hidden 64 (head_dim is fixed at 64), context 128.
SMALL = {"hidden_size": 64, "num_layers": 1, "intermediate_size": 64, "max_seq_len": 128}


# ---------------------------------------------------------------------------------------------------------------------
# Tiny worlds.


def tiny_corpus(n_prompts: int, seed: int = 0, responses_per_prompt: int = 2) -> tuple[list, list[str]]:
    """(prompt records, texts): `n_prompts` testbed prompts and, per prompt, `prompt + response` for that many
    programmatic SFT responses (one seeded RNG for all): realistic text to train a tokenizer on."""
    from umm_ray.testbed.world import make_prompts, sft_responses

    records = make_prompts(n_prompts, seed=seed)
    rng = random.Random(seed)
    return records, [r.prompt + x for r in records for x in sft_responses(r, responses_per_prompt, rng)]


def tiny_tokenizer(texts: list[str], vocab_size: int = 300, out_dir: Path | None = None):
    """The testbed's BPE tokenizer trained on `texts` (saved to `out_dir` when given)."""
    from umm_ray.testbed.tokenizer import train_tokenizer

    return train_tokenizer(texts, vocab_size=vocab_size, out_dir=out_dir)


def save_tiny_lm(out_dir: Path, tok, family: str = "llama", seed: int = 0, **sizes) -> str:
    """A tiny testbed causal LM of `family` with `tok`, saved as one HF directory; returns its path."""
    from umm_ray.testbed.models import make_causal_lm, save_model

    return str(save_model(make_causal_lm(family, tok, seed=seed, **sizes), tok, out_dir))


def save_tiny_rm(out_dir: Path, tok, family: str = "llama", seed: int = 0, head_std: float | None = None,
                 nan_head: bool = False, **sizes) -> str:
    """A tiny testbed reward model (num_labels 1) saved as an HF directory; returns its path.

    head_std: re-initialise the score head with this std (the default init makes every reward ~0, which would hide
    ordering bugs). nan_head: a corrupted checkpoint whose head scores NaN for every input.
    """
    import torch

    from umm_ray.testbed.models import make_reward_model, save_model

    model = make_reward_model(family, tok, seed=seed, **sizes)
    with torch.no_grad():
        if head_std is not None:
            torch.nn.init.normal_(model.score.weight, std=head_std)
        if nan_head:
            model.score.weight.fill_(float("nan"))
    return str(save_model(model, tok, out_dir))


def hub_cache_model(hf_home: Path, repo_id: str, model_dir: str | Path, revision: str = "a" * 40,
                    pickle_only: bool = False) -> Path:
    """Lay out a real HF hub cache under `hf_home` holding `model_dir` as hub model `repo_id`: blobs, a snapshot of
    symlinks to them at `revision`, and refs/main, as `huggingface_hub` writes it. `pickle_only` replaces the
    safetensors weights by a pickled pytorch_model.bin (a repo umm_ray must refuse). Returns the snapshot dir."""
    import hashlib
    import shutil

    import torch
    from safetensors.torch import load_file

    repo = Path(hf_home) / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap, blobs = repo / "snapshots" / revision, repo / "blobs"
    snap.mkdir(parents=True)
    blobs.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    staged = Path(hf_home) / "staging" / repo_id.replace("/", "--")
    shutil.copytree(model_dir, staged)
    if pickle_only:
        for f in staged.glob("*.safetensors"):
            torch.save(load_file(str(f)), staged / "pytorch_model.bin")
            f.unlink()
    for f in sorted(staged.iterdir()):
        blob = blobs / hashlib.sha256(f.read_bytes()).hexdigest()
        shutil.copyfile(f, blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    shutil.rmtree(staged)
    return snap


def use_hf_cache(monkeypatch, hf_home: Path) -> dict[str, str]:
    """Point this process at the HF cache in `hf_home`, offline (no hub here); returns the same settings as env vars
    for Ray actors (`runtime_env={"env_vars": ...}`). huggingface_hub read the environment when it was imported, so
    its constants are patched as well as the environment."""
    from huggingface_hub import constants

    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(hf_home) / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return env


def chat_world(root: Path, seed: int = 0) -> dict:
    """A tiny chat-model world with the real model's quirks (SmolLM2-135M-Instruct's shape): a testbed tokenizer
    with its ChatML template and eos = pad = `<|im_end|>`, a random-init Llama with tied embeddings and 3 KV heads
    (`testbed.models.CHAT_MODEL`) as policy, and a reward model of the same shape with a non-zero score head.

    Returns:
        {"tok": the tokenizer, "plain_tok": the same without a template, "lm": causal-LM dir, "rm": RM dir,
         "prompts": testbed prompts}.
    """
    from umm_ray.testbed.models import CHAT_MODEL
    from umm_ray.testbed.tokenizer import with_chat_template

    records, texts = tiny_corpus(30, seed=seed)
    plain = tiny_tokenizer(texts, vocab_size=300)
    tok = with_chat_template(plain)
    return {"tok": tok, "plain_tok": plain, "prompts": [r.prompt for r in records],
            "lm": save_tiny_lm(root / "lm", tok, "llama", seed=seed, **CHAT_MODEL),
            "rm": save_tiny_rm(root / "rm", tok, "llama", seed=seed, head_std=0.5, **CHAT_MODEL)}


def write_manifest(path: Path, members: list[str], aggregate: str | None = None, lam: float | None = None,
                   scale: list | None = None) -> str:
    """An ensemble manifest at `path`: member paths (relative to it, or absolute), each member's [mean, std] (`scale`;
    default [0, 1] each: raw scores), and aggregate / lambda when given (a manifest without them means mean, lambda
    0)."""
    spec = {"members": list(members), "scale": scale if scale is not None else [[0.0, 1.0]] * len(members)}
    if aggregate is not None:
        spec["aggregate"] = aggregate
    if lam is not None:
        spec["lambda"] = lam
    path.write_text(json.dumps(spec))
    return str(path)


def write_prompts(path: Path, records) -> str:
    """Prompt records as the JSONL the jobs read ({"prompt", "family", ...} per line)."""
    from umm_ray.data.jsonl import write_jsonl

    write_jsonl(path, records)
    return str(path)


def write_testbed_pairs(world, noise: float, seed: int, fracs=(0.7, 0.15, 0.15)) -> None:
    """Pairs of two programmatic SFT responses per prompt labelled by the testbed gold (`label_pairs`), split by
    prompt into world.pairs_{train,val,test} — the same kind of data the pairs stage writes from SFT samples."""
    from umm_ray.data import read_jsonl, split_pairs, write_jsonl
    from umm_ray.testbed.gold import TestbedGold
    from umm_ray.testbed.prepare import label_pairs

    by_prompt: dict[str, list[str]] = {}
    for _, row in read_jsonl(world.sft_data):
        if row["response"].strip():  # the world has a few whitespace-only answers; a comparison needs two texts
            by_prompt.setdefault(row["prompt"], []).append(row["response"])
    prompts, a, b = [], [], []
    for prompt, responses in by_prompt.items():
        for i in range(0, len(responses) - 1, 2):
            prompts.append(prompt)
            a.append(responses[i])
            b.append(responses[i + 1])
    pairs, _ = label_pairs(prompts, a, b, TestbedGold(), noise=noise, seed=seed)
    random.Random(seed).shuffle(pairs)
    for path, part in zip((world.pairs_train, world.pairs_val, world.pairs_test), split_pairs(pairs, fracs, seed)):
        write_jsonl(path, part)


# ---------------------------------------------------------------------------------------------------------------------
# Job drivers in a subprocess.


def job_env(**extra: str) -> dict[str, str]:
    """The environment a job driver gets: this one, the project on PYTHONPATH, no tokenizer thread pools."""
    return {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(ROOT), **extra}


def start_job(module: str, args: list[str], log: Path | None = None, env: dict[str, str] | None = None,
              **popen_kw) -> subprocess.Popen:
    """Start `python -m module args` from the project root; output goes to `log` (or a text pipe when None)."""
    out = open(log, "w") if log is not None else subprocess.PIPE  # noqa: SIM115 (the child owns it until exit)
    return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT, env=env or job_env(), text=True,
                            stdout=out, stderr=subprocess.STDOUT, **popen_kw)


def finish_job(proc: subprocess.Popen, log: Path, timeout: float = 1500) -> str:
    """Wait for a job started with a log file; assert it exited 0 and return the log text."""
    rc = proc.wait(timeout=timeout)
    text = Path(log).read_text()
    assert rc == 0, f"{proc.args[2]} exited {rc}:\n{text[-4000:]}"
    return text


def run_job(module: str, args: list[str], log: Path, timeout: float = 1500) -> str:
    """Run `module` with `args` to completion, logging to `log`; assert it exits 0 and return the log text."""
    return finish_job(start_job(module, args, log), log, timeout)


def run_job_captured(module: str, args: list[str], timeout: float = 1800,
                     env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `module` to completion with stdout/stderr captured separately; the caller checks the return code."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env or job_env(), capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------------------------------
# Private multi-node Ray clusters on this machine (`ray start` processes on free ports and a private temp dir).


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nobody listens on now and that this test process never handed out before. The kernel may
    give two binds in a row the same port once the first socket is closed, and `ray start` refuses a port named twice
    (CI saw dashboard-agent and runtime-env-agent both get 55111); others run Ray here, so never assume 8000 is free."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def stop_own_cluster(temp_dir: Path) -> None:
    """Kill only the processes of this cluster: those naming its private temp dir, and their descendants."""
    import psutil  # only the cluster tests use it

    me = psutil.Process()
    skip = {me.pid} | {p.pid for p in me.parents()}
    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        if p.pid not in skip and any(str(temp_dir) in a for a in (p.info["cmdline"] or [])):
            procs[p.pid] = p
            try:
                procs.update({c.pid: c for c in p.children(recursive=True)})
            except psutil.NoSuchProcess:
                pass
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=15)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=15)


@contextlib.contextmanager
def multinode_cluster(workers: int, worker_cpus: int = 1):
    """A head (no CPUs, like cluster.yaml's) plus `workers` worker nodes, each `ray start`ed from its own working
    directory `<temp>/node<i>` (the head's is `<temp>/head`), as separate machines would have; ports are free ones and
    the temp dir is private, so other Ray clusters on the machine are untouched. Yields {"address", "env",
    "temp_dir", "node_dirs"}; on exit only this cluster's processes are killed."""
    temp_dir = Path(tempfile.mkdtemp(prefix="umm_mn_", dir="/tmp"))  # short: Unix socket paths are limited
    env = {**job_env(), "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ""}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    gcs = free_port()
    common = [f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--node-manager-port={free_port()}",
              f"--object-manager-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
              f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    node_dirs = [temp_dir / "head"] + [temp_dir / f"node{i}" for i in range(workers)]

    def new_ports(args: list[str]) -> list[str]:  # every node, and every retry, on ports of its own
        return [a if "-port=" not in a else f"{a.split('=')[0]}={free_port()}" for a in args]

    try:
        for i, cwd in enumerate(node_dirs):
            cwd.mkdir()
            if i == 0:
                cmd = ["start", "--head", f"--port={gcs}", "--num-cpus=0", "--include-dashboard=false",
                       f"--ray-client-server-port={free_port()}"]
            else:
                cmd = ["start", f"--address=127.0.0.1:{gcs}", f"--num-cpus={worker_cpus}"]
                common = new_ports(common)
            for _ in range(3):  # a port Ray itself took at random since we chose ours: choose again
                proc = subprocess.run([ray_bin, *cmd, *common], cwd=cwd, env=env, capture_output=True, text=True,
                                      timeout=300)
                clash = any(m in proc.stderr for m in ("port number", "already in use"))
                if proc.returncode == 0 or not clash or i == 0:
                    break
                common = new_ports(common)
            assert proc.returncode == 0, f"ray {' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        yield {"address": f"127.0.0.1:{gcs}", "env": env, "temp_dir": temp_dir, "node_dirs": node_dirs}
    finally:
        stop_own_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------------
# Report rows whose answer is known (tests/report).


def bon_scores(rng, hacked: bool, seeds=2, prompts=40, n=16):
    """(proxy, gold), each [S, P, N]. A hacked proxy scores two bad samples of every prompt highest: its best-of-16
    picks them, so gold falls at large n; the honest proxy is gold plus a little noise."""
    gold = rng.normal(size=(seeds, prompts, n))
    proxy = gold + 0.3 * rng.normal(size=gold.shape)
    if hacked:
        gold[..., :2] = -2.0
        proxy[..., :2] = 4.0 + rng.normal(size=(seeds, prompts, 2))
    return proxy, gold


def ppo_curves(rng, drop: float, seeds=2, steps=24, sd=0.3, batch=64):
    """Gold rises to the middle then falls by `drop`; each step a batch mean with sd/sqrt(batch) noise."""
    import numpy as np

    from umm_ray.report.records import PPOCurve

    t = np.arange(steps)
    base = np.where(t <= steps // 2, 0.05 * t, 0.05 * (steps // 2) - drop * (t - steps // 2) / (steps // 2))
    out = []
    for _ in range(seeds):
        gold = base + rng.normal(0, sd / np.sqrt(batch), steps)
        out.append(PPOCurve(steps=t.tolist(), kl=(0.05 * t).tolist(), gold=gold.tolist(), proxy=(0.2 * t).tolist(),
                            proxy_std0=1.0, gold_std0=1.0, gold_sd=[sd] * steps, proxy_sd=[sd] * steps,
                            batch_size=batch))
    return out


def report_row(name, kind, bon, ppo, acc=None):
    """An RMResult with per-seed data: `bon` = (proxy, gold) [S, P, N], `ppo` = one curve per seed."""
    import numpy as np

    from umm_ray.algo.bon import bon_curve
    from umm_ray.report.records import PPOCurve, RMResult, SeedRuns

    proxy, gold = bon
    seeds = SeedRuns(acc_test=acc, bon_proxy=proxy.tolist(), bon_gold=gold.tolist(), ppo=ppo)
    mean_ppo = PPOCurve(steps=ppo[0].steps, kl=ppo[0].kl, gold=np.mean([c.gold for c in ppo], 0).tolist(),
                        proxy=ppo[0].proxy, proxy_std0=1.0, gold_std0=1.0)
    return RMResult(name, kind, bon=bon_curve(proxy.reshape(-1, proxy.shape[-1]), gold.reshape(-1, gold.shape[-1])),
                    ppo=mean_ppo, seeds=seeds)
