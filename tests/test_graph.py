"""The stage graph's caching, key by key: flipping any config key re-runs exactly the stages that read it and their
dependants. The real wiring (`StageGraph`) and the real declarations (`@reads` in `umm_ray.stages`) run with instant
stand-in stage functions, so every key of Config is flipped in well under a minute."""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import types
from pathlib import Path

import pytest

from jobs.common import PRESETS
from umm_ray.config import Config, load_config
from umm_ray.graph import StageGraph
from umm_ray.pipeline import StageRunner, leaf_keys


class Stand:
    """Instant stand-ins for the functions of `umm_ray.stages`, recording which stages ran."""

    def __init__(self):
        self.ran: list[str] = []
        self.grouped: list[list[str]] = []  # the RM stage dirs of each train_rm_group call

    def _ran(self, out: Path, summary: dict | None = None) -> dict:
        self.ran.append(stage_name(out))
        (out / "output.txt").write_text(out.name)
        return summary or {}

    def namespace(self) -> types.SimpleNamespace:
        def train_rm(cfg, kind, extra, out, **_):
            model = str(out / "model")
            return self._ran(out, {"kind": kind, "model": model, "moe": str(out / "moe" / "model"),
                                   "manifest": str(out / "model" / "manifest.json"), **extra})

        def evaluate(cfg, proxies, out, **_):
            return self._ran(out, {name: {"acc_val": 0.5} for name in proxies})

        def train_rm_group(cfg, stages, group_dir):
            self.grouped.append([stage_name(out) for *_, out in stages])
            return []

        plain = lambda cfg, *args, **kw: self._ran(args[-1])  # noqa: E731 (out is the last positional argument)
        return types.SimpleNamespace(prepare=plain, sft=plain, pairs=plain, own_pairs=plain, train_rm=train_rm,
                                     train_rm_group=train_rm_group, evaluate=evaluate, bon=plain, ppo=plain)


def run_graph(cfg: Config) -> tuple[list[str], Path]:
    """Run the compare graph (stand-ins) in cfg.run.output_dir; returns the stages that ran."""
    stand = Stand()
    root = Path(cfg.run.output_dir)
    StageGraph(cfg, StageRunner(root, cfg, force=cfg.compare.force, log=lambda *_: None),
               impl=stand.namespace()).compare()
    return stand.ran, root


def flipped(value, meta: dict, key: str):
    """A different valid-looking value for one config key."""
    special = {"rm.data": "other_prefs.jsonl", "compare.force": ["pairs"], "compare.expert_counts": [3],
               "compare.ppo_rms": ["dense", "umm_best"], "bon.rms": ["x=y"], "dmoe.tasks": ["math"],
               "dmoe.capabilities": ["brevity"], "dmoe.target_modules": ["q_proj"], "compare.ppo_kl_rms": ["dense"],
               "moe.upcycle_layers": [0]}
    if key in special:
        return special[key]
    if isinstance(value, bool):
        return not value
    if meta.get("choices"):
        return next(c for c in meta["choices"] if c != value)
    if isinstance(value, int):
        return value + 1 if meta.get("hi") is None or value + 1 <= meta["hi"] else value - 1
    if isinstance(value, float):
        hi = meta.get("hi")
        return (value + hi) / 2 if hi is not None and value < hi else value / 2 if hi is not None else value + 0.5
    if isinstance(value, str):
        return value + "_flipped"
    raise AssertionError(f"no flip for {key}={value!r}")


def flip(cfg: Config, key: str) -> Config:
    section, name = key.split(".")
    sec = getattr(cfg, section)
    meta = {f.name: f.metadata for f in dataclasses.fields(sec)}[name]
    return dataclasses.replace(cfg, **{section: dataclasses.replace(sec, **{name: flipped(getattr(sec, name), meta,
                                                                                             key)})})


def stage_name(out: Path) -> str:
    """'rm_dense', or 'seed1/rm_dense' for a later seed's stage (`RunLayout.seed_stage`)."""
    return f"{out.parent.name}/{out.name}" if out.parent.name.startswith("seed") else out.name


def markers(root: Path) -> dict[str, dict]:
    return {stage_name(p.parent): json.loads(p.read_text()) for p in root.glob("**/_done.json")}


def with_dir(cfg: Config, root: Path) -> Config:
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, output_dir=str(root)))


MODES = {
    "testbed": [],
    "own_data": ["--rm.data", "prefs.jsonl", "--ppo.policy_path", "policy", "--ppo.prompts", "prompts.jsonl",
                 "--reward.gold", "gold_rm"],
}


@pytest.fixture(scope="module")
def templates(tmp_path_factory) -> dict[str, tuple[str, Config, Path]]:
    """A finished run of the compare graph per mode (its directory is copied for every flip)."""
    out = {}
    for mode, args in MODES.items():
        root = tmp_path_factory.mktemp(mode) / "template"
        cfg = with_dir(load_config(None, args, base=PRESETS["test"]), root)
        ran, _ = run_graph(cfg)
        assert ran == sorted(markers(root), key=ran.index)  # every stage ran once and finished
        out[mode] = (mode, cfg, root)
    return out


KL_OVERRIDDEN = {"ppo.kl_coef", "ppo.kl_target"}


def rerun_after_flip(template, key: str, tmp_path: Path) -> tuple[set[str], set[str], dict, dict]:
    """(stages that ran, stages that should have, markers before, markers after) for a flip of `key`."""
    _, cfg, root = template
    work = tmp_path / key
    shutil.copytree(root, work)
    before = markers(work)
    new_cfg = with_dir(flip(cfg, key), work)
    ran, _ = run_graph(new_cfg)
    after = markers(work)
    def should_run(name: str, expected: set[str]) -> bool:
        old = before.get(name)
        reads = set(after[name]["inputs"]["config"]) | set(old["inputs"]["config"] if old else ())
        if name.rsplit("/", 1)[-1].startswith("ppo_kl_"):  # the KL regime sets ppo.kl_* from compare.ppo_kl_coef
            reads = (reads - KL_OVERRIDDEN) | {"compare.ppo_kl_coef"}
        deps = after[name]["inputs"]["deps"]
        return old is None or key in reads or name in new_cfg.compare.force or any(d in expected for d in deps)

    expected: set[str] = set()
    while True:  # to a fixed point: a dependant of a stage that re-runs re-runs
        more = {n for n in after if n not in expected and should_run(n, expected)}
        if not more:
            return set(ran), expected, before, after
        expected |= more


@pytest.mark.parametrize("mode", list(MODES))
def test_flipping_every_config_key_reruns_exactly_its_readers_and_their_dependants(templates, mode, tmp_path):
    template = templates[mode]
    cfg = template[1]
    keys = leaf_keys(cfg)
    assert len(keys) == sum(len(dataclasses.fields(getattr(Config(), s.name))) for s in dataclasses.fields(Config))
    mismatches = {}
    for key in keys:
        if key == "run.output_dir":
            continue  # the cache's location: another directory is another (empty) cache, tested below
        ran, expected, _, _ = rerun_after_flip(template, key, tmp_path)
        if ran != expected:
            mismatches[key] = {"ran": sorted(ran), "expected": sorted(expected)}
    assert not mismatches, json.dumps(mismatches, indent=1)


# Hand-written expectations for the keys the issue named (not derived from the declarations).
TESTBED_ALL = {"prepare", "sft", "pairs", "rm_dense", "rm_umm2", "rm_ensemble", "rm_dmoe", "eval", "bon", "ppo_dense",
               "ppo_ensemble-wco", "ppo_dmoe", "ppo_kl_dense", "ppo_kl_ensemble-wco"}
SPOT = {
    ("testbed", "reward.gold"): TESTBED_ALL - {"prepare", "sft"},
    ("own_data", "reward.gold"): {"eval", "bon", "ppo_dense", "ppo_ensemble-wco", "ppo_dmoe", "ppo_kl_dense",
                                  "ppo_kl_ensemble-wco"},  # eval: accuracy against gold's own preference
    ("testbed", "compare.bon_uwo_lambda"): {"eval", "bon"},
    ("own_data", "compare.bon_uwo_lambda"): {"eval", "bon"},
    ("testbed", "testbed.label_noise"): TESTBED_ALL - {"prepare", "sft"},
    ("testbed", "ppo.kl_coef"): {"ppo_dense", "ppo_ensemble-wco", "ppo_dmoe"},  # the KL regime sets its own beta
    ("testbed", "compare.ppo_kl_coef"): {"ppo_kl_dense", "ppo_kl_ensemble-wco"},
    ("testbed", "ensemble.members"): {"rm_ensemble", "eval", "bon", "ppo_ensemble-wco", "ppo_kl_ensemble-wco"},
    ("testbed", "moe.top_k"): {"rm_umm2", "eval", "bon"},
    ("testbed", "dmoe.lora_r"): {"rm_dmoe", "eval", "bon", "ppo_dmoe"},
    ("own_data", "dmoe.capability_data"): {"rm_dmoe", "eval", "bon", "ppo_dmoe"},
    ("own_data", "testbed.label_noise"): set(),  # own data: capability labels come from the user's columns
    ("testbed", "compare.dmoe"): {"eval", "bon"},  # off: the dmoe row leaves eval and BoN; no PPO run to redo
    ("testbed", "sft.lr"): TESTBED_ALL - {"prepare"},
    ("testbed", "rm.kind"): set(),
    # A second seed adds its own RMs, eval, BoN and PPO; the world, SFT policy and pairs are shared.
    ("testbed", "compare.seeds"): {f"seed1/{n}" for n in TESTBED_ALL - {"prepare", "sft", "pairs"}},
    ("own_data", "compare.seeds"): {"seed1/rm_dense", "seed1/rm_umm2", "seed1/rm_ensemble", "seed1/rm_dmoe",
                                    "seed1/eval", "seed1/bon", "seed1/ppo_dense", "seed1/ppo_ensemble-wco",
                                    "seed1/ppo_dmoe", "seed1/ppo_kl_dense", "seed1/ppo_kl_ensemble-wco"},
    ("testbed", "serve.port"): set(),
    ("own_data", "testbed.n_prompts"): set(),  # own data: no testbed world in the graph
}


@pytest.mark.parametrize("mode,key", list(SPOT))
def test_named_keys_rerun_the_stages_that_read_them(templates, mode, key, tmp_path):
    ran, _, _, _ = rerun_after_flip(templates[mode], key, tmp_path)
    assert ran == SPOT[mode, key]


def test_a_new_output_dir_is_a_new_cache_and_a_rerun_reuses_everything(templates, tmp_path):
    _, cfg, root = templates["testbed"]
    ran, _ = run_graph(with_dir(cfg, tmp_path / "elsewhere"))
    assert set(ran) == set(markers(root))
    ran, _ = run_graph(with_dir(cfg, tmp_path / "elsewhere"))
    assert ran == []


def test_a_train_rm_run_is_reused_by_compare(tmp_path):
    """train_rm's upstream runs through the same graph: compare afterwards re-runs none of what it did."""
    cfg = with_dir(load_config(None, [], base=PRESETS["test"]), tmp_path)
    stand = Stand()
    StageGraph(cfg, StageRunner(tmp_path, cfg, log=lambda *_: None), impl=stand.namespace()).rm("umm", 2)
    assert stand.ran == ["prepare", "sft", "pairs", "rm_umm2"]
    ran, _ = run_graph(cfg)
    assert not {"prepare", "sft", "pairs", "rm_umm2"} & set(ran) and {"rm_dense", "eval", "bon"} <= set(ran)


@pytest.mark.parametrize("args,upstream", [
    ([], ["prepare", "sft", "pairs"]),
    (["--rm.data", "prefs.jsonl"], ["prepare", "sft", "pairs"]),  # own data, SFT policy as the RM backbone
    (["--rm.data", "prefs.jsonl", "--rm.base_path", "backbone"], ["pairs"]),
    (["--rm.data", "prefs.jsonl", "--ppo.policy_path", "policy"], ["pairs"]),
])
def test_rm_upstream_depends_on_data_and_backbone(tmp_path, args, upstream):
    cfg = with_dir(load_config(None, args, base=PRESETS["test"]), tmp_path)
    stand = Stand()
    graph = StageGraph(cfg, StageRunner(tmp_path, cfg, log=lambda *_: None), impl=stand.namespace())
    graph.rm("dense")
    assert stand.ran == [*upstream, "rm_dense"]
    assert markers(tmp_path)["rm_dense"]["inputs"]["deps"].keys() == ({"pairs", "sft"} & set(upstream))


def test_train_rm_dmoe_trains_rm_dmoe_keyed_on_the_dmoe_section_and_the_label_noise(tmp_path):
    """`jobs.train_rm --rm.kind dmoe` runs graph.rm('dmoe'): the stage compare would reuse, keyed on what it reads."""
    cfg = with_dir(load_config(None, ["--rm.kind", "dmoe"], base=PRESETS["test"]), tmp_path)
    stand = Stand()
    StageGraph(cfg, StageRunner(tmp_path, cfg, log=lambda *_: None), impl=stand.namespace()).rm("dmoe")
    assert stand.ran == ["prepare", "sft", "pairs", "rm_dmoe"]
    reads = markers(tmp_path)["rm_dmoe"]["inputs"]["config"]
    assert "testbed.label_noise" in reads and {f"dmoe.{f.name}" for f in dataclasses.fields(cfg.dmoe)} <= set(reads)
    assert not any(k.startswith(("moe.", "merge.", "ensemble.")) for k in reads)


def test_later_seeds_run_with_their_own_seed_and_the_first_seeds_data_split(tmp_path):
    """Seed 1 of compare.seeds trains with run.seed + 1000 but splits own preference data exactly as seed 0."""
    args = [*MODES["own_data"], "--compare.seeds", "2"]
    cfg = with_dir(load_config(None, args, base=PRESETS["test"]), tmp_path)
    ran, _ = run_graph(cfg)
    assert "seed1/rm_dense" in ran and "seed1/pairs" not in ran and ran.count("pairs") == 1
    done = markers(tmp_path)
    zero, one = done["rm_dense"]["inputs"]["config"], done["seed1/rm_dense"]["inputs"]["config"]
    assert (zero["run.seed"], one["run.seed"]) == (0, 1000)
    assert cfg.rm.data_split_seed(zero["run.seed"]) == 0 and one["rm.split_seed"] == 0
    assert done["seed1/ppo_dense"]["inputs"]["deps"] == {"seed1/rm_dense": done["seed1/rm_dense"]["finished"]}


class PoolRecording(Stand):
    """Stand-ins whose PPO stages take 0.3 s and record (pool, start, end): which role pool each run held, when."""

    def __init__(self):
        super().__init__()
        self.ppo_runs: list[tuple[str, object, float, float]] = []

    def namespace(self) -> types.SimpleNamespace:
        ns = super().namespace()

        def ppo(cfg, proxy, out, pool=None, **_):
            t0 = time.time()
            time.sleep(0.3)
            self.ppo_runs.append((stage_name(out), pool, t0, time.time()))
            return self._ran(out)

        ns.ppo = ppo
        return ns


def test_ppo_runs_take_turns_on_the_role_pools(tmp_path):
    """compare.parallel_ppo N with N pools: up to N PPO runs at once, never two on one pool at a time; with one pool
    they run one after another, each proxy's KL run right after its stress test (so a pool keeps that proxy's reward
    actors for both). The stages and their inputs are the same either way."""
    inputs = {}
    for parallel in (1, 2):
        args = ["--compare.ppo_rms", "dense,umm-2,ensemble-mean", "--compare.ppo_kl_rms", "dense",
                "--compare.parallel_ppo", str(parallel)]
        root = tmp_path / str(parallel)
        cfg = with_dir(load_config(None, args, base=PRESETS["test"]), root)
        stand, pools = PoolRecording(), [object() for _ in range(parallel)]
        StageGraph(cfg, StageRunner(root, cfg, log=lambda *_: None), impl=stand.namespace()).compare(pools)
        runs = stand.ppo_runs
        assert sorted(r[0] for r in runs) == ["ppo_dense", "ppo_ensemble-mean", "ppo_kl_dense", "ppo_umm-2"]
        assert {id(r[1]) for r in runs} == {id(p) for p in pools}  # every pool was used
        for a in runs:
            for b in runs:
                if a is not b and a[1] is b[1]:  # one pool: one run at a time
                    assert a[3] <= b[2] or b[3] <= a[2], (a[0], b[0])
        overlapping = any(a[2] < b[3] and b[2] < a[3] for a in runs for b in runs if a is not b)
        assert overlapping == (parallel > 1)
        if parallel == 1:
            assert [r[0] for r in runs] == ["ppo_dense", "ppo_kl_dense", "ppo_umm-2", "ppo_ensemble-mean"]
        inputs[parallel] = {k: v["inputs"]["config"] for k, v in markers(root).items()}
    assert inputs[1] == inputs[2]  # concurrency is not an input of any stage


def test_mean_evals_averages_the_numbers_every_seed_has():
    from umm_ray.stages import mean_evals

    evals = [{"dense": {"acc_val": 0.6, "length_corr": 0.2, "outcomes": {}}, "_meta": {}},
             {"dense": {"acc_val": 0.8, "length_corr": None, "outcomes": {}}, "_meta": {}}]
    assert mean_evals(evals) == {"dense": {"acc_val": pytest.approx(0.7)}}  # seed 1's constant scores: no r to average


def test_the_shared_rm_group_is_handed_exactly_the_rm_stages_that_will_run(tmp_path):
    """compare.rm_worker_group: before the RM stages run one after another, every RM stage that will run (and only
    those) goes to `train_rm_group`, readied by the runner; not when stages run at once or per_stage is asked."""
    def grouped(root: Path, *args: str) -> list[list[str]]:
        stand = Stand()
        cfg = with_dir(load_config(None, list(args), base=PRESETS["test"]), root)
        StageGraph(cfg, StageRunner(root, cfg, log=lambda *_: None), impl=stand.namespace()).compare()
        return stand.grouped

    rms = ["rm_dense", "rm_umm2", "rm_ensemble", "rm_dmoe"]
    assert grouped(tmp_path / "a") == [rms]
    assert all(json.loads((tmp_path / "a" / n / "_done.json").read_text())["summary"]["kind"] for n in rms)
    assert grouped(tmp_path / "a") == []  # all cached: nothing to train
    assert grouped(tmp_path / "a", "--moe.aux_loss_coef", "0.123") == [["rm_umm2"]]
    assert grouped(tmp_path / "b", "--compare.parallel_stages", "2") == []
    assert grouped(tmp_path / "c", "--compare.rm_worker_group", "per_stage") == []
    assert grouped(tmp_path / "d", "--compare.seeds", "2") == [rms + [f"seed1/{n}" for n in rms]]
