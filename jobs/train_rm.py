"""Train a reward model with Ray Train: dense | moe | umm (upcycle -> MoE -> learnable merge) | ensemble | dmoe.

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m jobs.train_rm --rm.kind umm
    python -m jobs.train_rm --rm.kind umm --moe.num_experts 4      # -> runs/default/rm_umm4/model
    python -m jobs.train_rm --kind dense --rm.data ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz

`--kind X` is short for `--rm.kind X`. Data: rm.data = 'testbed' (the gold-labelled pairs of the pairs stage), or a
local .jsonl/.jsonl.gz (HH transcripts or {prompt, chosen, rejected}) or hub dataset name, split train/val/test by
seed. The upstream stages run through the same stage graph as `jobs.compare` (`umm_ray.graph.StageGraph`), cached
the same way: prepare -> sft -> pairs for testbed data; own data runs one `pairs` stage that splits it, plus prepare
-> sft when the RM needs the testbed SFT policy as its backbone (no rm.base_path or ppo.policy_path). Writes the
stage compare would (`umm_ray.layout.RunLayout.rm_stage`): `<run.output_dir>/rm_dense/`, `rm_umm<moe.num_experts>/`,
`rm_moe<moe.num_experts>/`, `rm_ensemble/` or `rm_dmoe/` (the DMoERM baseline, settings under dmoe.*), with
`model/` (an ensemble: `manifest.json` + `member_<i>/model`; a UMM also `moe/model`; dmoe a DMoERM dir),
`eval.json` (held-out accuracy and BT loss, loss curve, expert load), PNG curves, config.yaml.
"""

from __future__ import annotations

import json
import sys

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray.graph import StageGraph
from umm_ray.layout import RunLayout
from umm_ray.pipeline import StageRunner
from umm_ray.train.evaluate import PER_PAIR


def expand_kind(argv: list[str]) -> list[str]:
    """Accept `--kind X` / `--kind=X` as the short form of `--rm.kind X`."""
    return ["--rm.kind" + a[len("--kind"):] if a == "--kind" or a.startswith("--kind=") else a for a in argv]


def summary_line(summary: dict) -> str:
    ev = summary["eval"]
    parts = [f"{summary['kind']} RM: {summary.get('manifest') or summary['model']}"]
    for split in ("val", "test"):
        if split in ev:
            parts.append(f"{split} accuracy {ev[split]['accuracy']:.3f} / BT loss {ev[split]['bt_loss']:.4f}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    cfg, dry = job_config(expand_kind(list(sys.argv[1:] if argv is None else argv)), "train_rm")
    kind, n = cfg.rm.kind, cfg.moe.num_experts
    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force, dry_run=dry)
    if dry:
        dry_run(cfg, "train_rm", lambda: StageGraph(cfg, runner).rm(kind, n if kind in ("umm", "moe") else None))
    init_ray(cfg)
    summary = StageGraph(cfg, runner).rm(kind, n if kind in ("umm", "moe") else None)
    record_config(cfg, RunLayout.rm_stage(kind, n))
    print(summary_line(summary))
    held = {k: {m: v for m, v in summary["eval"][k].items() if m not in PER_PAIR}  # in eval.json only
            for k in ("val", "test") if k in summary["eval"]}
    print(json.dumps(held, indent=1))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
