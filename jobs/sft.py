"""Supervised fine-tuning of the tiny policy on the testbed's SFT responses, with Ray Train on CPU workers.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.sft --preset tiny
    python -m jobs.sft --preset test --run.output_dir runs/smoke --sft.num_workers 2

prepare -> sft run through the same stage graph as `jobs.compare` (`umm_ray.graph.StageGraph`): a rerun with the same
config reuses both, a crashed run resumes from its latest checkpoint, `--compare.force sft` redoes it. Writes
`<run.output_dir>/sft/` (`umm_ray.layout.RunLayout.sft`): `model/` (HF causal LM + tokenizer, safetensors),
`eval.json` (loss, gold of base vs SFT samples, gain), `metrics.json`, `loss_curve.png`, config.yaml, and while it runs
`ray_train/` (checkpoints; kept after it is done only with `--run.keep_checkpoints true`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray.graph import StageGraph
from umm_ray.layout import RunLayout
from umm_ray.pipeline import StageRunner


def main(argv: list[str] | None = None) -> Path:
    cfg, dry = job_config(argv, "sft")
    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force, dry_run=dry)
    if dry:
        dry_run(cfg, "sft", StageGraph(cfg, runner).sft)
    init_ray(cfg)
    report = StageGraph(cfg, runner).sft()
    record_config(cfg, RunLayout(cfg.run.output_dir).sft.name)
    print(f"SFT model: {report['model']}")
    print(f"train loss {report['loss_first']:.3f} -> {report['loss_last']:.3f} in {report['steps']} steps; "
          f"gold base {report['gold_base']:.3f} -> SFT {report['gold_sft']:.3f} (gain {report['gain']:+.3f})")
    return Path(report["model"])


if __name__ == "__main__":
    main(sys.argv[1:])
