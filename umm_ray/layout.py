"""The layout of a run directory (`run.output_dir`): every path a stage writes or a job reads by default, spelled once.

    layout = RunLayout(cfg.run.output_dir)
    layout.sft_model          # <root>/sft/model
    layout.prompts_ppo        # <root>/prepare/prompts_ppo.jsonl
    layout.rm_model("umm", 4) # <root>/rm_umm4/model

    <root>/prepare/            the testbed world (umm_ray.testbed.prepare): tokenizer/, base/,
                               prompts_{sft,ppo,bon}.jsonl, sft.jsonl (SFT records), world.json (written last)
    <root>/sft/                model/ (the SFT policy), eval.json, metrics.json, loss_curve.png, ray_train/
    <root>/pairs/              pairs_{train,val,test}.jsonl, stats.json
    <root>/rm_<name>/          rm_dense, rm_umm<n>, rm_moe<n>, rm_ensemble, rm_dmoe: model/ (umm: also moe/model;
                               ensemble: manifest.json + member_<i>/model; dmoe: a DMoERM dir, plus router/, phase1/,
                               phase2/), eval.json, loss_curve.png
    <root>/rm_group/           ray_train/rms: the RM stages' shared worker group (compare.rm_worker_group), resume
                               state only
    <root>/eval/, bon/, ppo_<proxy>/, report/, compare/    the compare job's later stages
    <root>/seed<k>/rm_*/, eval/, bon/, ppo_<proxy>/    seed k > 0 of compare.seeds (seed 0 is the root's)
    <root>/ppo/                `jobs.ppo`'s run (metrics.jsonl, checkpoints/, policy/, summary.json)

Each cached stage also keeps `_done.json` in its directory (`umm_ray.pipeline`). Its resume state (`resume_state`:
Ray Train checkpoints under any `ray_train/`, PPO's `checkpoints/`) is only for an interrupted stage; a finished
stage's is deleted unless run.keep_checkpoints. No heavy imports: jobs spell their default paths with it before any
cluster exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PROMPT_SPLITS = ("sft", "ppo", "bon")
PAIR_SPLITS = ("train", "val", "test")
RM_KINDS = ("dense", "moe", "umm", "ensemble", "dmoe")
RAY_TRAIN_DIR = "ray_train"  # a Ray Train run's storage (checkpoints with optimizer state), wherever a stage nests it
PPO_CHECKPOINT_DIR = "checkpoints"  # a PPO stage's step checkpoints (`umm_ray.ppo.state`), at the stage's top level


def resume_state(stage_dir: Path) -> list[Path]:
    """What a stage keeps only to resume after an interruption: every `ray_train/` directory under it (a member's,
    a phase's, the stage's own) and its top-level PPO `checkpoints/`. Its model, metrics and evals are not in it."""
    stage_dir = Path(stage_dir)
    found = sorted(p for p in stage_dir.rglob(RAY_TRAIN_DIR) if p.is_dir() and not p.is_symlink())
    top = [p for p in found if not any(q in p.parents for q in found)]  # nested ones go with their parent
    ppo = stage_dir / PPO_CHECKPOINT_DIR
    return top + ([ppo] if ppo.is_dir() and not ppo.is_symlink() else [])


@dataclass(frozen=True)
class RunLayout:
    """Paths under one run directory; nothing is created or checked here."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))  # accept str; frozen, so set through object

    def stage(self, name: str) -> Path:
        """The directory of a cached stage (`umm_ray.pipeline.StageRunner` writes `_done.json` there)."""
        return self.root / name

    # prepare: the testbed world
    @property
    def prepare(self) -> Path:
        return self.root / "prepare"

    @property
    def tokenizer(self) -> Path:
        return self.prepare / "tokenizer"

    @property
    def base(self) -> Path:
        """The untrained tiny causal LM (+ tokenizer) SFT starts from."""
        return self.prepare / "base"

    def prompts(self, split: str) -> Path:
        """The prompt file of split 'sft', 'ppo' or 'bon' (disjoint)."""
        if split not in PROMPT_SPLITS:
            raise ValueError(f"prompt split {split!r} is not one of {PROMPT_SPLITS}")
        return self.prepare / f"prompts_{split}.jsonl"

    @property
    def prompts_sft(self) -> Path:
        return self.prompts("sft")

    @property
    def prompts_ppo(self) -> Path:
        return self.prompts("ppo")

    @property
    def prompts_bon(self) -> Path:
        return self.prompts("bon")

    @property
    def sft_data(self) -> Path:
        """{prompt, response, family, gold} SFT records."""
        return self.prepare / "sft.jsonl"

    @property
    def world_json(self) -> Path:
        return self.prepare / "world.json"

    # sft
    @property
    def sft(self) -> Path:
        return self.root / "sft"

    @property
    def sft_model(self) -> Path:
        """The SFT policy: PPO and Best-of-N start from it, RMs use it as their default backbone."""
        return self.sft / "model"

    @property
    def sft_eval(self) -> Path:
        return self.sft / "eval.json"

    # pairs
    @property
    def pairs(self) -> Path:
        return self.root / "pairs"

    def pairs_split(self, split: str) -> Path:
        if split not in PAIR_SPLITS:
            raise ValueError(f"pair split {split!r} is not one of {PAIR_SPLITS}")
        return self.pairs / f"pairs_{split}.jsonl"

    @property
    def pairs_train(self) -> Path:
        return self.pairs_split("train")

    @property
    def pairs_val(self) -> Path:
        return self.pairs_split("val")

    @property
    def pairs_test(self) -> Path:
        return self.pairs_split("test")

    # seeds of the compare job
    @staticmethod
    def seed_stage(name: str, seed: int = 0) -> str:
        """Stage `name` of seed k of compare.seeds: 'seed<k>/<name>' for k > 0, `name` itself for seed 0 (a one-seed
        run's layout)."""
        if seed < 0:
            raise ValueError(f"seed index must be >= 0, got {seed}")
        return name if seed == 0 else f"seed{seed}/{name}"

    # reward models
    @staticmethod
    def rm_stage(kind: str, num_experts: int | None = None) -> str:
        """'rm_dense', 'rm_ensemble', 'rm_dmoe', 'rm_umm4', 'rm_moe4': the stage an RM kind trains into (compare
        and train_rm)."""
        if kind not in RM_KINDS:
            raise ValueError(f"rm kind {kind!r} is not one of {', '.join(RM_KINDS)}")
        if kind in ("umm", "moe"):
            if num_experts is None:
                raise ValueError(f"rm kind {kind!r} needs an expert count for its stage name")
            return f"rm_{kind}{int(num_experts)}"
        return f"rm_{kind}"

    def rm(self, kind: str, num_experts: int | None = None) -> Path:
        return self.root / self.rm_stage(kind, num_experts)

    def rm_model(self, kind: str, num_experts: int | None = None) -> Path:
        """What scores for that RM: its HF dir, or the manifest of an ensemble."""
        stage = self.rm(kind, num_experts)
        return stage / "manifest.json" if kind == "ensemble" else stage / "model"

    @property
    def rm_group(self) -> Path:
        """<root>/rm_group: the Ray Train run of the RM stages' shared worker group (compare.rm_worker_group); only
        resume state (each run's model lands in its own stage dir), deleted once every RM stage is done."""
        return self.root / "rm_group"

    # later stages
    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def ppo_job(self) -> Path:
        """Where `jobs.ppo` runs (the compare job's PPO stages are ppo_<proxy>)."""
        return self.root / "ppo"

    @property
    def bon(self) -> Path:
        return self.root / "bon"
