"""SFT pieces: the response-only loss mask, SFT data validation, sampling for the gold eval.

The Ray Train run itself (2 workers, loss goes down, loadable checkpoint, gold gain) is tested through the job in
tests/jobs/test_sft.py.
"""

from __future__ import annotations

import json

import pytest
import torch

from umm_ray.train.sft import IGNORE, SFTExample, SFTTask, load_sft_examples, sample_responses, sft_base


@pytest.fixture(scope="module")
def task(tiny_world):
    cfg, world = tiny_world
    return SFTTask(str(world.base), max_len=cfg.model.max_seq_len)


def test_collate_masks_prompt_and_padding_keeps_response_and_eos(task):
    examples = [SFTExample("Name a fruit.\nAnswer:", " apple."),
                SFTExample("Name two colours please.\nAnswer:", " red.")]
    batch = task.collate(examples)
    tok = task.tokenizer
    for row, ex in enumerate(examples):
        p = tok(ex.prompt, add_special_tokens=False)["input_ids"]
        r = tok(ex.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        labels = batch["labels"][row]
        assert (labels[:len(p)] == IGNORE).all()
        assert labels[len(p):len(p) + len(r)].tolist() == r
        assert (labels[len(p) + len(r):] == IGNORE).all()
        assert batch["attention_mask"][row].sum() == len(p) + len(r)


def test_loss_counts_response_tokens_only(task):
    model = task.build()
    batch = task.collate([SFTExample("Name a fruit.\nAnswer:", " apple.")])
    loss, extra = task.loss(model, model, batch)
    n_resp = len(task.tokenizer(" apple.", add_special_tokens=False)["input_ids"]) + 1
    assert extra["response_tokens"] == n_resp
    logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
    targets = batch["input_ids"][0, 1:]
    keep = batch["labels"][0, 1:] != IGNORE
    expected = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)


def test_task_pickles_without_its_tokenizer(task):
    import pickle

    task.tokenizer  # load it
    clone = pickle.loads(pickle.dumps(task))
    assert clone._tok is None and clone.model_path == task.model_path


def test_sft_rows_are_validated_with_file_and_line(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": " r"}) + "\n" + json.dumps({"prompt": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"sft.jsonl:2"):
        load_sft_examples(path)


def test_sample_responses_are_seeded(tiny_world):
    _, world = tiny_world
    prompts = ["Name a fruit.\nAnswer:", "What sound does a cat make?\nAnswer:"]
    a = sample_responses(world.base, prompts, max_new_tokens=6, seed=1)
    assert a == sample_responses(world.base, prompts, max_new_tokens=6, seed=1)
    assert len(a) == 2 and all(isinstance(r, str) for r in a)


def test_sft_base_path_chooses_the_model_sft_starts_from(tmp_path, make_cfg):
    """sft.base_path is the model SFT fine-tunes; empty, the testbed's tiny base model."""
    from umm_ray.layout import RunLayout

    world = RunLayout(tmp_path)
    assert sft_base(make_cfg(tmp_path), world) == world.base
    assert sft_base(make_cfg(tmp_path, "--sft.base_path", "Qwen/Qwen2.5-0.5B"), world).as_posix() == "Qwen/Qwen2.5-0.5B"


def test_sft_levers_in_a_ray_train_run(ray_local, tiny_world, tmp_path):
    """SFT through fit (2 DDP workers): token-budget micro-batches with gradient checkpointing train the plain run's
    steps (fp32: the same losses, step after step); bf16 autocast trains with finite losses near them."""
    from umm_ray.train.loop import TrainSpec, fit

    cfg, world = tiny_world
    examples = load_sft_examples(world.sft_data)[:96]
    task = SFTTask(str(world.base), max_len=cfg.model.max_seq_len)
    lengths = [int(task.collate([e])["attention_mask"].sum()) for e in examples[:16]]
    budget = 3 * max(lengths)  # several pieces per 16-row batch

    def run(name, **kw):
        spec = TrainSpec(name=name, stage_dir=tmp_path / name, num_workers=2, batch_size=16, max_steps=3, lr=3e-3,
                         checkpoint_every=1000, section="sft", **kw)
        return fit(task, examples, spec).losses()

    plain = run("plain")
    pieces = run("pieces", micro_batch_tokens=budget, grad_checkpointing=True)
    assert pieces == pytest.approx(plain, rel=1e-4)
    bf16 = run("bf16", precision="bf16", micro_batch_tokens=budget)
    assert all(abs(a - b) < 0.05 * abs(b) for a, b in zip(bf16, plain)), (bf16, plain)
