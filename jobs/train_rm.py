"""Train a reward model with Ray Train: dense | moe | umm (upcycle -> MoE -> learnable merge) | ensemble.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.train_rm --rm.kind umm
    python -m jobs.train_rm --kind dense --rm.data ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz

`--kind X` is short for `--rm.kind X`. Data: rm.data = 'testbed' (the gold-labelled pairs of the pairs stage), or a
local .jsonl/.jsonl.gz (HH transcripts or {prompt, chosen, rejected}) or hub dataset name, split train/val/test by
seed. Missing upstream stages (prepare, SFT, pairs) run first. Writes `<run.output_dir>/rm_<kind>/` with `model/`
(`manifest.json` for an ensemble), `eval.json` (held-out accuracy and BT loss, loss curve, expert load), PNG curves.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.common import init_ray, parse_job_args, record_config
from umm_ray.config import Config
from umm_ray.train.reward import RMResult, train_rm


def expand_kind(argv: list[str]) -> list[str]:
    """Accept `--kind X` / `--kind=X` as the short form of `--rm.kind X`."""
    return ["--rm.kind" + a[len("--kind"):] if a == "--kind" or a.startswith("--kind=") else a for a in argv]


def ensure_upstream(cfg: Config):
    """Run prepare / SFT / pairs when this RM needs them and their outputs are missing; returns the WorldPaths."""
    from umm_ray.testbed.prepare import prepare_world

    testbed_data = cfg.rm.data == "testbed"
    if not testbed_data and cfg.rm.base_path:
        return None  # a user backbone on user data: nothing of the testbed is needed
    world = prepare_world(cfg)
    sft_model = Path(cfg.run.output_dir) / "sft" / "model"
    pairs_missing = testbed_data and not all(Path(p).is_file() for p in (world.pairs_train, world.pairs_val,
                                                                         world.pairs_test))
    if (not cfg.rm.base_path or pairs_missing) and not (sft_model / "config.json").is_file():
        from umm_ray.train.sft import run_sft

        record_config(cfg, "sft")
        run_sft(cfg, world)
    if pairs_missing:
        from jobs.pairs import run_pairs

        run_pairs(cfg, world.prompts_sft, sft_model, record_config(cfg, "pairs"))
    return world


def summary_line(res: RMResult) -> str:
    ev = res.eval
    parts = [f"{res.kind} RM: {res.model_path}"]
    for split in ("val", "test"):
        if split in ev:
            parts.append(f"{split} accuracy {ev[split]['accuracy']:.3f} / BT loss {ev[split]['bt_loss']:.4f}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> RMResult:
    cfg = parse_job_args(expand_kind(list(sys.argv[1:] if argv is None else argv)), "train_rm")
    init_ray(cfg)
    world = ensure_upstream(cfg)
    stage = record_config(cfg, f"rm_{cfg.rm.kind}")
    res = train_rm(cfg, world, kind=cfg.rm.kind, stage_dir=stage)
    print(summary_line(res))
    print(json.dumps({k: res.eval[k] for k in ("val", "test") if k in res.eval}, indent=1))
    return res


if __name__ == "__main__":
    main(sys.argv[1:])
