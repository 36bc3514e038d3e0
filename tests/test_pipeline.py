"""Stage caching: reuse on rerun, --force redoes a stage and its dependants, a failure keeps finished stages, keys
from the declared config reads (key by key), a changed key starts from an empty stage directory."""

import dataclasses

import pytest

from umm_ray.config import load_config
from umm_ray.pipeline import Stage, StageRunner, config_values, declared_reads, reads


def _counting(calls, name, fail=False):
    def fn(out):
        calls.append(name)
        if fail:
            raise RuntimeError("boom")
        (out / "x.txt").write_text(name)
        return {"name": name}
    return fn


def _stages(calls, fail_b=False):
    return [Stage("a", _counting(calls, "a"), reads=("testbed",)),
            Stage("b", _counting(calls, "b", fail_b), reads=("sft.epochs", "sft.lr"), deps=("a",)),
            Stage("c", _counting(calls, "c"), reads=("rm",), deps=("a",))]


def test_rerun_reuses_and_config_change_redoes(tmp_path):
    calls = []
    cfg = load_config()
    for s in _stages(calls):
        StageRunner(tmp_path, cfg).run(s)
    assert calls == ["a", "b", "c"]
    runner = StageRunner(tmp_path, cfg)
    for s in _stages(calls):
        runner.run(s)
    assert calls == ["a", "b", "c"] and all(runner.cached.values())
    cfg2 = load_config(overrides=["--sft.epochs", "5"])
    for s in _stages(calls):
        StageRunner(tmp_path, cfg2).run(s)
    assert calls == ["a", "b", "c", "b"]


def test_force_redoes_stage_and_dependants(tmp_path):
    calls = []
    cfg = load_config()
    for s in _stages(calls):
        StageRunner(tmp_path, cfg).run(s)
    runner = StageRunner(tmp_path, cfg, force=["a"])
    for s in _stages(calls):
        runner.run(s)
    assert calls == ["a", "b", "c", "a", "b", "c"]


def test_failure_keeps_finished_stages(tmp_path):
    calls = []
    cfg = load_config()
    runner = StageRunner(tmp_path, cfg)
    a, b, c = _stages(calls, fail_b=True)
    runner.run(a)
    with pytest.raises(RuntimeError, match="boom"):
        runner.run(b)
    assert not (tmp_path / "b" / "_done.json").exists()
    with pytest.raises(RuntimeError, match="needs stage 'b'"):
        runner.run(Stage("d", _counting(calls, "d"), deps=("b",)))
    a, b, c = _stages(calls)
    for s in (a, b, c):
        StageRunner(tmp_path, cfg).run(s)
    assert calls == ["a", "b", "b", "c"]


def test_keys_are_per_config_key_not_per_section(tmp_path):
    calls = []
    for s in _stages(calls):
        StageRunner(tmp_path, load_config()).run(s)
    for s in _stages(calls):  # b reads sft.epochs and sft.lr only
        StageRunner(tmp_path, load_config(overrides=["--sft.batch_size", "7", "--run.output_dir", "x"])).run(s)
    assert calls == ["a", "b", "c"]


def test_declared_reads_and_unknown_keys_are_named():
    @reads("rm.lr", also=lambda cfg, kind: ("moe",) if kind == "umm" else ())
    def stage_fn(cfg, kind, out):
        return {}

    cfg = load_config()
    assert declared_reads(stage_fn, cfg, "umm") == ("rm.lr", "moe") and declared_reads(stage_fn, cfg, "x") == ("rm.lr",)
    assert set(config_values(cfg, ("moe", "rm.lr"))) == {"rm.lr", "moe.num_experts", "moe.top_k",
                                                          "moe.aux_loss_coef", "moe.noisy_gating",
                                                          "moe.upcycle_layers"}
    assert "run.output_dir" not in config_values(cfg, ("run",))  # where the cache lives, not an input
    with pytest.raises(KeyError, match="stage 'sft' declares config key 'sft.epoch', which Config does not have"):
        config_values(cfg, ("sft.epoch",), "sft")
    with pytest.raises(TypeError, match="declares no config reads"):
        declared_reads(lambda cfg: {}, cfg)


def test_changed_key_starts_empty_a_crash_resumes(tmp_path):
    logs = []

    def fn(fail):
        def run(out):
            assert not (out / "stale.txt").exists(), "ran on top of outputs of other inputs"
            (out / "partial.txt").write_text("resumable")
            if fail:
                raise RuntimeError("boom")
            return {}
        return run

    cfg = load_config()
    runner = StageRunner(tmp_path, cfg, log=logs.append)
    runner.run(Stage("s", fn(False), reads=("ppo.kl_coef",)))
    (tmp_path / "s" / "stale.txt").write_text("made with kl_coef 0")
    changed = StageRunner(tmp_path, load_config(overrides=["--ppo.kl_coef", "0.1"]), log=logs.append)
    with pytest.raises(RuntimeError, match="boom"):
        changed.run(Stage("s", fn(True), reads=("ppo.kl_coef",)))
    assert "[stage s] running (ppo.kl_coef)" in logs and not (tmp_path / "s" / "stale.txt").exists()
    changed.run(Stage("s", lambda out: {"resumed": (out / "partial.txt").is_file()}, reads=("ppo.kl_coef",)))
    assert StageRunner(tmp_path, load_config(overrides=["--ppo.kl_coef", "0.1"])).run(
        Stage("s", fn(True), reads=("ppo.kl_coef",))) == {"resumed": True}


def test_lever_keys_stay_out_of_stage_keys_at_their_defaults():
    """sft/rm/ppo levers (keyed_at_default=False): a default run keeps the stage keys it had before the keys existed;
    setting one changes the key of the stages that read it."""
    from umm_ray import stages
    from umm_ray.config import Config
    from umm_ray.pipeline import config_values, declared_reads

    cfg = Config()
    levers = {f"{s}.{k}" for s in ("sft", "ppo") for k in ("precision", "grad_checkpointing", "micro_batch_tokens")}
    assert "rm.micro_batch_tokens" in declared_reads(stages.train_rm, cfg, "dense", {})
    for fn, args in ((stages.sft, ()), (stages.train_rm, ("dense", {}))):
        keys = config_values(cfg, declared_reads(fn, cfg, *args))
        assert not (levers | {"rm.micro_batch_tokens"}) & set(keys), fn.__name__
    bf16 = dataclasses.replace(cfg, sft=dataclasses.replace(cfg.sft, precision="bf16", micro_batch_tokens=512))
    keys = config_values(bf16, declared_reads(stages.sft, bf16))
    assert keys["sft.precision"] == "bf16" and keys["sft.micro_batch_tokens"] == 512
    budget = dataclasses.replace(cfg, rm=dataclasses.replace(cfg.rm, micro_batch_tokens=1024))
    assert config_values(budget, declared_reads(stages.train_rm, budget, "dense", {}))["rm.micro_batch_tokens"] == 1024
    ppo = dataclasses.replace(cfg, ppo=dataclasses.replace(cfg.ppo, precision="bf16"))
    assert config_values(ppo, ["ppo"])["ppo.precision"] == "bf16" and "ppo.precision" not in config_values(cfg, ["ppo"])


def _training_stage(name: str, fail: bool = False):
    """A stage that writes what a training stage does: its model, and resume state where Ray Train and PPO put it."""
    def fn(out):
        for d in ("ray_train/umm/rm_umm_moe__checkpoint_0000007", "member_1/ray_train/m1/checkpoint_0000002",
                  "checkpoints/step_000003", "model"):
            (out / d).mkdir(parents=True, exist_ok=True)
            (out / d / "weights.bin").write_bytes(b"\0" * 1000)
        if fail:
            raise RuntimeError("killed mid-stage")
        return {}
    return Stage(name, fn, reads=("rm.lr",))


def test_a_done_stage_drops_its_resume_state_unless_kept(tmp_path):
    logs = []
    runner = StageRunner(tmp_path, load_config(), log=logs.append)
    with pytest.raises(RuntimeError, match="killed"):
        runner.run(_training_stage("crashed", fail=True))
    assert (tmp_path / "crashed" / "ray_train").is_dir()  # an interrupted stage resumes from it
    runner.run(_training_stage("done"))
    out = tmp_path / "done"
    assert sorted(p.name for p in out.iterdir()) == ["_done.json", "member_1", "model"]
    assert not (out / "member_1" / "ray_train").exists() and (out / "model" / "weights.bin").is_file()
    assert "(deleted 0.00 GB of resume checkpoints; run.keep_checkpoints keeps them)" in logs[-1]
    # The key is the same with or without keeping: the kept run is served from the cache, a new one keeps all
    kept = StageRunner(tmp_path, load_config(overrides=["--run.keep_checkpoints", "true"]))
    kept.run(_training_stage("done"))
    assert kept.cached["done"]
    kept.run(_training_stage("kept"))
    assert {"ray_train", "checkpoints"} <= {p.name for p in (tmp_path / "kept").iterdir()}
    assert (tmp_path / "kept" / "member_1" / "ray_train").is_dir()
