"""The accuracy table of the UMM-RM paper on your own preference data: dense vs UMM-<n> (merged) vs its unmerged MoE
vs an ensemble, each trained from one backbone, tested on one held-out split, with a 95% interval per accuracy.

    python -m jobs.rm_table --rm.data ../shared/data/hh-rlhf/harmless-base/test.jsonl.gz --rm.base_path smollm2-135m \
        --rm.num_workers 1 --resources.train_cpus 2 --rm.precision bf16 --compare.expert_counts 2,4,6

Every RM is the stage `jobs.train_rm` (and `jobs.compare`) would run, through the same stage cache: an interrupted
table resumes from the RMs already trained, and a rerun with more expert counts only trains the new ones. The split
(rm.val_frac / rm.test_frac, seeded by rm.split_seed or run.seed) is made once by the `pairs` stage and shared by every
RM. The unmerged MoE of UMM-<n> is the MoE stage of that same UMM run (`rm_umm<n>/moe/model`), so it costs nothing
extra. Intervals are Wilson score intervals over the test pairs (a tie counts half a pair). Every RM is tested on the
same pairs, so each row also gets its difference from dense pair by pair (a paired bootstrap over the test pairs):
tighter than comparing two separate intervals, since the pairs both RMs find easy or hard cancel out. Writes
`<run.output_dir>/rm_table/table.md`, `table.json` and `config.yaml`.
"""

from __future__ import annotations

import json
import sys

from jobs.common import init_ray, job_config, record_config
from jobs.inputs import dry_run
from umm_ray.algo.stats import wilson_interval
from umm_ray.graph import StageGraph, compare_rms
from umm_ray.pipeline import StageRunner
from umm_ray.report.uncertainty import accuracy_diff

TABLE = "rm_table"


def rm_rows(kind: str, n: int | None, summary: dict) -> list[dict]:
    """Table rows of one trained RM stage: its own, and for a UMM also its unmerged MoE's (from the same run)."""
    ev = summary["eval"]
    name = {"dense": "dense", "ensemble": f"ensemble-{len(ev.get('members', [])) or '?'}",
            "umm": f"umm-{n} (merged)", "moe": f"moe-{n}", "dmoe": "dmoe"}[kind]
    rows = [_row(name, ev, ev.get("params"))]
    if kind == "umm" and "moe" in ev:
        rows.append(_row(f"moe-{n} (unmerged, of umm-{n})", ev["moe"], ev["moe"].get("params")))
    return rows


def _row(name: str, ev: dict, params) -> dict:
    row = {"rm": name, "params": params}
    for split in ("val", "test"):
        if split in ev and ev[split].get("n"):
            n, acc = int(ev[split]["n"]), float(ev[split]["accuracy"])
            ci = wilson_interval(round(acc * n * 2) / 2, n)  # ties count half: accuracy * n is a multiple of 0.5
            row[split] = {"n": n, "accuracy": acc, "lo": ci.lo, "hi": ci.hi, "bt_loss": ev[split].get("bt_loss")}
    row["outcomes"] = ev.get("test", {}).get("outcomes")  # [n] per test pair; dropped by `paired_vs`
    return row


def paired_vs(rows: list[dict], ref: str = "dense") -> list[dict]:
    """Each row's test accuracy minus `ref`'s, on the same test pairs, with a paired bootstrap 95% interval
    (`row["test"]["vs_dense"]`), where both have per-pair outcomes on as many pairs (an eval from before they were kept
    has none: no difference is given). Drops the per-pair outcomes from the rows."""
    base = next((r["outcomes"] for r in rows if r["rm"] == ref), None)
    for r in rows:
        won = r.pop("outcomes", None)
        d = accuracy_diff([won], [base]) if r["rm"] != ref and won is not None and base is not None else None
        if d is not None:  # None also when the two were scored on different numbers of pairs
            r["test"]["vs_dense"] = d.to_dict()
    return rows


def markdown(rows: list[dict], setup: str) -> str:
    """The table: test accuracy [95% CI] (n), minus dense's on the same pairs [paired 95% CI], val accuracy,
    parameters."""
    head = ["RM", "test accuracy [95% CI]", "test pairs", "vs dense, paired [95% CI]", "val accuracy", "parameters"]
    lines = [setup, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        t, v = r.get("test"), r.get("val")
        d = (t or {}).get("vs_dense")
        cells = [r["rm"], f"{t['accuracy']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]" if t else "-", t["n"] if t else "-",
                 f"{d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]" if d else "-",
                 f"{v['accuracy']:.3f}" if v else "-", f"{r['params'] / 1e6:.1f}M" if r.get("params") else "-"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    cfg, dry = job_config(list(sys.argv[1:] if argv is None else argv), "rm_table")
    runner = StageRunner(cfg.run.output_dir, cfg, force=cfg.compare.force, dry_run=dry)
    rms = compare_rms(cfg)
    if dry:
        dry_run(cfg, "rm_table", lambda: [StageGraph(cfg, runner).rm(kind, n) for kind, n in rms])
    init_ray(cfg)
    graph, rows = StageGraph(cfg, runner), []
    for kind, n in rms:
        rows += rm_rows(kind, n, graph.rm(kind, n))
        print(f"{rows[-1]['rm']}: done")
    rows = paired_vs(rows)
    pairs = graph.pairs()
    setup = (f"Data {cfg.rm.data} (split seed {cfg.rm.data_split_seed(cfg.run.seed)}, val {cfg.rm.val_frac}, test "
             f"{cfg.rm.test_frac}); backbone {cfg.rm.base_path or 'the SFT policy'}; max_len {cfg.rm.max_len}, "
             f"{cfg.rm.epochs} epoch(s), batch {cfg.rm.batch_size} x {cfg.rm.num_workers} worker(s), lr {cfg.rm.lr}, "
             f"precision {cfg.rm.precision}; pairs: " + ", ".join(f"{k[2:]} {v}" for k, v in pairs.items()
                                                                 if k.startswith("n_")))
    out = record_config(cfg, TABLE)
    (out / "table.md").write_text(markdown(rows, setup))
    (out / "table.json").write_text(json.dumps({"setup": setup, "rows": rows}, indent=1))
    print(markdown(rows, setup))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
