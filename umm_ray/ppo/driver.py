"""The PPO driver: generate -> score (proxy + gold; reference and policy forward run beside it) -> advantages ->
update -> sync -> log -> checkpoint.

    run_ppo(cfg, "runs/x/sft/model", RewardSource.parse("runs/x/rm_dense/model"), RewardSource("testbed"),
            "runs/x/prepare/prompts_ppo.jsonl", "runs/x/ppo")

`jobs.ppo` (one run) and the compare job's ppo_<proxy> stages (several runs sharing a `RolePool`) both call `run_ppo`.
It expects a Ray cluster (`jobs.common.init_ray`, or Ray's own auto-init on first use). Rerunning into the same
`out_dir` resumes from the latest checkpoint there.

The gold scores every step by default; with ppo.gold_every K it scores only the steps `gold_step` picks (1, K+1,
2K+1, ... and the last), and the other steps' metrics rows have no gold keys (nothing is filled in for them).

Roles (docs/design.md §3): PolicyGroup (DeepSpeed ZeRO ranks, policy + critic), RolloutActor x rollout.num_engines,
ReferenceActor, RewardGroup for the proxy (one actor per ensemble member, SPREAD) and for the gold.
"""

from __future__ import annotations

import json
import time
import zlib
from pathlib import Path

import ray
from tqdm import tqdm
from transformers import AutoTokenizer

from umm_ray.actors.reward import RewardGroup, RewardSpec, ensemble_members, spec_settings
from umm_ray.algo.ensemble import aggregate
from umm_ray.algo.kl import make_kl_controller
from umm_ray.algo.ppo import RunningMoments
from umm_ray.config import Config
from umm_ray.data.prompts import load_prompts
from umm_ray.ppo.assemble import build_experience, kl_stats, shape_scores
from umm_ray.ppo.data import PromptStream, validate_prompts
from umm_ray.ppo.experience import make_policy_batch
from umm_ray.ppo.roles import RolePool, Roles, generate, resume_state, sync_gap, sync_weights
from umm_ray.ppo.state import DriverState, capture_rng, latest_checkpoint, save_checkpoint
from umm_ray.ppo.timing import PhaseTimer
from umm_ray.report.metrics import MetricsLogger
from umm_ray.reward_source import RewardSource


PPO_LEVERS = ("precision", "grad_checkpointing", "micro_batch_tokens", "zero_stage")  # reported in summary.json


def run_ppo(cfg: Config, policy_path: str, proxy: RewardSource, gold: RewardSource, prompts_path: str,
            out_dir: str | Path, pool: RolePool | None = None) -> Path:
    """Train `policy_path` with PPO against `proxy`, measuring `gold`; returns `out_dir`.

    Args:
        cfg: the config (ppo, rollout, ensemble, reward, model, run sections are read).
        policy_path: HF causal LM to start from (also the frozen reference).
        proxy / gold: the testbed gold, an RM dir, an ensemble manifest (its aggregate, else ensemble.aggregate and
            ensemble.uwo_lambda), or an endpoint.
        prompts_path: prompt file / hub name for `data.load_prompts`.
        out_dir: run directory (metrics, checkpoints, final policy); an existing checkpoint there is resumed.
        pool: keeps the actors for the caller's next run (see `RolePool`); without one they are shut down at the end.
    """
    out = Path(out_dir).resolve()  # actors run in other working directories: hand them absolute paths only
    policy_path = str(Path(policy_path).resolve()) if Path(policy_path).exists() else policy_path
    tok = AutoTokenizer.from_pretrained(policy_path, trust_remote_code=cfg.model.trust_remote_code)
    prompts = load_prompts(prompts_path)
    validate_prompts(prompts, tok, cfg.model.max_seq_len - cfg.rollout.max_new_tokens, str(prompts_path),
                     cfg.model.chat_template)
    proxy_rs = RewardSpec.load(proxy, "proxy", **spec_settings(cfg, "proxy"))
    gold_rs = RewardSpec.load(gold, "gold", **spec_settings(cfg, "gold"))
    members = ensemble_members(proxy_rs)
    how, lam = "mean", 0.0  # one member: every aggregate is its score
    if len(members) > 1:  # only an ensemble reads the aggregate settings (the PPO stage's cache key relies on it)
        how = proxy.aggregate or cfg.ensemble.aggregate
        lam = cfg.ensemble.uwo_lambda if proxy.lam is None else proxy.lam

    own_pool = pool is None
    pool = pool or RolePool()
    # ensemble.score_actors: the reward actors get a spec per member, or the whole ensemble's spec (one actor)
    actor_specs = [proxy_rs] if len(members) > 1 and cfg.ensemble.score_actors == "shared" else members
    roles = pool.acquire(cfg, policy_path, actor_specs, gold_rs)
    policy, engines = roles.policy, roles.engines
    try:
        state = resume_state(cfg, out, policy, engines, roles.link)
        _train(cfg, roles, state, prompts, tok, how, lam, len(members), out)
        policy.save_hf(str(out / "policy"))
        peak = policy.peak_memory_mb()
    except BaseException:
        pool.shutdown()  # the actors' state is unknown after a failure: the next run starts them afresh
        raise
    if own_pool:
        pool.shutdown()
    if (out / "summary.json").is_file():  # a resumed run keeps the peak of the launches before it
        before = json.loads((out / "summary.json").read_text())["peak_memory_mb"]["policy_ranks"]
        peak = [max(a, b) for a, b in zip(peak, before)] if len(before) == len(peak) else peak
    summary = {"steps": cfg.ppo.steps, "peak_memory_mb": {"policy_ranks": peak}, "roles_reused": pool.last_reused,
               "proxy": proxy_rs.describe(), "aggregate": how if len(members) > 1 else None,
               "gold": gold_rs.describe(), "levers": {k: getattr(cfg.ppo, k) for k in PPO_LEVERS}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return out


def gold_step(step: int, gold_every: int, steps: int) -> bool:
    """Whether 1-based PPO step `step` (of `steps`) is scored by the gold: steps 1, K+1, 2K+1, ... (K = gold_every;
    the first shows the starting policy) and the last (where the run ends)."""
    return (step - 1) % gold_every == 0 or step == steps


def _train(cfg: Config, roles: Roles, state: DriverState, prompts: list, tok, how: str, lam: float, n_members: int,
           out: Path) -> None:
    """The PPO loop from `state.step` to `ppo.steps`: metrics every step, a checkpoint every K steps and at the end."""
    ppo, policy, engines = cfg.ppo, roles.policy, roles.engines
    kl_ctl, moments = make_kl_controller(ppo.kl_coef, ppo.kl_target, ppo.kl_horizon), RunningMoments()
    if state.step:
        kl_ctl.load_state_dict(state.kl_controller)
        moments.load_state_dict(state.reward_moments)
    stream = PromptStream(len(prompts), ppo.rollout_batch_size, cfg.run.seed)
    logger = MetricsLogger(out, start_step=state.step + 1)
    bar = tqdm(range(state.step, ppo.steps), initial=state.step, total=ppo.steps, desc="ppo", dynamic_ncols=True)
    last_ckpt_s = 0.0
    try:
        for step in bar:
            t = PhaseTimer()
            idx = stream.indices(step)
            with t("generate"):
                roll = generate(engines, [prompts[i].prompt for i in idx], seed=cfg.run.seed * 100_003 + step * 101)
                if roles.sleep:  # give the colocated policy ranks the GPU until the sync wakes the engines
                    ray.get([e.sleep.remote() for e in engines])
            batch = make_policy_batch(roll.prompt_ids, roll.response_ids, tok.pad_token_id or 0)
            # Proxy members, gold (on its steps), reference and policy forward read the same rollout on their own
            # actors: all start now. "score" is the wait for the scores; "reference" and "policy_forward" are what
            # is left of those two once the scores are in (0 when they finished first).
            with t("score"):
                scored = gold_step(step + 1, ppo.gold_every, ppo.steps)
                gold_refs = roles.gold.submit(roll.prompts, roll.responses) if scored else None
                proxy_refs = roles.proxy.submit(roll.prompts, roll.responses)
                ref_ref = roles.reference.logprobs_batch.remote(batch)
                forward_refs = policy.submit_forward(batch)
                member_scores = RewardGroup.collect(proxy_refs)
                gold_scores = RewardGroup.collect(gold_refs)[0] if scored else None
                proxy_scores = aggregate(member_scores, how, lam).float()
            with t("reference"):
                ref_logp = ray.get(ref_ref)
            with t("policy_forward"):
                logp, values = policy.collect_forward(forward_refs)
            with t("advantages"):
                shaped = shape_scores(proxy_scores, moments, ppo)
                exp, adv_stats = build_experience(batch, logp, values, ref_logp, shaped, kl_ctl.value, ppo)
                kl = kl_stats(logp, ref_logp, batch.response_mask)
                gap = sync_gap(roll, logp, batch.response_mask) if cfg.rollout.temperature == 1.0 else {}
            with t("update"):
                train_stats = policy.train_step(exp, step)
            with t("sync"):
                sync_weights(policy, engines, roles.link)
            kl_coef_used = kl_ctl.value
            kl_ctl.update(kl["kl_k1"], len(batch))

            n_tokens = batch.response_mask.sum().item()
            gold = {} if gold_scores is None else {"gold_reward": gold_scores.mean().item(),
                                                   "gold_reward_std": gold_scores.std().item()}
            logger.log(step + 1, {
                "proxy_reward": proxy_scores.mean().item(), "proxy_reward_std": proxy_scores.std().item(), **gold,
                **kl, **gap, "kl_coef": kl_coef_used, **train_stats, **adv_stats,
                "response_length": n_tokens / len(batch), "shaped_reward": shaped.mean().item(),
                **{f"proxy_member{i}": s.mean().item() for i, s in enumerate(member_scores) if n_members > 1},
                **t.as_metrics(), "time/last_checkpoint": last_ckpt_s,
                "tokens_per_s": n_tokens / t.seconds["generate"],
                "data_cursor": stream.cursor(step), "data_order": f"{zlib.crc32(str(idx).encode()):08x}",
                "sample": roll.prompts[0][-80:] + " ||| " + roll.responses[0][:200]})
            bar.set_postfix(proxy=f"{proxy_scores.mean():.3f}", gold=f"{gold['gold_reward']:.3f}" if gold else "-",
                            kl=f"{kl['kl_k2']:.3f}", len=f"{n_tokens / len(batch):.1f}")
            if (step + 1) % ppo.checkpoint_every == 0 or step + 1 == ppo.steps:
                logger.flush()  # the step's row is on disk before the checkpoint that covers it
                t0 = time.perf_counter()
                state = DriverState(step + 1, stream.cursor(step + 1), cfg.run.seed, kl_ctl.state_dict(),
                                    moments.state_dict(), capture_rng())
                save_checkpoint(out, state, policy.save_checkpoint, ppo.keep_checkpoints)
                last_ckpt_s = time.perf_counter() - t0
    except ray.exceptions.RayActorError as e:  # a dead policy rank / rollout engine: stop, checkpoint stays usable
        raise RuntimeError(f"ppo: an actor died during step {step + 1}: {e}\nThe last checkpoint "
                           f"({latest_checkpoint(out)}) is intact; rerun the same command to resume.") from None
    finally:
        logger.close()
