"""The cached stages as plain functions `fn(cfg, *args, out) -> JSON summary`: each calls the library.

Every stage function declares, with `@reads`, the config keys it (and the library code it calls) reads; the stage
cache keys on exactly those values (`umm_ray.pipeline`), so a stage re-runs when something it reads changed and not
otherwise. `umm_ray.graph` wires the stages together (which feeds which); a new config read in a stage's code path
must be added to its declaration here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from umm_ray.algo.bon import BoNCurve
from umm_ray.algo.bon import bon_curve as bon_curve_of
from umm_ray.config import Config
from umm_ray.data import load_prompts, write_jsonl
from umm_ray.eval.rm_metrics import evaluate_rms
from umm_ray.layout import RunLayout
from umm_ray.models.reward_model import read_manifest
from umm_ray.pipeline import reads
from umm_ray.report.build import build_report
from umm_ray.report.metrics import read_metrics
from umm_ray.report.records import PPOCurve, RMResult, SeedRuns
from umm_ray.resources import resource_reads
from umm_ray.reward_source import RewardSource, source_from_config
from umm_ray.testbed.prepare import WORLD_KEYS, prepare_world
from umm_ray.train.group import fit_group

# Each stage imports its heavy library module (Ray Train trainers, Ray actors with vLLM / DeepSpeed, matplotlib) when
# it runs: building the graph and answering cached stages stays light.

SHARED_HH = ("shared", "data", "hh-rlhf", "harmless-base", "test.jsonl.gz")


@dataclass(frozen=True)
class Proxy:
    """One proxy RM of the comparison: where it scores from, the stage that trained it, its kind (report row).

    Attributes:
        source: the checkpoint (an ensemble manifest carries its aggregate, e.g. '#uwo:0.5').
        stage: the RM stage that wrote it ('rm_dense', 'rm_umm4', 'rm_ensemble', 'rm_dmoe').
        kind: 'dense' | 'umm' | 'moe' | 'ensemble' | 'dmoe' (`umm_ray.report.records.ROW_KINDS`).
    """

    source: RewardSource
    stage: str
    kind: str


def gold_source(cfg: Config) -> RewardSource:
    """reward.gold as a source ('remote' stands for reward.remote_url)."""
    return source_from_config(cfg.reward.gold, cfg.reward.remote_url, "reward.gold")


def _layout(cfg: Config) -> RunLayout:
    return RunLayout(cfg.run.output_dir)


def uses_testbed(cfg: Config) -> bool:
    """The embedded world (prepare -> SFT -> gold-labelled pairs) unless rm.data names the user's own preferences."""
    return cfg.rm.data == "testbed"


def policy_path(cfg: Config) -> str:
    """The policy PPO starts from: ppo.policy_path, else the SFT stage's model."""
    return cfg.ppo.policy_path or str(_layout(cfg).sft_model)


def ppo_prompts(cfg: Config) -> str:
    """The PPO prompts: ppo.prompts, else the prepare stage's PPO split."""
    return cfg.ppo.prompts or str(_layout(cfg).prompts_ppo)


def check_own_data(cfg: Config) -> None:
    """With rm.data set the testbed stages are skipped, so the policy, prompts and gold must come from the user."""
    missing = []
    if not cfg.ppo.policy_path:
        missing.append("--ppo.policy_path (the SFT policy BoN samples from and PPO starts from)")
    if not cfg.ppo.prompts:
        missing.append("--ppo.prompts (prompt file or hub dataset; also BoN's unless --bon.prompts is set)")
    if cfg.reward.gold == "testbed":
        missing.append("--reward.gold (an HF reward model path or 'remote'; the testbed gold scores testbed prompts "
                       "only)")
    if missing:
        raise ValueError(f"compare with --rm.data {cfg.rm.data!r} (your own preferences) also needs: "
                         + "; ".join(missing))


def _gold_reads(cfg: Config) -> tuple[str, ...]:
    """reward.gold, plus the endpoint settings when it is 'remote' or a URL, or the dtype when it is a model."""
    remote = cfg.reward.gold == "remote" or cfg.reward.gold.startswith(("http://", "https://"))
    model = not remote and cfg.reward.gold != "testbed"
    return ("reward.gold",) + (("reward.remote_url", "reward.remote_token") if remote else ()) + (
        ("reward.gold_dtype",) if model else ())


@reads("run.seed", "rm.data", "rm.data_on_error", "rm.eval_data", "rm.val_frac", "rm.test_frac", "rm.split_seed")
def own_pairs(cfg: Config, out: Path) -> dict:
    """The user's preference data, split train/val/test by seed exactly as the RM stages split it, written to `out`
    so every RM is evaluated on the same held-out pairs."""
    from umm_ray.train.reward import load_rm_data  # heavy: Ray Train (see the note at the imports)

    data = load_rm_data(cfg)
    splits = {"train": data.train, "val": data.val, "test": data.test}
    for split, rows in splits.items():
        write_jsonl(out / f"pairs_{split}.jsonl", rows)
    stats = {"source": data.source, "notes": data.notes, **{f"n_{k}": len(v) for k, v in splits.items()}}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


@reads(*WORLD_KEYS)
def prepare(cfg: Config, out: Path) -> dict:
    """The testbed world in `out` (= layout.prepare); returns its world.json."""
    return json.loads(prepare_world(cfg).world_json.read_text())


def _train_reads(cfg: Config) -> tuple[str, ...]:
    """The Ray Train workers' resources.* keys when set (at their defaults run.num_*_per_actor decides)."""
    return resource_reads(cfg, "train")


def _rollout_reads(cfg: Config) -> tuple[str, ...]:
    return resource_reads(cfg, "rollout")


@reads("sft", "run.seed", "run.num_gpus_per_actor", "model.max_seq_len", "model.trust_remote_code",
       "model.chat_template", "rollout.max_new_tokens", "rollout.temperature", "rollout.top_p", also=_train_reads)
def sft(cfg: Config, out: Path) -> dict:
    """The SFT policy in `out` (= layout.sft); returns its model path and eval.json."""
    from umm_ray.train.sft import run_sft  # heavy: Ray Train

    layout = _layout(cfg)
    model_dir = run_sft(cfg, layout)
    return {"model": str(model_dir), **json.loads(layout.sft_eval.read_text())}


@reads("run.seed", "run.num_cpus_per_actor", "run.num_gpus_per_actor", "testbed.n_pairs", "testbed.label_noise",
       "testbed.label_length_bias", "rm.val_frac", "rm.test_frac", "rollout.backend",
       "rollout.max_new_tokens", "rollout.temperature", "rollout.top_p", "rollout.gpu_memory_utilization",
       "rollout.dtype", "rollout.enforce_eager", "rollout.tensor_parallel_size", "model.max_seq_len",
       "model.trust_remote_code", "model.chat_template", also=lambda cfg: _gold_reads(cfg) + _rollout_reads(cfg))
def pairs(cfg: Config, out: Path) -> dict:
    """Gold-labelled pairs sampled from the SFT policy into `out` (= layout.pairs); returns their stats."""
    from umm_ray.testbed.pairs import run_pairs  # heavy: Ray rollout actor

    layout = _layout(cfg)
    return run_pairs(cfg, layout.prompts_sft, layout.sft_model, out)


def _rm_reads(cfg: Config, kind: str, extra: dict) -> tuple[str, ...]:
    """The reads of one RM kind beyond the common ones (rm.kind itself is the stage's argument, not read)."""
    keys: tuple[str, ...] = resource_reads(cfg, "train")
    if not uses_testbed(cfg) or cfg.rm.eval_data:  # testbed pairs are always read with on_error 'skip'
        keys += ("rm.data_on_error",)
    if not uses_testbed(cfg):  # own data is split here by seed; own data RMs start from the user's policy
        keys += ("rm.val_frac", "rm.test_frac", "rm.split_seed") + (() if cfg.rm.base_path else ("ppo.policy_path",))
    if kind != "dmoe":  # the BT kinds' levers (DMoERM trains with its own spec)
        # micro_batch_tokens and share_prompt are keyed only when not at their defaults (keyed_at_default=False)
        keys += ("rm.precision", "rm.grad_checkpointing", "rm.micro_batch_tokens", "rm.share_prompt")
    if kind in ("umm", "moe"):
        keys += ("moe.top_k", "moe.aux_loss_coef", "moe.noisy_gating", "moe.upcycle_layers") + (
            () if "num_experts" in extra else ("moe.num_experts",))
    if kind == "umm":
        keys += ("merge",)
    if kind == "ensemble":
        keys += ("ensemble.members", "ensemble.placement", "ensemble.aggregate", "ensemble.uwo_lambda",
                 "ensemble.calibration_pairs")
    if kind == "dmoe":  # testbed capability labels: the gold's rubric terms, flipped at the label noise rate
        keys += ("dmoe",) + (("testbed.label_noise",) if uses_testbed(cfg) else ())
    return keys


@reads("rm.base_path", "rm.data", "rm.eval_data", "rm.epochs", "rm.batch_size", "rm.lr",
       "rm.num_workers", "rm.strategy", "rm.zero_stage", "rm.checkpoint_every", "rm.max_len", "run.seed",
       "run.num_gpus_per_actor", "model.trust_remote_code", "model.chat_template", also=_rm_reads)
def train_rm(cfg: Config, kind: str, extra: dict, out: Path) -> dict:
    """Train one RM kind into `out`; returns {'model': path, 'moe': path (umm), 'manifest': path (ensemble), ...}."""
    from umm_ray.train.reward import train_rm as train  # heavy: Ray Train

    cfg = _rm_config(cfg, kind, extra)
    result = train(cfg, _layout(cfg), kind=kind, stage_dir=out)
    summary = {"kind": kind, "model": str(result.model_path), "eval": result.eval, **extra}
    if kind == "umm":
        summary["moe"] = str(out / "moe" / "model")
    if kind == "ensemble":
        summary["manifest"] = str(result.model_path)
    return summary


def _rm_config(cfg: Config, kind: str, extra: dict) -> Config:
    """The config an RM stage trains with: rm.kind = kind, own data's RMs from the user's policy, the stage's
    expert count (extra['num_experts'])."""
    cfg = dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, kind=kind))
    if not uses_testbed(cfg) and not cfg.rm.base_path:  # own data: the RMs start from the user's policy
        cfg = dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, base_path=cfg.ppo.policy_path))
    if "num_experts" in extra:
        n = extra["num_experts"]
        cfg = dataclasses.replace(cfg, moe=dataclasses.replace(cfg.moe, num_experts=n, top_k=min(cfg.moe.top_k, n)))
    return cfg


def train_rm_group(cfg: Config, stages: list[tuple[Config, str, dict, Path]], group_dir: Path) -> list[str]:
    """compare.rm_worker_group: train the Ray Train runs of several RM stages, given as (their config, kind, extra,
    stage dir) as `train_rm` gets them, one after another in one worker group, before the stages run. Each run's model
    and marker land in its stage dir, where the stage's own `train_rm` finds them done and starts no worker group of
    its own; the stages stay the cache's units. Not a stage, and no input of one: results are the same either way.

    Left to their own stage: dmoe (its own phases) and an ensemble whose members train concurrently
    (ensemble.worker_group per_member). 'auto' is shared on a single node with CPUs and no GPUs (where the stages run
    one after another on the same cores anyway), else per_stage. Returns the stages whose runs it trained, named by
    their dirs under the run root ('rm_dense', 'seed1.rm_dense'; [] for per_stage)."""
    from umm_ray.actors.placement import on_single_cpu_node  # Ray: asks the running cluster for its nodes
    from umm_ray.train.bt_stage import prepare_inputs  # heavy: Ray Train
    from umm_ray.train.ensemble import worker_group_mode
    from umm_ray.train.reward import rm_runs

    mode = cfg.compare.rm_worker_group
    if mode == "per_stage" or (mode == "auto" and not on_single_cpu_node()):
        return []
    runs, names, root = [], [], Path(group_dir).parent
    for stage_cfg, kind, extra, out in stages:
        stage_cfg = _rm_config(stage_cfg, kind, extra)
        if kind == "dmoe" or (kind == "ensemble" and worker_group_mode(stage_cfg) != "shared"):
            continue
        data, source = prepare_inputs(stage_cfg, _layout(stage_cfg), None, None)
        runs += rm_runs(stage_cfg, kind, out, data, source)
        names.append(_run_label(out, root))
    if runs:
        # One worker group has one placement (the ensemble's members ask SPREAD, the rest PACK): on the single node
        # this mode runs on they place alike. Each run is named by its stage dir under the run root (every UMM's MoE
        # run is 'rm_umm_moe'; a group's checkpoints are named by the run). Neither is part of a run's fingerprint,
        # so the stage's own call still finds its runs done.
        first = runs[0][2].placement_strategy
        fit_group([(t, x, dataclasses.replace(s, placement_strategy=first, name=_run_label(s.stage_dir, root)))
                   for t, x, s in runs], group_dir, name="rms")
    return names


def _run_label(stage_dir: Path, root: Path) -> str:
    """'seed1.rm_umm2.moe' for <root>/seed1/rm_umm2/moe: a run's name that no other run of the job has."""
    path = Path(stage_dir)
    return ".".join(path.relative_to(root).parts if path.is_relative_to(root) else path.parts[-2:])


def compare_proxies(cfg: Config, rms: dict[str, dict]) -> dict[str, Proxy]:
    """Every proxy to evaluate, by display name. UMM stages also yield their unmerged MoE; an ensemble yields one
    proxy per aggregate (UWO with Best-of-N's lambda, compare.bon_uwo_lambda)."""
    proxies = {}
    for stage, summary in rms.items():
        kind = summary["kind"]
        if kind == "ensemble":
            manifest = RewardSource(summary["manifest"])
            for how, lam in (("mean", None), ("wco", None), ("uwo", cfg.compare.bon_uwo_lambda)):
                proxies[f"ensemble-{how}"] = Proxy(manifest.with_aggregate(how, lam), stage, "ensemble")
        elif kind == "umm":
            n = summary["num_experts"]
            proxies[f"umm-{n}"] = Proxy(RewardSource(summary["model"]), stage, "umm")
            proxies[f"moe-{n}"] = Proxy(RewardSource(summary["moe"]), stage, "moe")
        else:
            name = stage.rsplit("/", 1)[-1].removeprefix("rm_")  # 'seed1/rm_dense' -> 'dense'
            proxies[name] = Proxy(RewardSource(summary["model"]), stage, kind)
    return proxies


def mean_evals(evals: list[dict]) -> dict:
    """Per proxy, each seed's eval numbers averaged over the seeds ('_meta' and per-pair outcomes left out)."""
    out: dict[str, dict] = {}
    for name in evals[0]:
        if name.startswith("_"):
            continue
        # numbers every seed has (a seed's length_corr is None when its RM gave one score to every response)
        keys = [k for k in evals[0][name] if all(isinstance(e[name].get(k), (int, float)) for e in evals)]
        out[name] = {k: sum(e[name][k] for e in evals) / len(evals) for k in keys}
    return out


def hh_pairs_path(cfg: Config) -> Path | None:
    """The real HH harmless file for accuracy, if configured or (auto) present beside the project."""
    if cfg.compare.hh_eval not in ("", "auto"):
        return Path(cfg.compare.hh_eval)
    if cfg.compare.hh_eval == "auto":
        for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
            cand = base.parent.joinpath(*SHARED_HH)
            if cand.is_file():
                return cand
    return None


def _eval_reads(cfg: Config, proxies: dict[str, Proxy]) -> tuple[str, ...]:
    return _gold_reads(cfg) + (("compare.hh_eval_pairs",) if hh_pairs_path(cfg) else ())


@reads("run.seed", "rm.max_len", "reward.batch_size", "compare.hh_eval", "compare.expert_counts",
       "compare.bon_uwo_lambda", "compare.dmoe", "model.trust_remote_code", "model.chat_template", also=_eval_reads)
def evaluate(cfg: Config, proxies: dict[str, Proxy], out: Path) -> dict:
    """Held-out accuracy (against the test labels and against the gold's own preference), parameter count, forward
    passes and scoring throughput of every proxy, on the same test pairs; per-pair outcomes for the intervals."""
    from umm_ray.actors.reward import RewardSpec, build_scorer, spec_settings  # heavy: Ray (gold may be served)

    gold = build_scorer(RewardSpec.load(gold_source(cfg), "gold", **spec_settings(cfg, "gold")))
    sources = {k: p.source for k, p in proxies.items()}
    return evaluate_rms(cfg, sources, _layout(cfg).pairs_test, out, hh_pairs_path(cfg), gold=gold)


def _bon_reads(cfg: Config, proxies: dict[str, Proxy]) -> tuple[str, ...]:
    keys = _gold_reads(cfg) + (() if cfg.bon.policy_path else ("ppo.policy_path",))
    keys += resource_reads(cfg, "rollout", "proxy", "gold")
    return keys + (("ppo.prompts",) if not cfg.bon.prompts and not uses_testbed(cfg) else ())


@reads("bon.n_prompts", "bon.n_samples", "bon.policy_path", "bon.prompts", "rollout", "run.seed", "model.max_seq_len",
       "run.num_cpus_per_actor", "run.num_gpus_per_actor", "rm.max_len", "rm.data", "reward.batch_size",
       "reward.proxy_dtype", "compare.expert_counts", "compare.bon_uwo_lambda", "compare.dmoe",
       "model.trust_remote_code", "model.chat_template", also=_bon_reads)
def bon(cfg: Config, proxies: dict[str, Proxy], out: Path) -> dict:
    """Best-of-N for every proxy on the same samples of bon.policy_path (default: the PPO starting policy)."""
    from umm_ray.eval.bon import run_bon  # heavy: Ray rollout actors

    prompts = None
    if not cfg.bon.prompts and not uses_testbed(cfg):  # own data: BoN samples the PPO prompts
        prompts = [p.prompt for p in load_prompts(cfg.ppo.prompts, limit=cfg.bon.n_prompts)]
    curves = run_bon(cfg, cfg.bon.policy_path or policy_path(cfg), {k: p.source for k, p in proxies.items()},
                     gold=gold_source(cfg), prompts=prompts, out_dir=out)
    return {k: c.to_dict() for k, c in curves.items()}


def ppo_proxies(cfg: Config, evals: dict, proxies: dict[str, Proxy], kl: bool = False) -> dict[str, Proxy]:
    """The proxies PPO runs against (compare.ppo_rms, or compare.ppo_kl_rms for the KL-penalised regime when `kl`),
    resolving 'umm_best' to the UMM with the best validation accuracy in `evals` (with several seeds: `mean_evals`,
    so every seed resolves it alike)."""
    chosen = {}
    for name in (cfg.compare.ppo_kl_rms if kl else cfg.compare.ppo_rms):
        if name == "dmoe" and not cfg.compare.dmoe:
            continue  # the default list names it; it runs only when compare.dmoe trains it (the key's help says so)
        if name == "umm_best":
            umms = [k for k, p in proxies.items() if p.kind == "umm"]
            if not umms:
                continue
            name = max(umms, key=lambda k: (evals[k].get("acc_val", 0.0), -len(k)))
        if name not in proxies:
            key = "compare.ppo_kl_rms" if kl else "compare.ppo_rms"
            raise ValueError(f"{key}: {name!r} is not a trained RM; have {sorted(proxies)}")
        proxy = proxies[name]
        if proxy.source.aggregate == "uwo":  # PPO's UWO lambda differs from BoN's (Coste et al.: 0.1 vs 0.5)
            proxy = dataclasses.replace(proxy, source=proxy.source.with_aggregate("uwo", cfg.ensemble.uwo_lambda))
        chosen[name] = proxy
    return chosen


def _ppo_reads(cfg: Config, proxy: Proxy) -> tuple[str, ...]:
    ensemble = ("ensemble.aggregate", "ensemble.uwo_lambda", "ensemble.placement") if proxy.source.is_manifest else ()
    return _gold_reads(cfg) + ensemble + resource_reads(cfg, "policy", "rollout", "reference", "proxy", "gold")


@reads("ppo", "rollout", "run.seed", "run.num_cpus_per_actor", "run.num_gpus_per_actor", "model.max_seq_len",
       "model.trust_remote_code", "model.chat_template", "rm.max_len", "reward.batch_size", "reward.proxy_dtype",
       also=_ppo_reads)
def ppo(cfg: Config, proxy: Proxy, out: Path, pool=None) -> dict:
    """One PPO run against `proxy`; `pool` (a `RolePool`) lets consecutive runs share their actors."""
    from umm_ray.ppo.driver import run_ppo  # heavy: DeepSpeed policy ranks, vLLM engines

    t0 = time.perf_counter()
    run_ppo(cfg, policy_path(cfg), proxy.source, gold_source(cfg), ppo_prompts(cfg), out, pool=pool)
    rows = read_metrics(out / "metrics.jsonl")
    return {"spec": str(proxy.source), "rows": rows, "seconds": time.perf_counter() - t0,
            "batch_size": cfg.ppo.rollout_batch_size}


def dmoe_note(cfg: Config) -> str:
    """Where the DMoERM baseline's capability labels came from: the report says it beside its row."""
    if uses_testbed(cfg):
        return ("dmoe (DMoERM baseline): its capability labels come from the testbed gold's rubric terms, so it sees "
                "the gold's decomposition of the reward, which the other RMs (trained on overall preferences only) do "
                "not; read its row as a reference with privileged supervision, not a like-for-like comparison.")
    return ("dmoe (DMoERM baseline): its capability labels come from the cap_<name> columns of "
            f"{cfg.dmoe.capability_data or cfg.rm.data}, supervision the other RMs (overall preferences only) do not "
            "get.")


def _stack(values: list) -> list | None:
    """Per-seed values -> [S, ...], or None when any seed lacks them (e.g. a stage cached before they were kept)."""
    return None if any(v is None for v in values) else list(values)


def _ppo_seeds(name: str, runs: list[dict], batch_size: int) -> list[PPOCurve] | None:
    """One proxy's PPO curve per seed, or None unless every seed ran it."""
    got = [r.get(name) for r in runs]
    if not got or not all(got):
        return None
    return [PPOCurve.from_metrics(r["rows"], batch_size=r.get("batch_size", batch_size)) for r in got]


def seed_runs(name: str, evals: list[dict], bon_scores: list[dict], result, batch_size: int) -> SeedRuns:
    """One row's per-seed data from each seed's eval summary, BoN scores.json and PPO stage summaries."""
    outs = [e.get(name, {}).get("outcomes") or {} for e in evals]
    bon = [b["proxy"].get(name) if b else None for b in bon_scores]
    return SeedRuns(acc_test=_stack([o.get("test") for o in outs]), acc_gold=_stack([o.get("gold") for o in outs]),
                    acc_hh=_stack([o.get("hh") for o in outs]), bon_proxy=_stack(bon),
                    bon_gold=_stack([b["gold"] if b else None for b in bon_scores]) if bon_scores else None,
                    ppo=_ppo_seeds(name, result.ppo, batch_size), ppo_kl=_ppo_seeds(name, result.ppo_kl, batch_size))


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def mean_ppo(curves: list[PPOCurve]) -> PPOCurve:
    """The seeds' PPO curves averaged step by step (the report's point values); seed 0's when there is one."""
    if len(curves) == 1:
        return curves[0]
    mean = lambda xs: [sum(v) / len(v) for v in zip(*xs)]  # noqa: E731
    first = curves[0]
    return dataclasses.replace(first, kl=mean([c.kl for c in curves]), gold=mean([c.gold for c in curves]),
                               proxy=mean([c.proxy for c in curves]), kl_k1=None, kl_k3=None, gold_sd=None,
                               proxy_sd=None)


def report(cfg: Config, result, out: Path, notes: list[str]) -> Path:
    """The comparison report from every seed's stage results (a `graph.CompareResult`); a dmoe row adds the note on
    its capability labels, the eval's gold judgement the noise ceiling."""
    proxies, evals = result.proxies, result.evals
    if any(p.kind == "dmoe" for p in proxies.values()):
        notes = [*notes, dmoe_note(cfg)]
    ceiling = evals[0].get("_meta", {}).get("noise_ceiling") if evals else None
    if ceiling:
        notes = [*notes, f"Noise ceiling: the test labels agree with the gold's own preference on "
                         f"{100 * sum(ceiling) / len(ceiling):.1f}% of the {len(ceiling)} test pairs; an RM that "
                         "ranked exactly like gold would score that on 'acc test' (and 1.0 on 'acc gold labels')."]
    gold_r = evals[0].get("_meta", {}).get("gold_length_corr") if evals else None
    if gold_r is not None:
        notes = [*notes, f"Length: on the same test responses the gold's score correlates with word count at r = "
                         f"{gold_r:+.2f}; an RM well above that rewards length beyond what gold does ('score~words r' "
                         "in the cost table), the shortcut PPO found first in the tiny worlds (docs/ppo-sweep.md)."]
    bon_scores = [json.loads((Path(cfg.run.output_dir) / stage / "scores.json").read_text())
                  for stage in result.bon_stages]
    results = []
    for name, proxy in proxies.items():
        rows = [e.get(name, {}) for e in evals]
        seeds = seed_runs(name, evals, bon_scores, result, cfg.ppo.rollout_batch_size)
        bon = [BoNCurve.from_dict(b[name]) for b in result.bon if name in b]
        bon_curve = None
        if seeds.bon_proxy is not None:
            flat = lambda a: [p for seed in a for p in seed]  # noqa: E731  [S][P][N] -> [S*P][N]
            bon_curve = bon_curve_of(flat(seeds.bon_proxy), flat(seeds.bon_gold))
        elif bon:
            bon_curve = bon[0]
        results.append(RMResult(
            name=name, kind=proxy.kind, params=rows[0].get("params"), throughput=rows[0].get("throughput"),
            forward_passes=rows[0].get("forward_passes"), acc_testbed=_mean([r.get("acc_test") for r in rows]),
            acc_hh=_mean([r.get("acc_hh") for r in rows]), acc_gold=_mean([r.get("acc_gold") for r in rows]),
            bon=bon_curve, ppo=mean_ppo(seeds.ppo) if seeds.ppo else None, seeds=seeds,
            ppo_kl=mean_ppo(seeds.ppo_kl) if seeds.ppo_kl else None,
            notes=_source_note(proxy), length_corr=_mean([r.get("length_corr") for r in rows])))
    return build_report(results, config=cfg, out_dir=out, notes=notes)


def _source_note(proxy: Proxy) -> str:
    """The report's 'source / notes' cell: where the RM came from and, for an ensemble, the common scale its members
    were put on (each member's mean and std over the calibration pairs' responses, from its manifest)."""
    note = str(proxy.source)
    if proxy.kind == "dmoe":
        note += " (capability labels: see the note on dmoe)"
    if proxy.source.is_manifest:
        manifest = read_manifest(proxy.source.location)
        means = ", ".join(f"{m:.3g}" for m, _ in manifest["scale"])
        stds = ", ".join(f"{sd:.3g}" for _, sd in manifest["scale"])
        note += (f" (members standardised on {manifest['calibration_pairs'] or '?'} calibration pairs: "
                 f"means {means}; stds {stds})")
    return note
