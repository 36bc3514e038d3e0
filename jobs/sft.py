"""Supervised fine-tuning of the tiny policy on the testbed's SFT responses, with Ray Train on CPU workers.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.sft --preset tiny
    python -m jobs.sft --preset test --run.output_dir runs/smoke --sft.num_workers 2

Runs the prepare stage first when its outputs are missing. Writes `<run.output_dir>/sft/`: `model/` (HF causal LM +
tokenizer, safetensors), `eval.json` (loss, gold of base vs SFT samples, gain), `metrics.json`, `loss_curve.png`, and
`ray_train/` (resumable checkpoints: a rerun continues from the latest one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jobs.common import init_ray, parse_job_args, record_config
from umm_ray.testbed.prepare import prepare_world
from umm_ray.train.sft import run_sft


def main(argv: list[str] | None = None) -> Path:
    cfg = parse_job_args(argv, "sft")
    init_ray(cfg)
    world = prepare_world(cfg)  # returns at once when already built for this config
    stage = record_config(cfg, "sft")
    model_dir = run_sft(cfg, world)
    report = json.loads((stage / "eval.json").read_text())
    print(f"SFT model: {model_dir}")
    print(f"train loss {report['loss_first']:.3f} -> {report['loss_last']:.3f} in {report['steps']} steps; "
          f"gold base {report['gold_base']:.3f} -> SFT {report['gold_sft']:.3f} (gain {report['gain']:+.3f})")
    return model_dir


if __name__ == "__main__":
    main(sys.argv[1:])
