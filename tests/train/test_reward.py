"""Reward-model stages on a real local Ray cluster with the tiny testbed world: UMM end to end (upcycle -> MoE BT ->
learnable merge -> a plain-transformers checkpoint with the dense parameter count), concurrent seed ensembles, BT task
pieces, and bad inputs failing before compute. (Dense training lowering held-out loss: tests/jobs/test_train_rm.py.)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from tests.fixtures import save_tiny_rm
from umm_ray.algo.bt import pref_accuracy
from umm_ray.algo.ensemble import aggregate
from umm_ray.models.reward_model import load_reward_model, load_scorer
from umm_ray.records import PreferencePair
from umm_ray.train.bt_task import BTTask
from umm_ray.train.ensemble import calibration_pairs, train_ensemble, worker_group_mode
from umm_ray.train.evaluate import pair_rewards
from umm_ray.train.reward import RMData, load_rm_data, train_umm

FAST_RM = ("--rm.num_workers", "2", "--rm.batch_size", "16", "--rm.epochs", "1", "--rm.checkpoint_every", "1000")


def held_out_accuracy(ev: dict) -> tuple[float, int]:
    """(accuracy, n) over the val and test splits of an eval.json together (more pairs, a smaller standard error)."""
    n = ev["val"]["n"] + ev["test"]["n"]
    return (ev["val"]["accuracy"] * ev["val"]["n"] + ev["test"]["accuracy"] * ev["test"]["n"]) / n, n


def untrained_accuracy(task: BTTask, seeds: list[int], pairs: list[PreferencePair], how: str = "mean",
                       lam: float = 0.0) -> float:
    """Accuracy on `pairs` of what training starts from: the model(s) `task` builds under each seed, as the workers
    build them, scores aggregated over members like the trained ensemble's."""
    per_seed = []
    for seed in seeds:
        torch.manual_seed(seed)
        net = task.build()
        per_seed.append(pair_rewards(net.rm, task.tokenizer, pairs, task.max_len))
    chosen = aggregate(torch.stack([c for c, _ in per_seed]), how, lam)
    rejected = aggregate(torch.stack([r for _, r in per_seed]), how, lam)
    return pref_accuracy(chosen, rejected)


def assert_beats_untrained(trained: float, untrained: float, n: int) -> None:
    """Training must raise held-out accuracy above the untrained model's by more than the trained accuracy's standard
    error SE = sqrt(p(1-p)/n): a gain the sampling noise of n held-out pairs does not explain (both are measured on
    the same pairs)."""
    se = math.sqrt(trained * (1 - trained) / n)
    print(f"held-out accuracy {trained:.3f} vs untrained {untrained:.3f} (n={n}, SE {se:.3f})")
    assert trained - untrained > se, (trained, untrained, n, se)


@pytest.fixture(scope="module")
def data(tiny_world) -> RMData:
    cfg, world = tiny_world
    return load_rm_data(cfg, world)


def test_testbed_data_is_split_without_shared_prompts(data):
    assert len(data.train) > 300 and data.val and data.test
    train_prompts = {p.prompt for p in data.train}
    assert not train_prompts & {p.prompt for p in data.val + data.test}
    assert all(p.family for p in data.train)


def test_bt_task_batches_chosen_then_rejected_and_scores_both(tiny_world, data):
    _, world = tiny_world
    task = BTTask("dense", world.base, max_len=128)
    net = task.build()
    batch = task.collate(data.train[:3])
    assert batch["ids"].shape[0] == 6
    loss, extra = task.loss(net, net, batch)
    r = net(batch["ids"], batch["mask"])
    expected = -torch.nn.functional.logsigmoid(r[:3] - r[3:]).mean()
    torch.testing.assert_close(loss, expected)
    assert extra["acc"] == pytest.approx(((r[:3] > r[3:]).float() + 0.5 * (r[:3] == r[3:]).float()).mean().item())


def test_moe_task_adds_the_load_balancing_loss(tiny_world, data):
    _, world = tiny_world
    task = BTTask("moe", world.base, max_len=128, num_experts=3, top_k=1, aux_coef=10.0)
    assert task.find_unused_parameters  # unrouted experts get no gradient; DDP must allow that
    net = task.build()
    net.train()
    loss, extra = task.loss(net, net, task.collate(data.train[:4]))
    assert extra["aux_loss"] > 0
    torch.testing.assert_close(loss.item(), extra["bt_loss"] + 10.0 * extra["aux_loss"], rtol=1e-5, atol=1e-6)


def test_unsupported_backbone_and_long_max_len_fail_before_compute(tiny_world, make_cfg, tmp_path):
    from transformers import BertConfig

    cfg, world = tiny_world
    BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
               intermediate_size=32).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="unsupported backbone family"):
        train_umm(cfg, world, stage_dir=tmp_path / "x", source=tmp_path / "bert")
    long_cfg = make_cfg(cfg.run.output_dir, "--rm.max_len", "4096")
    with pytest.raises(ValueError, match="rm.max_len=4096 exceeds"):
        train_umm(long_cfg, world, stage_dir=tmp_path / "y", source=world.base)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_umm_end_to_end_writes_a_plain_transformers_checkpoint_of_dense_size(ray_local, tiny_world, make_cfg,
                                                                            data, tmp_path):
    cfg, world = tiny_world
    cfg = make_cfg(cfg.run.output_dir, *FAST_RM, "--moe.num_experts", "3", "--moe.top_k", "2",
                   "--merge.alpha", "0.5", "--merge.epochs", "1")
    res = train_umm(cfg, world, stage_dir=tmp_path / "umm", data=data, source=world.base)
    ev = json.loads((tmp_path / "umm" / "eval.json").read_text())
    assert res.model_path == tmp_path / "umm" / "model"
    assert ev["params"] == ev["dense_params"] < ev["moe"]["params"]
    assert len(ev["moe"]["expert_load"]) == cfg.model.num_layers
    for layer in ev["moe"]["expert_load"]:
        assert len(layer) == 3 and abs(sum(layer) - 1) < 1e-6
    coefs = ev["merge"]["softmax_theta"]
    assert len(coefs) == cfg.model.num_layers and all(abs(sum(c) - 1) < 1e-5 for c in coefs)
    assert any(abs(c - 1 / 3) > 1e-4 for layer in coefs for c in layer), "theta never moved"
    assert len(ev["loss_curve"]) == ev["steps"]
    untrained = BTTask("moe", world.base, cfg.rm.max_len, num_experts=3, top_k=2, noisy=cfg.moe.noisy_gating,
                       router_seed=cfg.run.seed, aux_coef=cfg.moe.aux_loss_coef)
    acc, n = held_out_accuracy(ev)
    assert_beats_untrained(acc, untrained_accuracy(untrained, [cfg.run.seed], data.val + data.test), n)
    assert (tmp_path / "umm" / "loss_curve.png").stat().st_size > 0

    # A fresh interpreter that never imports umm_ray scores like umm_ray's loader does.
    from umm_ray.models.reward_model import load_reward_model, reward_forward
    from umm_ray.models.upcycle import load_moe

    load_moe(tmp_path / "umm" / "moe" / "model")  # the unmerged MoE reloads too
    model, tok = load_reward_model(res.model_path)
    texts = [p.prompt + p.chosen for p in data.test[:4]]
    with torch.no_grad():
        ours = [reward_forward(model, e["input_ids"], e["attention_mask"]).item()
                for e in (tok(t, return_tensors="pt") for t in texts)]
    code = ("import json, sys, torch; from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            "d, texts = sys.argv[1], json.loads(sys.argv[2])\n"
            "m = AutoModelForSequenceClassification.from_pretrained(d).eval(); t = AutoTokenizer.from_pretrained(d)\n"
            "with torch.no_grad(): s = [m(**t(x, return_tensors='pt')).logits[0, 0].item() for x in texts]\n"
            "assert 'umm_ray' not in sys.modules\n"
            "print(json.dumps({'n': sum(p.numel() for p in m.parameters()), 'scores': s}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code, str(res.model_path), json.dumps(texts)], env=env, cwd="/",
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    plain = json.loads(out.stdout.strip().splitlines()[-1])
    assert plain["n"] == ev["dense_params"]
    torch.testing.assert_close(torch.tensor(plain["scores"]), torch.tensor(ours), rtol=0, atol=1e-5)


def test_umm_trains_with_the_memory_levers_and_reports_them(ray_local, tiny_world, make_cfg, data, tmp_path):
    """bf16 autocast + gradient checkpointing + token-budget micro-batches (both ranks run as many pieces as the
    one needing most) + one upcycled layer + one row per pair (rm.share_prompt), under DeepSpeed ZeRO-2 on CPU
    (gloo): both Ray Train stages run, the merge is the dense model, and every eval.json says which levers it ran
    with."""
    cfg, world = tiny_world
    cfg = make_cfg(cfg.run.output_dir, *FAST_RM, "--rm.batch_size", "32", "--moe.num_experts", "2",
                   "--moe.top_k", "1", "--moe.upcycle_layers", "0", "--rm.precision", "bf16",
                   "--rm.grad_checkpointing", "true", "--rm.strategy", "deepspeed", "--rm.zero_stage", "2",
                   "--rm.micro_batch_tokens", "1024",  # 32 pairs x 2 rows x ~40 tokens: a few pieces per batch
                   "--rm.share_prompt", "true")
    res = train_umm(cfg, world, stage_dir=tmp_path / "umm", data=data.__class__(data.train[:256], data.val[:32],
                                                                                   data.test[:32], data.source),
                    source=world.base)
    ev = json.loads((tmp_path / "umm" / "eval.json").read_text())
    want = {"precision": "bf16", "grad_checkpointing": True, "micro_batch_tokens": 1024, "strategy": "deepspeed",
            "zero_stage": 2, "upcycle_layers": [0], "share_prompt": True}
    assert ev["levers"] == want and ev["moe"]["levers"] == want
    assert len(ev["moe"]["expert_load"]) == 1 and len(ev["merge"]["softmax_theta"]) == 1  # only layer 0 is MoE
    assert ev["params"] == ev["dense_params"] < ev["moe"]["params"]
    assert all(math.isfinite(x) for x in ev["loss_curve"]) and math.isfinite(ev["test"]["bt_loss"])
    model, _ = load_reward_model(res.model_path)
    assert {p.dtype for p in model.state_dict().values()} == {torch.float32}


def test_ensemble_members_train_concurrently(ray_local, tiny_world, make_cfg, data, tmp_path):
    cfg, world = tiny_world
    cfg = make_cfg(cfg.run.output_dir, *FAST_RM, "--ensemble.members", "2", "--ensemble.placement", "SPREAD",
                   "--ensemble.worker_group", "per_member",
                   "--rm.batch_size", "8", "--rm.epochs", "2")  # ~45 steps: long enough to outlast start-up jitter
    res = train_ensemble(cfg, world, stage_dir=tmp_path / "ens", data=data, source=world.base)
    manifest = json.loads(res.model_path.read_text())
    assert manifest["members"] == ["member_0/model", "member_1/model"] and manifest["seeds"] == [0, 1]
    members = res.eval["members"]
    # Overlap from the workers' own clocks: each member's worker group was up before the other one finished.
    assert members[0]["entered_at"] < members[1]["ended_at"] and members[1]["entered_at"] < members[0]["ended_at"]
    assert res.eval["overlap_seconds"] > 0
    w0 = (tmp_path / "ens" / "member_0" / "model" / "model.safetensors").read_bytes()
    w1 = (tmp_path / "ens" / "member_1" / "model" / "model.safetensors").read_bytes()
    assert w0 != w1  # different seeds, different members
    members_at_start = BTTask("dense", world.base, cfg.rm.max_len)
    start = untrained_accuracy(members_at_start, manifest["seeds"], data.val + data.test, cfg.ensemble.aggregate,
                               cfg.ensemble.uwo_lambda)
    acc, n = held_out_accuracy(res.eval)
    assert_beats_untrained(acc, start, n)
    for ev in (res.eval, *members):  # the aggregate's and every member's per-pair outcomes on the same test pairs
        assert len(ev["test"]["outcomes"]) == ev["test"]["n"] == len(data.test)


def test_ensemble_members_in_one_shared_worker_group_train_in_turn(ray_local, tiny_world, make_cfg, data, tmp_path):
    """ensemble.worker_group shared: one Ray Train run trains the members one after another (no overlap); each member
    has its own seed, model and eval, and the aggregate beats the untrained members."""
    cfg, world = tiny_world
    cfg = make_cfg(cfg.run.output_dir, *FAST_RM, "--ensemble.members", "2", "--ensemble.worker_group", "shared",
                   "--rm.batch_size", "8", "--rm.epochs", "2")
    res = train_ensemble(cfg, world, stage_dir=tmp_path / "ens", data=data, source=world.base)
    manifest = json.loads(res.model_path.read_text())
    assert manifest["members"] == ["member_0/model", "member_1/model"] and manifest["seeds"] == [0, 1]
    members = res.eval["members"]
    assert res.eval["worker_group"] == "shared" and res.eval["training_overlap_seconds"] == 0
    assert worker_group_mode(make_cfg(cfg.run.output_dir)) == "shared"  # 'auto' on this one CPU-only node
    assert members[0]["ended_at"] <= members[1]["started_at"]
    assert members[1]["entered_at"] >= members[0]["ended_at"]  # its turn began when the first member was done
    assert all((tmp_path / "ens" / f"member_{i}" / "eval.json").is_file() for i in range(2))
    w0 = (tmp_path / "ens" / "member_0" / "model" / "model.safetensors").read_bytes()
    w1 = (tmp_path / "ens" / "member_1" / "model" / "model.safetensors").read_bytes()
    assert w0 != w1
    start = untrained_accuracy(BTTask("dense", world.base, cfg.rm.max_len), manifest["seeds"], data.val + data.test,
                               cfg.ensemble.aggregate, cfg.ensemble.uwo_lambda)
    acc, n = held_out_accuracy(res.eval)
    assert_beats_untrained(acc, start, n)
    _check_common_scale(cfg, manifest, res.model_path, data)


def _check_common_scale(cfg, manifest: dict, path, data) -> None:
    """The manifest's scale is each member's own mean and std on the calibration responses, so on the ensemble's
    scale every member has mean 0 and std 1 there; and WCO's minimum is not one member's by construction: on the
    held-out responses each member is the lowest somewhere."""
    calib = calibration_pairs(data.train, cfg.ensemble.calibration_pairs, cfg.run.seed)
    assert manifest["calibration_pairs"] == len(calib) == min(cfg.ensemble.calibration_pairs, len(data.train))
    ens = load_scorer(path, max_len=cfg.rm.max_len)
    prompts = [p.prompt for p in calib] * 2
    z = torch.tensor(ens.member_scores(prompts, [p.chosen for p in calib] + [p.rejected for p in calib]))
    torch.testing.assert_close(z.mean(1), torch.zeros(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(1, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    held = data.val + data.test
    zh = torch.tensor(ens.member_scores([p.prompt for p in held], [p.chosen for p in held]))
    assert set(zh.argmin(0).tolist()) == {0, 1}
    # The eval's aggregate, made from the members' own held-out rewards, is what the manifest's ensemble scores.
    test = [p.prompt for p in data.test] * 2, [p.chosen for p in data.test] + [p.rejected for p in data.test]
    agg = json.loads((path.parent / "eval.json").read_text())["test"]
    torch.testing.assert_close(torch.tensor(agg["rewards"]["chosen"] + agg["rewards"]["rejected"]),
                               torch.tensor(ens.score(*test)), atol=1e-4, rtol=0)


def test_local_preference_file_is_split_train_val_test(tmp_path, make_cfg):
    from umm_ray.data import write_jsonl

    pairs = [PreferencePair(f"Q{i}?", f" good {i}", f" bad {i}") for i in range(40)]
    write_jsonl(tmp_path / "prefs.jsonl", pairs)
    cfg = make_cfg(tmp_path, "--rm.data", str(tmp_path / "prefs.jsonl"), "--rm.val_frac", "0.1",
                   "--rm.test_frac", "0.2")
    d = load_rm_data(cfg)
    assert (len(d.train), len(d.val), len(d.test)) == (28, 4, 8)
    assert {p.prompt for p in d.train}.isdisjoint({p.prompt for p in d.test})
    # rm.val_frac / rm.test_frac set the split of the user's file
    d = load_rm_data(make_cfg(tmp_path, "--rm.data", str(tmp_path / "prefs.jsonl"), "--rm.val_frac", "0.25",
                              "--rm.test_frac", "0.25"))
    assert (len(d.train), len(d.val), len(d.test)) == (20, 10, 10)


def test_testbed_pairs_with_an_empty_sample_are_skipped_and_reported(tmp_path, make_cfg):
    from umm_ray.data import write_jsonl
    from umm_ray.layout import RunLayout

    world = RunLayout(tmp_path)
    good = [PreferencePair(f"Q{i}?", f" good {i}", f" bad {i}") for i in range(6)]
    write_jsonl(world.pairs_train, good + [{"prompt": "Q?", "chosen": " fine.", "rejected": " "}])
    write_jsonl(world.pairs_val, good[:2])
    write_jsonl(world.pairs_test, good[2:])
    d = load_rm_data(make_cfg(tmp_path), world)
    assert len(d.train) == 6
    assert len(d.notes) == 1 and "empty_response" in d.notes[0]


def test_moe_stage_upcycles_a_trained_dense_rm_keeping_its_scores(tiny_world, data, tmp_path):
    """Upcycling from a dense RM checkpoint keeps its score head: at initialisation the MoE scores like the RM."""
    from umm_ray.models.reward_model import load_reward_model

    from transformers import AutoTokenizer

    cfg, world = tiny_world
    tok = AutoTokenizer.from_pretrained(world.tokenizer)
    rm_dir = save_tiny_rm(tmp_path / "rm", tok, cfg.model.family, seed=5, hidden_size=cfg.model.hidden_size,
                          num_layers=cfg.model.num_layers)
    dense, _ = load_reward_model(rm_dir)
    moe = BTTask("moe", rm_dir, max_len=128, num_experts=2, top_k=1).build().rm.eval()
    a = pair_rewards(dense, tok, data.test[:8], 128)
    b = pair_rewards(moe, tok, data.test[:8], 128)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_dense_on_real_hh_pairs_trains_on_part_and_tests_on_the_rest(ray_local, tiny_world, make_cfg, shared_data,
                                                                      tmp_path):
    from umm_ray.train.reward import train_dense

    cfg, world = tiny_world
    hh = shared_data / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
    cfg = make_cfg(tmp_path, "--rm.data", str(hh), "--rm.data_on_error", "skip", "--rm.max_len", "128",
                   "--rm.num_workers", "2", "--rm.batch_size", "32", "--rm.epochs", "1")
    res = train_dense(cfg, world, stage_dir=tmp_path / "hh", source=world.base)
    ev = res.eval
    assert sum(ev["n_pairs"].values()) == 2308  # 2312 rows, 4 with an empty response skipped and reported
    assert any("empty_response': 4" in n for n in ev["data_notes"])
    assert ev["test"]["n"] == ev["n_pairs"]["test"] > 300
    n = ev["test"]["n"]  # the accuracy counts exactly the held-out pairs (k of n), not a batch or another split
    assert ev["test"]["accuracy"] * n == pytest.approx(round(ev["test"]["accuracy"] * n), abs=1e-6)
    won = ev["test"]["outcomes"]  # per pair, so a table can compare two RMs pair by pair
    assert len(won) == n and set(won) <= {0.0, 0.5, 1.0} and sum(won) / n == pytest.approx(ev["test"]["accuracy"])
