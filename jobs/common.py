"""Shared CLI for every job: `python -m jobs.X [--config f.yaml] [--preset tiny] [--section.key value ...]`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from jobs.inputs import resolve_models, split_dry_run
from umm_ray.config import Config, ConfigError, describe, load_config, save_config
from umm_ray.layout import RunLayout
from umm_ray.ray_logs import SETUP_HOOK
from umm_ray.storage import StorageError, absolute_output_dir, check_shared_storage

# Every proxy PPO can run against: the default leaves out two ensemble aggregations to keep the CPU demo short.
ALL_PPO_RMS = ["dense", "umm_best", "ensemble-mean", "ensemble-wco", "ensemble-uwo", "dmoe"]

# Presets: partial config dicts applied below the YAML file and the CLI overrides.
PRESETS: dict[str, dict] = {
    # The CPU demo: the policy rank updates on 2 threads while the other roles wait (13% faster PPO steps), and the
    # ensemble proxy's members score in one reward actor (~10 s less start-up, ~5 s more scoring a 40-step run); the
    # same numbers to the last digit either way (docs/ppo-sweep.md).
    "tiny": {"ppo": {"update_threads": 2}, "ensemble": {"score_actors": "shared"}},
    # CPU, longer: clearer curves (about an hour on 2 cores).
    "small": {
        "testbed": {"n_prompts": 6000, "n_pairs": 4000},
        "sft": {"epochs": 3},
        "rm": {"epochs": 3},
        # 120 steps of 128 prompts at 5e-5: the dense gold rises beyond its CI, then falls, on 3 seeds of 3
        # (docs/ppo-sweep.md); small's proxy holds more gold than tiny's and is over-optimised later.
        "ppo": {"steps": 120, "actor_lr": 5e-5},
        "bon": {"n_prompts": 128, "n_samples": 64},
        "compare": {"seeds": 3, "ppo_rms": ALL_PPO_RMS},
    },
    # The paper's scale on a GPU cluster (documented, not run on CPU machines): an instruction-tuned Qwen2.5-0.5B as
    # the SFT policy and RM backbone, AlpacaFarm human preferences and evaluation prompts, a Llama-3-8B-class gold RM,
    # 3000 PPO steps, vLLM + DeepSpeed ZeRO-2 in bf16. rm.data set -> compare skips the testbed stages.
    # Every stage fits ONE 8 x A100-80G node (cluster.yaml's gpu_8x; `python -m jobs.plan --preset gpu --cluster
    # cluster.yaml`): RM training in bf16 autocast with gradient checkpointing on 2 GPUs per run (4 ensemble members
    # at once = 8 GPUs); PPO's 4 policy ranks share their 4 GPUs with the reference and the 2 vLLM engines
    # (resources.colocate all), the 4 proxy members take half a GPU each, and the 8B gold one whole large GPU.
    "gpu": {
        "run": {"num_gpus_per_actor": 1.0, "num_cpus_per_actor": 4.0},
        "resources": {"colocate": "all", "policy_gpus": 0.5, "policy_cpus": 8.0, "policy_accelerator": "A100",
                      "reference_gpus": 0.2, "rollout_gpus": 0.3, "proxy_gpus": 0.5,
                      "gold_gpus": 1.0, "gold_accelerator": "A100-80G"},
        "model": {"max_seq_len": 1024},
        "rm": {"base_path": "Qwen/Qwen2.5-0.5B-Instruct", "data": "tatsu-lab/alpaca_farm", "batch_size": 16, "lr": 1e-5,
               "epochs": 1, "num_workers": 2, "strategy": "deepspeed", "max_len": 1024, "precision": "bf16",
               "grad_checkpointing": True},
        "sft": {"lr": 1e-5, "batch_size": 8, "num_workers": 4},
        "merge": {"lr": 1e-2},
        "reward": {"gold": "Skywork/Skywork-Reward-Llama-3.1-8B", "batch_size": 16},
        "rollout": {"num_engines": 2, "max_new_tokens": 300, "gpu_memory_utilization": 0.35},
        "ppo": {"policy_path": "Qwen/Qwen2.5-0.5B-Instruct", "prompts": "tatsu-lab/alpaca_farm",
                "steps": 3000, "rollout_batch_size": 512, "micro_batch_size": 8, "world_size": 4, "zero_stage": 2,
                "actor_lr": 1e-6, "critic_lr": 5e-6},
        "bon": {"n_prompts": 500, "n_samples": 1024},
        "compare": {"ppo_rms": ALL_PPO_RMS},
    },
    # CPU, a real pretrained model: the testbed world with SmolLM2-135M-Instruct (fetched into the model cache on first
    # use, `python -m jobs.fetch_model smollm2-135m`) as the SFT base, so every RM starts from the SFT'd real LM.
    # fp32 (bf16 is ~19x slower than fp32 on CPUs without AVX-512 BF16; --rm.precision bf16 where they have it). One
    # layer in three is upcycled: all 30 layers of a UMM-2 need ~21 GiB at this batch (the memory check stops it).
    # Learning rates are the pretrained model's (SFT 2e-5, RM 1e-5, PPO actor 1e-6): the testbed's tear it apart.
    # Memory (`python -m jobs.plan --preset smol`, max_len-long rows): one training worker (it has both cores anyway),
    # 2048-token micro-batches in SFT and RM training, gradient checkpointing in PPO and 16-sequence scoring batches
    # keep every stage under the ~21 GiB Ray can use on a 24 GiB machine.
    # DMoERM is left out (its phase 1 takes ~1 min a step here). Stage times: docs/results-smol.md.
    "smol": {
        "testbed": {"n_prompts": 400, "n_pairs": 320},
        "sft": {"base_path": "smollm2-135m", "lr": 2e-5, "epochs": 1, "micro_batch_tokens": 2048, "num_workers": 1},
        "rm": {"lr": 1e-5, "epochs": 1, "micro_batch_tokens": 2048, "num_workers": 1},
        "moe": {"upcycle_layers": [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]},
        "ensemble": {"members": 4},
        "reward": {"batch_size": 16},
        "ppo": {"steps": 20, "rollout_batch_size": 16, "micro_batch_size": 8, "actor_lr": 1e-6, "critic_lr": 1e-5,
                "grad_checkpointing": True},
        "bon": {"n_prompts": 32, "n_samples": 16},
        "compare": {"expert_counts": [2, 4, 6], "dmoe": False, "ppo_rms": ["dense", "umm_best", "ensemble-wco"],
                    "ppo_kl_rms": ["dense"]},
    },
    # Seconds-scale stages, for the end-to-end test and smoke runs.
    "test": {
        "testbed": {"n_prompts": 200, "n_pairs": 120},
        "sft": {"epochs": 1, "num_workers": 1},
        "rm": {"epochs": 1, "num_workers": 1},
        "ensemble": {"members": 2},
        "ppo": {"steps": 3, "rollout_batch_size": 8, "micro_batch_size": 8},
        "bon": {"n_prompts": 8, "n_samples": 8},
        "rollout": {"max_new_tokens": 16},
        "compare": {"expert_counts": [2], "ppo_rms": ["dense", "ensemble-wco", "dmoe"], "dmoe": True,
                    "ppo_kl_rms": ["dense", "ensemble-wco"]},
    },
}


def parse_job_args(argv: list[str] | None = None, job: str = "job") -> Config:
    """Parse `--config`, `--preset` and dotted overrides into a validated Config; exit 2 with the reason on error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(f"usage: python -m jobs.{job} [--config FILE.yaml] [--preset {'|'.join(PRESETS)}] [--dry-run] "
              "[--section.key VALUE ...]")
        print("\n".join(describe()))
        raise SystemExit(0)
    path, preset, rest = None, "tiny", []
    i = 0
    while i < len(argv):
        if argv[i] in ("--config", "--preset") and i + 1 < len(argv):
            if argv[i] == "--config":
                path = argv[i + 1]
            else:
                preset = argv[i + 1]
            i += 2
            continue
        rest.append(argv[i])
        i += 1
    try:
        if preset not in PRESETS:
            raise ConfigError(f"--preset: unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        return load_config(path, rest, base=PRESETS[preset])
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def job_config(argv: list[str] | None, job: str) -> tuple[Config, bool]:
    """(config, dry_run) for job `job`: `--dry-run` is taken out of argv; in a real run, run.output_dir is made
    absolute here, on the driver, so every process on every node is given the same path (a relative one would resolve
    against each node's own working directory), and catalog model names resolve to their local directories (fetched
    on first use, `jobs.inputs.resolve_models`)."""
    argv, dry = split_dry_run(argv)
    cfg = parse_job_args(argv, job)
    try:
        output_dir = absolute_output_dir(cfg.run.output_dir)
    except StorageError as e:
        print(f"config error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if dry:  # catalog names spelled as the real run spells them (stage keys read them), but nothing fetched
        return resolve_models(cfg, fetch_missing=False), dry
    cfg.run.output_dir = output_dir
    return resolve_models(cfg), dry


def init_ray(cfg: Config, num_cpus: int = 8) -> None:
    """Join the running cluster (`ray job submit`, or `run.ray_address`), or start a local one, then check that every
    node sees run.output_dir (`umm_ray.storage.check_shared_storage`; made absolute here if the caller has not).

    'auto' joins a cluster when one is running and otherwise starts a local one (with a note), so the same job works
    under `ray job submit` and as a plain `python -m jobs.X`. 'local' always starts a fresh in-process cluster.
    """
    import ray

    if not ray.is_initialized():
        _connect(cfg, num_cpus)
    cfg.run.output_dir = absolute_output_dir(cfg.run.output_dir)
    try:
        checked = check_shared_storage(cfg.run.output_dir)
    except StorageError as e:
        print(f"storage error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    if checked:
        print(f"run.output_dir {cfg.run.output_dir}: shared by all {len(checked)} nodes", file=sys.stderr)


def _connect(cfg: Config, num_cpus: int) -> None:
    """`init_ray`'s connection: join `run.ray_address` or start a local cluster."""
    import ray

    # On a loaded 2-core machine the raylet's agents can take longer than Ray's default 30 s to come up.
    os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
    env = {"env_vars": {"TOKENIZERS_PARALLELISM": "false"}}
    local_env = {**env, "worker_process_setup_hook": SETUP_HOOK}  # no dashboard: see umm_ray.ray_logs
    if cfg.run.ray_address == "local":
        start_local_ray(num_cpus=num_cpus, include_dashboard=False, runtime_env=local_env)
        return
    try:
        ray.init(address=cfg.run.ray_address)  # a submitted job's runtime env is inherited as is
    except ConnectionError:
        if cfg.run.ray_address != "auto":
            raise
        print(f"no running Ray cluster found; starting a local one with {num_cpus} logical CPUs", file=sys.stderr)
        start_local_ray(num_cpus=num_cpus, include_dashboard=False, runtime_env=local_env)


def start_local_ray(attempts: int = 3, **kwargs) -> None:
    """`ray.init` a fresh local cluster, retrying when a busy machine makes node start-up time out."""
    import ray

    # "local" always starts a fresh cluster: without it ray.init joins one left running by `ray start` (make demo).
    kwargs.setdefault("address", "local")
    for attempt in range(1, attempts + 1):
        try:
            ray.init(**kwargs)
            return
        except Exception as e:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(e) or attempt == attempts:
                raise
            print(f"ray.init attempt {attempt} timed out (busy machine); retrying", file=sys.stderr)
            ray.shutdown()


def record_config(cfg: Config, stage: str) -> Path:
    """Save the effective config beside the stage's outputs; returns the stage directory."""
    out = RunLayout(cfg.run.output_dir).stage(stage)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    return out
