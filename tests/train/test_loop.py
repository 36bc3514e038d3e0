"""The shared Ray Train runner: deterministic sharding, checkpoint + resume (after a worker crash and on relaunch),
DDP vs DeepSpeed ZeRO on CPU workers. Real Ray Train runs on the local cluster; a tiny Llama LM on synthetic tokens.
"""

from __future__ import annotations

import sys
from pathlib import Path

import cloudpickle
import pytest
import torch

from umm_ray.train.loop import TrainSpec, TrainTask, fit, rank_batches, steps_per_epoch, total_steps

# Workers unpickle the tasks below; this module is not importable there, so ship it by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXAMPLES = [[(3 * i + j) % 50 + 1 for j in range(12)] for i in range(96)]


class TinyLMTask(TrainTask):
    """Next-token loss of a 1-layer Llama (hidden 64) on fixed token rows."""

    def build(self):
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                          num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=32)
        return LlamaForCausalLM(cfg)

    def collate(self, examples):
        ids = torch.tensor(examples)
        return {"input_ids": ids, "labels": ids}

    def loss(self, model, raw, batch):
        return model(**batch, use_cache=False).loss, {}

    def save(self, raw, out_dir):
        raw.save_pretrained(out_dir)


class CrashOnceTask(TinyLMTask):
    """Rank 0 raises in its `crash_at`-th loss call, once per `marker` file: a real worker failure mid-run."""

    def __init__(self, marker: str, crash_at: int):
        self.marker, self.crash_at, self.calls = marker, crash_at, 0

    def loss(self, model, raw, batch):
        import ray.train

        self.calls += 1
        if self.calls == self.crash_at and ray.train.get_context().get_world_rank() == 0 \
                and not Path(self.marker).exists():
            Path(self.marker).touch()
            raise RuntimeError("injected worker crash")
        return super().loss(model, raw, batch)

    def fingerprint(self):
        return {"task": "tiny_lm"}


class ThreadsTask(TinyLMTask):
    """Reports the torch threads the loop gave its worker."""

    def loss(self, model, raw, batch):
        loss, extra = super().loss(model, raw, batch)
        return loss, {**extra, "threads": float(torch.get_num_threads())}


def _spec(stage_dir: Path, **kw) -> TrainSpec:
    base = dict(name="tiny", stage_dir=stage_dir, num_workers=2, batch_size=8, epochs=2, lr=5e-3, seed=3,
                checkpoint_every=3)
    return TrainSpec(**{**base, **kw})


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,world,bs", [(10, 3, 2), (96, 2, 8), (7, 4, 3), (5, 1, 5)])
def test_rank_batches_cover_every_example_with_equal_steps_per_rank(n, world, bs):
    per_rank = [rank_batches(n, epoch=0, rank=r, world=world, batch_size=bs, seed=1) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1  # DDP ranks must take the same number of steps
    assert len(per_rank[0]) == steps_per_epoch(n, world, bs)
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(range(n))  # nothing dropped
    assert len(seen) - n < world  # only the wrap-around padding repeats


def test_rank_batches_deterministic_by_seed_and_epoch():
    a = rank_batches(50, 0, 0, 2, 5, seed=7)
    assert a == rank_batches(50, 0, 0, 2, 5, seed=7)
    assert a != rank_batches(50, 1, 0, 2, 5, seed=7)
    assert a != rank_batches(50, 0, 0, 2, 5, seed=8)


def test_total_steps_max_steps_overrides_epochs(tmp_path):
    assert total_steps(_spec(tmp_path), 96) == 2 * 6
    assert total_steps(_spec(tmp_path, max_steps=5), 96) == 5


def test_bad_spec_fails_before_ray(tmp_path):
    with pytest.raises(ValueError, match="strategy"):
        fit(TinyLMTask(), EXAMPLES, _spec(tmp_path, strategy="fsdp"))
    with pytest.raises(ValueError, match="no training examples"):
        fit(TinyLMTask(), [], _spec(tmp_path))


def test_checkpoints_of_other_settings_or_data_are_set_aside_before_any_worker_starts(tmp_path):
    import json

    from umm_ray.train.loop import STATE_FILE, run_fingerprint, set_aside_stale_run

    fp = run_fingerprint(TinyLMTask(), EXAMPLES, _spec(tmp_path))
    assert fp == run_fingerprint(TinyLMTask(), EXAMPLES, _spec(tmp_path, max_steps=50, epochs=7))  # length may change
    run = tmp_path / "ray_train" / "tiny"

    def write_checkpoint(fingerprint):
        (run / "checkpoint_0000003").mkdir(parents=True)
        (run / "checkpoint_0000003" / STATE_FILE).write_text(json.dumps({"step": 3, "fingerprint": fingerprint}))

    write_checkpoint(fp)
    assert set_aside_stale_run(run, fp) is None and run.is_dir()  # same run: resume from it
    assert set_aside_stale_run(run, run_fingerprint(TinyLMTask(), EXAMPLES[:10], _spec(tmp_path))) \
        == run.with_name("tiny.stale-1")  # other data: start fresh, keep the old run aside
    assert not run.exists()
    write_checkpoint(fp)
    assert set_aside_stale_run(run, run_fingerprint(TinyLMTask(), EXAMPLES, _spec(tmp_path, seed=4))) \
        == run.with_name("tiny.stale-2")


def test_crash_resumes_from_checkpoint_and_matches_uninterrupted_run(ray_local, tmp_path):
    """A worker dies in step 5; Ray Train restarts the group, which resumes at step 3 (the latest checkpoint) and
    ends bit-for-bit where an uninterrupted run ends (model, optimizer, data order and RNG all restored)."""
    marker = tmp_path / "crashed"
    crashed = fit(CrashOnceTask(str(marker), crash_at=5), EXAMPLES,
                  _spec(tmp_path / "crash", max_failures=1, max_steps=8))
    assert marker.exists(), "the injected crash never happened"
    assert crashed.resumed_from == 3
    assert [h["step"] for h in crashed.history] == list(range(1, 9))

    straight = fit(CrashOnceTask(str(marker), crash_at=-1), EXAMPLES, _spec(tmp_path / "straight", max_steps=8))
    assert straight.resumed_from == 0
    assert straight.losses()[0] > straight.losses()[-1]
    torch.testing.assert_close(torch.tensor(crashed.losses()), torch.tensor(straight.losses()), rtol=1e-6, atol=1e-7)
    a, b = _weights(crashed.model_dir), _weights(straight.model_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)


def test_a_worker_trains_on_as_many_threads_as_it_claims_cpus(ray_local, tmp_path):
    """resources.train_cpus 2 with one worker: 2 torch threads (the default 1-CPU claim keeps 1 per worker)."""
    from umm_ray.resources import RoleResources

    two = fit(ThreadsTask(), EXAMPLES, _spec(tmp_path / "two", num_workers=1, max_steps=2,
                                             worker=RoleResources("train", 2.0, 0.0)))
    one = fit(ThreadsTask(), EXAMPLES, _spec(tmp_path / "one", num_workers=1, max_steps=2))
    assert [h["threads"] for h in two.history] == [2.0, 2.0]
    assert [h["threads"] for h in one.history] == [1.0, 1.0]


@pytest.mark.slow
def test_relaunch_continues_at_the_next_step_and_restarts_on_changed_settings(ray_local, tmp_path):
    first = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path, max_steps=6))
    more = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path, max_steps=9))
    assert more.resumed_from == 6
    assert [h["step"] for h in more.history] == list(range(1, 10))
    assert more.history[:6] == first.history
    again = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path, max_steps=9))  # a finished run: nothing left to train
    assert again.resumed_from == 9 and again.history == more.history
    assert (again.model_dir / "model.safetensors").is_file()
    fresh = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path, max_steps=3, lr=1e-2))  # other settings: no resume
    assert fresh.resumed_from == 0 and len(fresh.history) == 3
    assert (tmp_path / "ray_train" / "tiny.stale-1").is_dir()


@pytest.mark.slow
def test_deepspeed_zero1_on_cpu_workers_matches_ddp(ray_local, tmp_path):
    """DeepSpeed ZeRO-1 inside Ray Train on 2 CPU workers (gloo + DeepSpeed's shm comm op), checkpoint and resume
    included, reaches the same losses as DDP."""
    ddp = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path / "ddp", max_steps=6))
    fit(TinyLMTask(), EXAMPLES, _spec(tmp_path / "ds", strategy="deepspeed", max_steps=4))
    ds = fit(TinyLMTask(), EXAMPLES, _spec(tmp_path / "ds", strategy="deepspeed", max_steps=6))
    assert ds.resumed_from == 4
    torch.testing.assert_close(torch.tensor(ds.losses()), torch.tensor(ddp.losses()), rtol=1e-4, atol=1e-5)


def test_trainer_controller_polls_its_workers_every_quarter_second_unless_the_user_set_it(tmp_path, monkeypatch):
    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    from umm_ray.train.loop import make_trainer

    var = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
    monkeypatch.delenv(var, raising=False)
    make_trainer(lambda config: None, {}, _spec(tmp_path), tmp_path / "ray_train", "poll")
    assert get_env_vars_to_propagate()[var] == "0.25"  # what Ray Train hands its controller actor at fit()
    monkeypatch.setenv(var, "3")
    make_trainer(lambda config: None, {}, _spec(tmp_path), tmp_path / "ray_train", "poll")
    assert get_env_vars_to_propagate()[var] == "3"
