"""Several runs in one Ray Train worker group (`umm_ray.train.group.fit_group`): each run comes out as `fit` alone
makes it, also a run that starts from the model an earlier run of the group wrote (as a UMM's merge starts from its
MoE); a worker crash in the second run resumes there (the first is not retrained) and ends where an uninterrupted
group ends; runs that need different worker groups are refused. Real Ray Train, tiny Llama LM."""

from __future__ import annotations

import json
import sys

import cloudpickle
import pytest
import torch

from tests.train.test_loop import EXAMPLES, CrashOnceTask, TinyLMTask, _spec, _weights
from umm_ray.train.group import MARKER, fit_group
from umm_ray.train.loop import fit

cloudpickle.register_pickle_by_value(sys.modules[__name__])


class FromDirTask(TinyLMTask):
    """The tiny LM loaded from `source` (written by an earlier run), trained on."""

    def __init__(self, source: str):
        self.source = source

    def build(self):
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM.from_pretrained(self.source)

    def fingerprint(self):
        return {"task": "from_dir", "source": self.source}


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_each_run_of_a_group_matches_the_same_run_alone(ray_local, tmp_path):
    specs = [_spec(tmp_path / f"run{i}", name=f"run{i}", seed=3 + i, max_steps=5) for i in range(2)]
    group = fit_group([(TinyLMTask(), EXAMPLES, s) for s in specs], tmp_path / "group")
    assert [r.name for r in group] == ["run0", "run1"] and all(r.resumed_from == 0 for r in group)
    assert group[0].ended_at <= group[1].started_at, "the runs of one group train one after another"
    for i, r in enumerate(group):
        alone = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path / f"alone{i}", name=f"alone{i}", seed=3 + i, max_steps=5))
        assert [h["step"] for h in r.history] == list(range(1, 6))
        torch.testing.assert_close(torch.tensor(r.losses()), torch.tensor(alone.losses()), rtol=1e-6, atol=1e-7)
        _assert_same(_weights(r.model_dir), _weights(alone.model_dir))
        assert json.loads((tmp_path / f"run{i}" / MARKER).read_text())["result"]["total_steps"] == 5
    assert _weights(group[0].model_dir)["lm_head.weight"].ne(_weights(group[1].model_dir)["lm_head.weight"]).any()


def test_a_crash_in_the_second_run_resumes_it_and_skips_the_first(ray_local, tmp_path):
    """Rank 0 dies in its 9th loss call: step 5 of the second run (the first takes 4). Ray Train restarts the group;
    the first run is skipped (its marker and model are there), the second resumes from its step-3 checkpoint, and
    both end as in a group that never crashed."""
    marker = tmp_path / "crashed"

    def specs(root):  # one group, one failure budget: the runs must agree on max_failures
        return [_spec(root / "a", name="a", seed=3, max_steps=4, max_failures=1),
                _spec(root / "b", name="b", seed=4, max_steps=6, max_failures=1)]

    crash = CrashOnceTask(str(marker), crash_at=9)
    crashed = fit_group([(crash, EXAMPLES, s) for s in specs(tmp_path / "crash")], tmp_path / "crash")
    assert marker.exists(), "the injected crash never happened"
    assert crashed[1].resumed_from == 3 and [h["step"] for h in crashed[1].history] == list(range(1, 7))
    never = CrashOnceTask(str(marker), crash_at=-1)
    straight = fit_group([(never, EXAMPLES, s) for s in specs(tmp_path / "straight")], tmp_path / "straight")
    for c, s in zip(crashed, straight):
        torch.testing.assert_close(torch.tensor(c.losses()), torch.tensor(s.losses()), rtol=1e-6, atol=1e-7)
        _assert_same(_weights(c.model_dir), _weights(s.model_dir))


def test_runs_needing_different_worker_groups_are_refused_before_ray(tmp_path):
    specs = [_spec(tmp_path / "a", name="a"), _spec(tmp_path / "b", name="b", num_workers=1)]
    with pytest.raises(ValueError, match="run 'b' has num_workers=1 but 'a' has 2"):
        fit_group([(TinyLMTask(), EXAMPLES, s) for s in specs], tmp_path)
    with pytest.raises(ValueError, match="no runs"):
        fit_group([], tmp_path)


def test_a_run_starting_from_an_earlier_runs_model_matches_the_two_runs_alone(ray_local, tmp_path):
    """Run 2 loads the model run 1 writes (every rank, after rank 0 has written it) and trains on: the pair equals
    run 1 alone followed by run 2 alone from run 1's export."""
    a = _spec(tmp_path / "g" / "a", name="a", max_steps=3)
    b = _spec(tmp_path / "g" / "b", name="b", seed=5, max_steps=3)
    first, second = fit_group([(TinyLMTask(), EXAMPLES, a), (FromDirTask(str(a.stage_dir / "model")), EXAMPLES, b)],
                              tmp_path / "g")
    one = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path / "alone_a", name="alone_a", max_steps=3))
    two = fit(FromDirTask(str(one.model_dir)), EXAMPLES, _spec(tmp_path / "alone_b", name="alone_b", seed=5,
                                                                max_steps=3))
    _assert_same(_weights(first.model_dir), _weights(one.model_dir))
    _assert_same(_weights(second.model_dir), _weights(two.model_dir))
    torch.testing.assert_close(torch.tensor(second.losses()), torch.tensor(two.losses()), rtol=1e-6, atol=1e-7)
    assert second.losses()[0] < first.losses()[0]  # it started from the trained model, not a fresh one


def test_a_groups_checkpoints_of_other_runs_are_set_aside_and_its_own_kept(tmp_path):
    """A group's checkpoints are named `<run>__checkpoint_<step>`; the latest (by time) is resumed when it belongs to
    any run of the group, and set aside (not deleted) when it belongs to none."""
    from umm_ray.train.loop import STATE_FILE, set_aside_stale_run

    run = tmp_path / "ray_train" / "members"
    (run / "member_1__checkpoint_0000003").mkdir(parents=True)
    (run / "member_1__checkpoint_0000003" / STATE_FILE).write_text(json.dumps({"fingerprint": {"seed": 1}}))
    assert set_aside_stale_run(run, {"seed": 0}, {"seed": 1}) is None and run.is_dir()
    assert set_aside_stale_run(run, {"seed": 0}, {"seed": 2}) == run.with_name("members.stale-1")
    assert (tmp_path / "ray_train" / "members.stale-1" / "member_1__checkpoint_0000003" / STATE_FILE).is_file()


def test_runs_sharing_a_name_or_a_stage_dir_are_refused_before_any_worker_starts(tmp_path):
    """A group's checkpoints are named by the run and each run writes its model to its stage dir: two runs with one
    name (two UMM stages' MoE runs are both 'rm_umm_moe') or one dir would overwrite each other's."""
    a, b = _spec(tmp_path / "a", name="moe"), _spec(tmp_path / "b", name="moe")
    with pytest.raises(ValueError, match="two runs have name 'moe'"):
        fit_group([(TinyLMTask(), EXAMPLES, a), (TinyLMTask(), EXAMPLES, b)], tmp_path / "group")
    c = _spec(tmp_path / "a", name="other")
    with pytest.raises(ValueError, match="two runs have stage_dir"):
        fit_group([(TinyLMTask(), EXAMPLES, a), (TinyLMTask(), EXAMPLES, c)], tmp_path / "group")
