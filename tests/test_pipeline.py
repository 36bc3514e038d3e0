"""Stage caching: reuse on rerun, --force redoes a stage and its dependants, a failure keeps finished stages."""

import pytest

from umm_ray.config import load_config
from umm_ray.pipeline import Stage, StageRunner


def _counting(calls, name, fail=False):
    def fn(out):
        calls.append(name)
        if fail:
            raise RuntimeError("boom")
        (out / "x.txt").write_text(name)
        return {"name": name}
    return fn


def _stages(calls, fail_b=False):
    return [Stage("a", _counting(calls, "a"), sections=("testbed",)),
            Stage("b", _counting(calls, "b", fail_b), sections=("sft",), deps=("a",)),
            Stage("c", _counting(calls, "c"), sections=("rm",), deps=("a",))]


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
