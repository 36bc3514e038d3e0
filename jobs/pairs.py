"""Gold-labelled preference pairs from the SFT policy: two samples per prompt, labelled by gold with label noise.

    ray job submit ... -- python -m jobs.pairs --preset tiny

prepare -> sft -> pairs run through the same stage graph as `jobs.compare` (`umm_ray.graph.StageGraph`; sampling and
labelling: `umm_ray.testbed.pairs`), each reused when already done for this config. With rm.data naming your own
preferences, the pairs stage splits those instead. Writes `<output_dir>/pairs/pairs_{train,val,test}.jsonl`,
`stats.json` and config.yaml.
"""

from __future__ import annotations

import json
import sys

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray.graph import StageGraph
from umm_ray.layout import RunLayout
from umm_ray.pipeline import StageRunner


def main(argv: list[str] | None = None) -> dict:
    cfg, dry = job_config(argv, "pairs")
    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force, dry_run=dry)
    if dry:
        dry_run(cfg, "pairs", StageGraph(cfg, runner).pairs)
    init_ray(cfg)
    stats = StageGraph(cfg, runner).pairs()
    record_config(cfg, RunLayout(cfg.run.output_dir).pairs.name)
    print(json.dumps(stats, indent=1))
    return stats


if __name__ == "__main__":
    main(sys.argv[1:])
