"""jobs.sft end to end: a `python -m jobs.sft` driver joins the test's Ray cluster (as under `ray job submit`), runs
the prepare stage it finds missing, fine-tunes with 2 Ray Train workers, and writes a loadable HF checkpoint, the
loss curve and the gold gain over the base model."""

from __future__ import annotations

import json

import torch

from tests.fixtures import run_job


def test_sft_job_with_two_workers_lowers_loss_and_writes_a_loadable_checkpoint(ray_local, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "run"
    address = ray_local.get_runtime_context().gcs_address
    log = run_job("jobs.sft", ["--preset", "test", "--run.output_dir", str(out), "--run.ray_address", address,
                               "--sft.num_workers", "2", "--sft.epochs", "2", "--sft.checkpoint_every", "5",
                               "--run.keep_checkpoints", "true"],
                  tmp_path / "sft.log")
    assert "gold base" in log
    stage = out / "sft"
    assert (out / "prepare" / "world.json").is_file()  # the missing prepare stage ran first
    report = json.loads((stage / "eval.json").read_text())
    history = json.loads((stage / "metrics.json").read_text())
    assert [h["step"] for h in history] == list(range(1, report["steps"] + 1))
    first, last = sum(h["loss"] for h in history[:3]) / 3, sum(h["loss"] for h in history[-3:]) / 3
    assert last < first - 0.5, (first, last)
    assert report["gold_sft"] > report["gold_base"] and report["gain"] > 0
    assert (stage / "loss_curve.png").stat().st_size > 0 and (stage / "config.yaml").is_file()
    checkpoints = sorted((stage / "ray_train" / "sft").glob("checkpoint_*"))
    assert checkpoints, "no Ray Train checkpoints were kept"

    model_dir = stage / "model"
    assert (model_dir / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tok("Name a fruit.\nAnswer:", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert gen.shape[1] > ids.shape[1]
