"""jobs.ppo end to end on a real Ray cluster: input validation, SIGKILL + resume, and a vLLM-backend run.

The driver runs as `python -m jobs.ppo` subprocesses that join the test's Ray cluster, as `ray job submit` would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import ray

from tests.fixtures import (finish_job, save_tiny_lm, save_tiny_rm, start_job, tiny_corpus, tiny_tokenizer,
                            write_manifest, write_prompts)
from umm_ray.report.metrics import read_metrics
from umm_ray.reward_source import RewardSource

GOLD = RewardSource("testbed")
src = RewardSource.parse


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny testbed world: tokenizer + Llama policy, a (randomly initialised) dense RM, 64 PPO prompts."""
    root = tmp_path_factory.mktemp("ppo_world")
    prompts, texts = tiny_corpus(64, seed=0)
    tok = tiny_tokenizer(texts, vocab_size=320)
    sizes = dict(hidden_size=64, num_layers=1, intermediate_size=128, max_seq_len=96)
    save_tiny_rm(root / "rm2", tok, seed=2, **sizes)
    return {"policy": save_tiny_lm(root / "policy", tok, seed=0, **sizes),
            "rm": save_tiny_rm(root / "rm", tok, seed=1, **sizes),
            "prompts": write_prompts(root / "prompts.jsonl", prompts),
            "ensemble": write_manifest(root / "ensemble.json", ["rm", "rm2"])}


def _args(world: dict, out: Path, address: str, steps: int, *extra: str) -> list[str]:
    return ["--run.output_dir", str(out), "--run.ray_address", address, "--ppo.policy_path", world["policy"],
            "--ppo.prompts", world["prompts"], "--reward.proxy_path", world["rm"], "--rollout.backend", "hf",
            "--ppo.steps", str(steps), "--ppo.rollout_batch_size", "4", "--ppo.micro_batch_size", "2",
            "--rollout.max_new_tokens", "8", "--model.max_seq_len", "96", "--ppo.checkpoint_every", "1",
            "--ppo.world_size", "2", "--ppo.zero_stage", "2", *extra]


def _start(args: list[str], log: Path) -> subprocess.Popen:
    # A new session: the driver and anything it spawns form one process group we can SIGKILL as a whole.
    return start_job("jobs.ppo", args, log, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 1200) -> str:
    return finish_job(proc, log, timeout)


def _latest_step(out: Path) -> int:
    pointer = out / "ppo" / "checkpoints" / "latest"
    try:
        return int(pointer.read_text().strip().split("_")[1])
    except (OSError, IndexError, ValueError):
        return 0


def _address(ray_local) -> str:
    return ray_local.get_runtime_context().gcs_address


def test_reward_proxy_chooses_and_checks_the_proxy(world, tmp_path):
    """reward.proxy: auto takes reward.proxy_path as it is; a kind must match the checkpoint (else a stop before
    any actor); 'remote' takes reward.remote_url."""
    from jobs.ppo import resolve_inputs
    from umm_ray.config import load_config

    base = ["--run.output_dir", str(tmp_path), "--ppo.policy_path", world["policy"], "--ppo.prompts", world["prompts"]]
    assert str(resolve_inputs(load_config(None, base + ["--reward.proxy_path", world["rm"]]))[1]) == world["rm"]
    assert str(resolve_inputs(load_config(None, base + ["--reward.proxy", "ensemble", "--reward.proxy_path",
                                                        world["ensemble"]]))[1]) == world["ensemble"]
    with pytest.raises(ValueError, match="reward.proxy is 'moe' but .* of kind 'dense'"):
        resolve_inputs(load_config(None, base + ["--reward.proxy", "moe", "--reward.proxy_path", world["rm"]]))
    url = "http://127.0.0.1:9"
    remote = load_config(None, base + ["--reward.proxy", "remote", "--reward.remote_url", url])
    assert str(resolve_inputs(remote)[1]) == url


def test_validation_fails_before_any_actor(world, tmp_path):
    from umm_ray.config import load_config
    from umm_ray.data.jsonl import write_jsonl
    from umm_ray.ppo.data import PromptOrderError
    from umm_ray.records import PromptRecord

    from umm_ray.ppo.driver import run_ppo

    cfg = load_config(None, ["--rollout.max_new_tokens", "16", "--model.max_seq_len", "96"])
    long = tmp_path / "long.jsonl"
    write_jsonl(long, [PromptRecord("List 2 fruits.\nAnswer:", source="a:1"),
                       PromptRecord("List 2 fruits. " * 40 + "\nAnswer:", source="a:2")])
    with pytest.raises(PromptOrderError, match=r"long.jsonl: prompt 1 \(a:2\) has \d+ tokens, more than the 80"):
        run_ppo(cfg, world["policy"], src(world["rm"]), GOLD, str(long), tmp_path / "out")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        run_ppo(cfg, world["policy"], src(world["rm"]), GOLD, str(empty), tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="reward source 'proxy'"):
        run_ppo(cfg, world["policy"], src(str(tmp_path / "no_rm")), GOLD, world["prompts"],
                tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_role_pool_reuses_the_actors_and_reproduces_a_fresh_run(ray_local, world, tmp_path):
    """Two runs through one RolePool (another proxy first): the second reuses every actor but the proxy, after a
    reset, and its metrics equal those of a run that started every actor afresh. The fresh run syncs weights through
    the object store and its engine sleeps after every rollout, the pooled ones sync over one collective group (the
    default) and never sleep: the same numbers either way."""
    from umm_ray.config import load_config
    from umm_ray.ppo.roles import RolePool

    from umm_ray.ppo.driver import run_ppo

    cfg = load_config(None, _args(world, tmp_path, "auto", 2)[2:])
    assert cfg.rollout.weight_sync == "collective"
    keys = ("proxy_reward", "gold_reward", "kl_k2", "policy_loss", "value_loss", "response_length", "data_order")
    via_store = load_config(None, _args(world, tmp_path, "auto", 2, "--rollout.weight_sync", "object_store",
                                        "--rollout.sleep_mode", "on")[2:])
    alone = RolePool()  # the fresh run's engines also sleep after every rollout (woken by the sync)
    try:
        fresh = run_ppo(via_store, world["policy"], src(world["rm"]), GOLD, world["prompts"], tmp_path / "fresh",
                        pool=alone)
        settings = ray.get(alone.roles.engines[0].engine_settings.remote())
        assert settings["sleep_mode"] is True and settings["sleeps"] == 2
    finally:
        alone.shutdown()
    pool = RolePool()
    try:
        run_ppo(cfg, world["policy"], src(world["ensemble"]), GOLD, world["prompts"], tmp_path / "first",
                pool=pool)
        engines, link = list(pool.roles.engines), pool.roles.link
        run_ppo(cfg, world["policy"], src(world["rm"]), GOLD, world["prompts"], tmp_path / "second",
                pool=pool)
        assert pool.roles.engines == engines and len(pool.roles.proxy.actors) == 1  # same engines, proxy swapped
        assert link is not None and pool.roles.link is link  # one weight-sync group for both runs
    finally:
        pool.shutdown()
    assert json.loads((tmp_path / "second" / "summary.json").read_text())["roles_reused"] is True
    assert json.loads((fresh / "summary.json").read_text())["roles_reused"] is False
    want, got = read_metrics(fresh / "metrics.jsonl"), read_metrics(tmp_path / "second" / "metrics.jsonl")
    assert len(want) == len(got) == 2
    for a, b in zip(want, got):
        for k in keys:
            assert b[k] == pytest.approx(a[k], abs=1e-5), (k, a["step"])


def test_an_ensemble_proxy_in_one_actor_trains_as_with_an_actor_per_member(ray_local, world, tmp_path):
    """ensemble.score_actors: the 2-member ensemble held whole by one reward actor (shared) and spread over an actor
    per member give the same PPO run, step for step."""
    from umm_ray.config import load_config
    from umm_ray.ppo.driver import run_ppo
    from umm_ray.ppo.roles import RolePool

    cfgs = {mode: load_config(None, _args(world, tmp_path, "auto", 2, "--ensemble.score_actors", mode)[2:])
            for mode in ("per_member", "shared")}
    keys = ("proxy_reward", "proxy_member0", "proxy_member1", "gold_reward", "kl_k2", "policy_loss", "value_loss")
    pool, actors = RolePool(), {}
    try:
        for mode, cfg in cfgs.items():
            run_ppo(cfg, world["policy"], src(world["ensemble"] + "#uwo:0.1"), GOLD, world["prompts"],
                    tmp_path / mode, pool=pool)
            actors[mode] = len(pool.roles.proxy.actors)
    finally:
        pool.shutdown()
    assert actors == {"per_member": 2, "shared": 1}
    want, got = (read_metrics(tmp_path / mode / "metrics.jsonl") for mode in ("per_member", "shared"))
    assert len(want) == len(got) == 2
    for a, b in zip(want, got):
        for k in keys:
            assert b[k] == pytest.approx(a[k], abs=1e-5), (k, a["step"])


def test_two_ppo_runs_at_once_on_their_own_pools_match_the_runs_alone(ray_local, world, tmp_path):
    """compare.parallel_ppo 2 as the compare graph runs it: two PPO runs in two threads, each on a RolePool of its
    own (own engines, policy ranks, weight-sync group), at the same time; each run's metrics equal the same run made
    alone."""
    from concurrent.futures import ThreadPoolExecutor

    from umm_ray.config import load_config
    from umm_ray.plan_parallel import check_parallel_ppo
    from umm_ray.ppo.driver import run_ppo
    from umm_ray.ppo.roles import RolePool

    # Half a logical CPU per actor and 2-member ensembles (the world's): both runs' actors at once fit the 8 CPUs of
    # ray_local, as check_parallel_ppo must agree.
    cfg = load_config(None, _args(world, tmp_path, "auto", 2, "--run.num_cpus_per_actor", "0.5",
                                  "--ensemble.members", "2", "--compare.parallel_ppo", "2")[2:])
    check_parallel_ppo(cfg)
    keys = ("proxy_reward", "gold_reward", "kl_k2", "policy_loss", "value_loss", "response_length", "data_order")
    proxies = {"dense": src(world["rm"]), "ensemble": src(world["ensemble"])}
    alone = run_ppo(cfg, world["policy"], proxies["dense"], GOLD, world["prompts"], tmp_path / "alone")
    pools = {name: RolePool() for name in proxies}
    try:
        with ThreadPoolExecutor(max_workers=2) as ex:
            outs = dict(zip(proxies, ex.map(lambda n: run_ppo(cfg, world["policy"], proxies[n], GOLD, world["prompts"],
                                                                tmp_path / f"at_once_{n}", pool=pools[n]), proxies)))
        assert set(pools["dense"].roles.engines).isdisjoint(pools["ensemble"].roles.engines)
    finally:
        for pool in pools.values():
            pool.shutdown()
    want, got = read_metrics(alone / "metrics.jsonl"), read_metrics(outs["dense"] / "metrics.jsonl")
    assert len(want) == len(got) == 2
    for a, b in zip(want, got):
        for k in keys:
            assert b[k] == pytest.approx(a[k], abs=1e-5), (k, a["step"])


@pytest.mark.slow
def test_sigkill_then_resume_has_every_step_once_in_the_same_order(ray_local, world, tmp_path):
    steps, kill_after = 6, 2
    address = _address(ray_local)
    # The uninterrupted reference run.
    ref_out = tmp_path / "ref"
    _finish(_start(_args(world, ref_out, address, steps), tmp_path / "ref.log"), tmp_path / "ref.log")
    reference = read_metrics(ref_out / "ppo" / "metrics.jsonl")
    assert [r["step"] for r in reference] == list(range(1, steps + 1))

    # The same run, SIGKILLed right after step `kill_after` is checkpointed, then resubmitted unchanged.
    out = tmp_path / "killed"
    proc = _start(_args(world, out, address, steps), tmp_path / "kill.log")
    deadline = time.time() + 1200
    while _latest_step(out) < kill_after and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = _latest_step(out)
    assert kill_after <= killed_at < steps, f"the run was not killed mid-way (checkpoint {killed_at} of {steps})"
    text = _finish(_start(_args(world, out, address, steps), tmp_path / "resume.log"), tmp_path / "resume.log")
    assert f"resumed from {out / 'ppo' / 'checkpoints' / f'step_{killed_at:06d}'} (step {killed_at})" in text

    rows = read_metrics(out / "ppo" / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # each step exactly once, in order
    assert [r["data_order"] for r in rows] == [r["data_order"] for r in reference]
    assert [r["data_cursor"] for r in rows] == [4 * i for i in range(steps)]
    # Weights, optimizer, sampler seeds and reward normaliser are all restored: the resumed steps replay the
    # uninterrupted run (CPU, fp32, fixed seeds), not just its data order.
    for a, b in zip(rows, reference):
        assert a["proxy_reward"] == pytest.approx(b["proxy_reward"], abs=1e-4), a["step"]
        assert a["gold_reward"] == pytest.approx(b["gold_reward"], abs=1e-4), a["step"]
    state = json.loads((out / "ppo" / "checkpoints" / f"step_{steps:06d}" / "driver_state.json").read_text())
    assert state["step"] == steps and state["cursor"] == 4 * steps
    assert sorted(p.name for p in (out / "ppo" / "checkpoints").iterdir()) == ["latest", "step_000005", "step_000006"]
    assert (out / "ppo" / "policy" / "model.safetensors").is_file()


@pytest.mark.slow
def test_vllm_backend_ensemble_proxy_run(ray_local, world, tmp_path):
    """vLLM rollout with weight sync, ZeRO-3 ranks, and a 2-member ensemble proxy aggregated with UWO."""
    out = tmp_path / "vllm"
    args = _args(world, out, _address(ray_local), 2, "--ppo.zero_stage", "3")
    args[args.index("--rollout.backend") + 1] = "vllm"
    args[args.index("--reward.proxy_path") + 1] = world["ensemble"] + "#uwo:0.1"
    _finish(_start(args, tmp_path / "vllm.log"), tmp_path / "vllm.log")
    rows = read_metrics(out / "ppo" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("proxy_reward", "gold_reward", "kl_k1", "kl_k2", "kl_k3", "entropy", "response_length",
                "clip_frac", "value_loss", "time/generate", "time/sync", "time/update", "proxy_member0",
                "proxy_member1"):
        assert all(r[key] is not None for r in rows), key
    summary = json.loads((out / "ppo" / "summary.json").read_text())
    assert summary["aggregate"] == "uwo"
    assert rows[1]["kl_k2"] > 0  # the policy moved after one update
    # ... and vLLM sampled step 2 from the synced weights: its log-probs are the policy's.
    assert rows[1]["rollout_logprob_gap_max"] < 1e-3


def _cluster_actor_pid(ray_local, class_name: str) -> int:
    """PID of a live actor process of `class_name` in *this test's* cluster (a descendant of its raylet only, so
    other clusters on the machine are never touched)."""
    import psutil
    from ray._private import ray_constants
    from ray._private.worker import _global_node

    raylet = _global_node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
    for proc in psutil.Process(raylet).children(recursive=True):
        try:
            if f"ray::{class_name}" in " ".join(proc.cmdline()):
                return proc.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no live {class_name} process under raylet {raylet}")


@pytest.mark.slow
def test_dead_reward_actor_is_restarted_dead_rollout_stops_cleanly(ray_local, world, tmp_path):
    steps = 8
    out = tmp_path / "faults"
    args = _args(world, out, _address(ray_local), steps, "--ppo.world_size", "1", "--ppo.zero_stage", "0")
    proc = _start(args, tmp_path / "faults.log")
    deadline = time.time() + 1200
    while _latest_step(out) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.kill(_cluster_actor_pid(ray_local, "RewardActor"), signal.SIGKILL)  # stateless: Ray restarts it, retries
    while _latest_step(out) < 4 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, (tmp_path / "faults.log").read_text()[-3000:]
    os.kill(_cluster_actor_pid(ray_local, "RolloutActor"), signal.SIGKILL)  # holds synced weights: the run stops
    rc = proc.wait(timeout=600)
    text = (tmp_path / "faults.log").read_text()
    assert rc != 0 and "ppo: an actor died during step" in text and "is intact; rerun the same command" in text
    stopped_at = _latest_step(out)
    assert 4 <= stopped_at < steps
    _finish(_start(args, tmp_path / "faults2.log"), tmp_path / "faults2.log")
    assert [r["step"] for r in read_metrics(out / "ppo" / "metrics.jsonl")] == list(range(1, steps + 1))


def test_gold_every_scores_the_gold_on_its_steps_only_and_the_report_builds(ray_local, world, tmp_path):
    """ppo.gold_every 2 over 4 steps: gold on steps 1, 3 and the last (4), absent from step 2's row; the proxy and KL
    are logged every step; the curve and the report build from the scored steps."""
    from umm_ray.config import load_config
    from umm_ray.ppo.driver import gold_step, run_ppo
    from umm_ray.report import PPOCurve, RMResult, build_report
    from umm_ray.report.records import SeedRuns

    assert [s for s in range(1, 8) if gold_step(s, 3, 7)] == [1, 4, 7]
    assert [s for s in range(1, 6) if gold_step(s, 1, 5)] == [1, 2, 3, 4, 5]
    args = _args(world, tmp_path, "auto", 4, "--ppo.gold_every", "2", "--ppo.world_size", "1",
                 "--ppo.zero_stage", "0")[2:]
    cfg = load_config(None, args)
    out = run_ppo(cfg, world["policy"], src(world["rm"]), GOLD, world["prompts"], tmp_path / "ppo")
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert [r["step"] for r in rows if "gold_reward" in r] == [1, 3, 4]
    assert all("gold_reward_std" not in r for r in rows if r["step"] == 2)
    assert all(r["proxy_reward"] is not None and r["kl_k2"] is not None for r in rows)
    curve = PPOCurve.from_metrics(rows, batch_size=4)
    assert curve.steps == [1, 3, 4] and curve.gold == [rows[i]["gold_reward"] for i in (0, 2, 3)]
    report = build_report([RMResult("dense", "dense", ppo=curve, seeds=SeedRuns(ppo=[curve]))], cfg,
                          tmp_path / "report")
    assert "| dense | dense |" in report.with_name("report.md").read_text()


@pytest.mark.slow
def test_ppo_job_starts_from_a_hub_id_policy_in_the_node_cache(world, tmp_path):
    """ppo.policy_path a hub id (no local path): the job accepts it and its policy rank, reference and rollout
    engine load the snapshot in their node's offline HF cache (HF_HOME of the fresh local cluster)."""
    from tests.fixtures import hub_cache_model, job_env

    home = tmp_path / "hf"
    hub_cache_model(home, "org/tiny-policy", world["policy"])
    args = _args(world, tmp_path / "run", "local", 1, "--ppo.world_size", "1", "--ppo.zero_stage", "0")
    args[args.index("--ppo.policy_path") + 1] = "org/tiny-policy"
    log = tmp_path / "ppo.log"
    finish_job(start_job("jobs.ppo", args, log, env=job_env(HF_HOME=str(home), HF_HUB_OFFLINE="1")), log)
    rows = read_metrics(tmp_path / "run" / "ppo" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1] and rows[0]["proxy_reward"] is not None
    assert (tmp_path / "run" / "ppo" / "policy" / "model.safetensors").is_file()
    assert (home / "hub" / ".locks" / "umm_ray" / "org--tiny-policy.lock").exists()  # resolved by `local_model`
