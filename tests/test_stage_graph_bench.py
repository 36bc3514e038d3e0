"""benchmarks.stage_graph's pure helpers: option parsing, the stage records read back from `_done.json`, the most
stages at once, the dependency critical path and the ensemble figures (no Ray, no job run)."""

import json

import pytest

from benchmarks.stage_graph import (JOB_DEFAULTS, combine, critical_path, ensemble_times, markdown, max_overlap,
                                    parse_args, run_order, stage_records, summarise)
from jobs.common import parse_job_args


def rec(started: float, seconds: float, deps: tuple[str, ...] = ()) -> dict:
    return {"started": started, "seconds": seconds, "finished": started + seconds, "deps": sorted(deps)}


# The compare graph's shape: sft -> pairs -> three RMs (two overlapping, one after) -> eval alone -> ppo.
GRAPH = {"sft": rec(0, 10), "pairs": rec(10, 5, ("sft",)),
         "rm_dense": rec(15, 25, ("pairs", "sft")), "rm_umm2": rec(15, 30, ("pairs", "sft")),
         "rm_ensemble": rec(35, 40, ("pairs", "sft")),
         "eval": rec(75, 3, ("rm_dense", "rm_ensemble", "rm_umm2")), "ppo_dense": rec(78, 7, ("rm_dense",))}


def write_run(root, records: dict[str, dict]) -> None:
    """`_done.json` markers as the StageRunner writes them (deps keyed by name with their finished stamps)."""
    for name, r in records.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "_done.json").write_text(json.dumps({"key": "k", "summary": {}, "seconds": r["seconds"],
                                                  "started": r["started"], "finished": r["finished"] + 0.01,
                                                  "inputs": {"deps": {dep: 1.0 for dep in r["deps"]}}}))


def test_max_overlap_counts_stages_in_progress_at_once():
    assert max_overlap(GRAPH) == 3  # at 35: rm_dense (15-40), rm_umm2 (15-45), rm_ensemble
    assert max_overlap({k: GRAPH[k] for k in ("sft", "pairs", "rm_dense", "eval")}) == 1  # end == next start: 1
    assert max_overlap({}) == 0
    two = {"a": rec(0, 10), "b": rec(5, 10)}
    assert max_overlap(two) == 2


def test_max_overlap_at_the_shared_start():
    assert max_overlap({"a": rec(15, 20), "b": rec(15, 30), "c": rec(15, 1)}) == 3


def test_critical_path_follows_the_dependencies_not_the_clock():
    seconds, path = critical_path(GRAPH)
    assert path == ["sft", "pairs", "rm_ensemble", "eval"] and seconds == pytest.approx(10 + 5 + 40 + 3)
    # a dependency that was not run here (e.g. cached elsewhere) counts nothing
    seconds, path = critical_path({"rm_dense": rec(0, 4, ("pairs",)), "eval": rec(4, 1, ("rm_dense",))})
    assert (seconds, path) == (5, ["rm_dense", "eval"])
    assert critical_path({}) == (0.0, [])
    with pytest.raises(ValueError, match="cycle"):
        critical_path({"a": rec(0, 1, ("b",)), "b": rec(1, 1, ("a",))})


def test_records_and_summary_from_done_markers(tmp_path):
    records = {**GRAPH, "seed1/eval": rec(90, 2, ("seed1/rm_dense",))}
    write_run(tmp_path, records)
    (tmp_path / "rm_ensemble" / "eval.json").write_text(json.dumps({"members": [{"train_seconds": 30.0},
                                                                                {"train_seconds": 34.0}]}))
    got = stage_records(tmp_path)
    assert set(got) == set(records) and got["seed1/eval"]["deps"] == ["seed1/rm_dense"]
    assert got["eval"]["finished"] == pytest.approx(78)  # started + seconds, not the marker's own stamp
    s = summarise(tmp_path, wall=100.0)
    assert s["stages"] == 8 and s["stage_sum_s"] == pytest.approx(122) and s["max_overlap"] == 3
    e = s["ensemble"]
    assert (e["stage_s"], e["member_sum_s"], e["member_max_s"]) == (40, 64, 34)
    assert e["stage_over_member_sum"] == pytest.approx(40 / 64) and e["stage_over_member_max"] == pytest.approx(40 / 34)
    assert ensemble_times(tmp_path, {k: v for k, v in got.items() if k != "rm_ensemble"}) is None


def test_runs_alternate_and_combine_into_means(tmp_path):
    assert run_order(1) == [("concurrent", 0), ("sequential", 0)]
    assert run_order(3) == [("concurrent", 0), ("sequential", 0), ("sequential", 1), ("concurrent", 1),
                            ("concurrent", 2), ("sequential", 2)]
    write_run(tmp_path / "a", GRAPH)
    (tmp_path / "a" / "rm_ensemble" / "eval.json").write_text(json.dumps({"members": [{"train_seconds": 10.0}]}))
    write_run(tmp_path / "b", {k: rec(r["started"], 2 * r["seconds"], tuple(r["deps"])) for k, r in GRAPH.items()
                               if k != "ppo_dense"})
    (tmp_path / "b" / "rm_ensemble" / "eval.json").write_text(json.dumps({"members": [{"train_seconds": 30.0}]}))
    m = combine([summarise(tmp_path / "a", wall=90.0), summarise(tmp_path / "b", wall=110.0)])
    assert m["runs"] == 2 and m["walls_s"] == [90.0, 110.0] and m["wall_s"] == 100.0
    assert m["stage_sum_s"] == pytest.approx((120 + 2 * 113) / 2) and m["max_overlap"] == 4  # run b's
    assert m["stage_s"]["sft"] == 15 and m["stage_s"]["ppo_dense"] == 7  # a stage only one run has: its own mean
    assert m["ensemble"]["stage_s"] == 60 and m["ensemble"]["stage_over_member_sum"] == pytest.approx(60 / 20)


def test_markdown_names_both_modes_and_the_ratio(tmp_path):
    write_run(tmp_path, GRAPH)
    (tmp_path / "rm_ensemble" / "eval.json").write_text(json.dumps({"members": [{"train_seconds": 8.0},
                                                                                {"train_seconds": 12.0}]}))
    run = summarise(tmp_path, wall=90.0)
    result = {"config": {"parallel": 3, "nodes": 4, "node_cpus": 2}, "cpu_count": 2, "load_avg_1m": 1.0,
              "modes": {"concurrent": combine([run]), "sequential": combine([{**run, "wall_s": 120.0}])},
              "speedup": 120 / 90}
    table = markdown(result)
    assert "| job wall s | 90 (90) | 120 (120) |" in table and "**1.33x**" in table and "contend" in table
    assert "| ensemble stage / members' train sum | 2.0 | 2.0 |" in table
    assert "| stage rm_umm2 s | 30.0 | 30.0 |" in table


def test_options_and_job_overrides():
    args, job = parse_args(["--nodes", "3", "--parallel", "4", "--ppo.steps", "2"])
    assert (args.nodes, args.node_cpus, args.parallel, args.repeats) == (3, 2, 4, 2)
    assert args.out == "runs/bench/stage_graph"
    assert job == ["--ppo.steps", "2"]
    cfg = parse_job_args(JOB_DEFAULTS + job)  # the job accepts the defaults, and a later flag overrides them
    assert cfg.ppo.steps == 2 and cfg.compare.ppo_kl_rms == [] and cfg.compare.expert_counts == [2]
    assert cfg.ensemble.members == 2 and cfg.compare.hh_eval == "" and cfg.compare.parallel_stages == 1
    for bad in (["--parallel", "1"], ["--nodes", "0"], ["--repeats", "0"], ["stray"],
                ["--compare.parallel_stages", "2"], ["--run.output_dir", "x"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
