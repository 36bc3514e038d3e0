"""Build the embedded testbed world: prompts (sft/ppo/bon splits), SFT data, tokenizer, tiny base model.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.prepare --preset tiny
    python -m jobs.prepare --preset test --run.output_dir runs/smoke --testbed.n_prompts 400

Writes `<run.output_dir>/prepare/` (see `umm_ray.testbed.prepare`, paths `umm_ray.layout.RunLayout`) as the stage
graph's `prepare` stage, so `jobs.compare` and the other jobs reuse it; skips when it is already built for the same
config (`--compare.force prepare` rebuilds). Prints the measured testbed properties a/b/c.
"""

from __future__ import annotations

import sys

from jobs.common import job_config, record_config
from jobs.inputs import dry_run
from umm_ray.graph import StageGraph
from umm_ray.layout import RunLayout
from umm_ray.pipeline import StageRunner


def property_lines(summary: dict) -> list[str]:
    """Human-readable figures of properties a/b/c from world.json."""
    a, b, c = (summary["properties"][k] for k in "abc")
    pad = b["pad_with_repeats"]
    lines = [
        f"a) gold of SFT responses {a['sft']['mean']:.3f} +- {a['sft']['std']:.3f} (n={a['sft']['n']}); "
        f"random-token responses {a['random']['mean']:.3f} +- {a['random']['std']:.3f}; "
        f"references {a['reference']['mean']:.3f}",
        f"b) Spearman({b['length_unit']}, gold) inside SFT = {b['spearman_length_gold']:.3f} "
        f"(per family: " + ", ".join(f"{f} {v:.2f}" for f, v in b["spearman_per_family"].items()) + "); "
        "padding with k repeats changes gold by "
        + ", ".join(f"k={k}: {v['mean_change']:+.3f}" for k, v in pad.items()),
    ]
    for kind, per_family in c["edit_change"].items():
        lines.append(f"c) {kind}: " + ", ".join(f"{f} {v:+.3f}" for f, v in per_family.items())
                     + f" (max/min {c['ratio_max_min'][kind]:.1f}x)")
    return lines


def main(argv: list[str] | None = None) -> RunLayout:
    cfg, dry = job_config(argv, "prepare")
    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force, dry_run=dry)
    if dry:
        dry_run(cfg, "prepare", StageGraph(cfg, runner).prepare)
    summary = StageGraph(cfg, runner).prepare()
    paths = RunLayout(cfg.run.output_dir)
    record_config(cfg, paths.prepare.name)
    print(f"prepare: world in {paths.prepare} (built in {summary['seconds']} s)")
    print("prompts per split: " + ", ".join(f"{k} {sum(v.values())}" for k, v in summary["counts"].items())
          + f"; SFT records {summary['n_sft_records']}; vocab {summary['tokenizer']['vocab_size']}; "
          f"base {summary['base']['family']} {summary['base']['params']} params")
    print("\n".join(property_lines(summary)))
    return paths


if __name__ == "__main__":
    main(sys.argv[1:])
