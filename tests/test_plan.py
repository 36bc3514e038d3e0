"""The placement plan: exact parameter counts, memory estimates that never undercount, node types from cluster.yaml,
placement, `jobs.plan` for every preset, and `check_fits` stopping a reward stage that cannot fit."""

from __future__ import annotations

import io
import json
import math
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from jobs import plan as plan_job
from jobs.common import PRESETS
from umm_ray.config import load_config
from umm_ray.plan import DoesNotFit, check_fits, longest_row, make_plan
from umm_ray.plan_cluster import (
    Bundle,
    Cluster,
    ClusterError,
    Group,
    NodeType,
    members_at_once,
    place,
    read_cluster,
    resolve_worker_group,
)
from umm_ray.plan_memory import GiB, arch_from_config, arch_of, train_memory, vllm_memory
from umm_ray.pretrained import cached_path

ROOT = Path(__file__).resolve().parents[1]
SMOLLM = cached_path("smollm2-135m")  # the fetched checkpoint, where this machine has it
WORDS = "the a cat dog sat on mat red blue good bad answer question is".split()


def tiny_llama(layers: int = 2, hidden: int = 64, ffn: int = 96, vocab: int = 64):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_hidden_layers=layers,
                       num_attention_heads=hidden // 32, num_key_value_heads=hidden // 64, head_dim=32,
                       max_position_embeddings=512, num_labels=1, pad_token_id=0, tie_word_embeddings=False)


def tiny_rm(config, experts: int = 0, top_k: int = 2):
    from transformers import AutoModelForSequenceClassification

    from umm_ray.models.upcycle import upcycle

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_config(config, attn_implementation="sdpa")
    return upcycle(rm, experts, top_k, inplace=True) if experts else rm


def save_tiny_rm_dir(out: Path) -> Path:
    """A tiny Llama one-label classifier + word-level tokenizer saved as an HF directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<bos>", "<eos>", "<unk>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                  unk_token="<unk>")
    rm = tiny_rm(tiny_llama(vocab=len(vocab)))
    rm.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Parameter counts.


def test_param_counts_match_real_models():
    cfg = tiny_llama()
    arch = arch_from_config(cfg, "tiny")
    assert arch.params("rm") == sum(p.numel() for p in tiny_rm(cfg).parameters())
    for n in (2, 4):  # upcycling: FFN x (n + 1) per layer plus the router, exactly as umm_ray.models.upcycle does
        assert arch.params("rm", n) == sum(p.numel() for p in tiny_rm(cfg, n).parameters())


@pytest.mark.skipif(not SMOLLM.is_dir(), reason=f"{SMOLLM} (real SmolLM2-135M checkpoint) is absent")
def test_param_count_of_a_local_checkpoint_matches_its_weights():
    from safetensors import safe_open

    with safe_open(str(SMOLLM / "model.safetensors"), "pt") as f:
        stored = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    arch = arch_of(str(SMOLLM))
    assert arch.params("lm") == stored  # tied embeddings: the LM head adds nothing
    assert (arch.layers, arch.hidden, arch.ffn, arch.kv_heads) == (30, 576, 1536, 3)


def test_builtin_hub_configs_give_the_published_sizes():
    qwen = arch_of("Qwen/Qwen2.5-0.5B-Instruct")
    assert abs(qwen.params("lm") - 494_032_768) / 494e6 < 1e-3  # model card: 0.49B
    sky = arch_of("Skywork/Skywork-Reward-Llama-3.1-8B")
    assert sky.params("lm") == 8_030_261_248  # Llama-3.1-8B
    assert sky.params("rm") == sky.backbone_params + 4096


# ---------------------------------------------------------------------------------------------------------------------
# Estimates never below what a training step really holds (tiny model, in-process, counted tensor by tensor).


def _saved_activation_bytes(model, batch) -> int:
    """Bytes of the tensors autograd keeps for backward (parameters excluded, shared storages counted once)."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in param_ptrs:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=batch, attention_mask=torch.ones_like(batch)).logits
    out.sum().backward()
    return sum(seen.values())


@pytest.mark.parametrize("experts", [0, 2])
def test_estimate_covers_a_real_training_step(experts):
    cfg = tiny_llama(layers=2, hidden=128, ffn=256, vocab=64)
    model = tiny_rm(cfg, experts).train()
    seqs, T = 4, 48
    batch = torch.randint(1, 64, (seqs, T), generator=torch.Generator().manual_seed(0))
    acts = _saved_activation_bytes(model, batch)
    opt = torch.optim.AdamW(model.parameters())
    opt.step()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    grad_bytes = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    opt_bytes = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if v.dim())
    est = train_memory(arch_from_config(cfg, "tiny"), "rm", "fp32", seqs, T, experts=experts, top_k=2 if experts
                       else 0, device="cpu")
    assert est.params == param_bytes
    assert est.grads >= grad_bytes
    assert est.optimizer >= opt_bytes
    assert est.activations >= acts > 0


@pytest.mark.parametrize("experts", [0, 2])
@pytest.mark.parametrize("ckpt", [False, True])
def test_bf16_autocast_estimate_covers_a_real_step_and_is_below_fp32(experts, ckpt):
    """rm.precision bf16 / rm.grad_checkpointing: the estimate still covers what autograd keeps (bf16 weight copies
    included) and is below the fp32 estimate; checkpointing shrinks it further."""
    from umm_ray.train.levers import autocast, enable_grad_checkpointing

    cfg = tiny_llama(layers=2, hidden=128, ffn=256, vocab=64)
    model = tiny_rm(cfg, experts).train()
    if ckpt:
        enable_grad_checkpointing(model)
    seqs, T = 4, 48
    batch = torch.randint(1, 64, (seqs, T), generator=torch.Generator().manual_seed(0))
    with autocast("bf16"):
        acts = _saved_activation_bytes(model, batch)
    arch = arch_from_config(cfg, "tiny")
    kw = {"experts": experts, "top_k": 2 if experts else 0, "device": "cpu"}
    est = train_memory(arch, "rm", "fp32", seqs, T, autocast=True, checkpointing=ckpt, **kw)
    assert est.activations >= acts > 0
    assert est.params == train_memory(arch, "rm", "fp32", seqs, T, **kw).params  # fp32 master weights
    # per token and layer, bf16 activations are below fp32's once the batch outweighs the weight copies
    big = {"seqs": 64, "seq_len": 256}
    assert train_memory(arch, "rm", "fp32", **big, autocast=True, **kw).activations \
        < train_memory(arch, "rm", "fp32", **big, **kw).activations
    assert train_memory(arch, "rm", "fp32", **big, autocast=True, checkpointing=True, **kw).activations \
        < train_memory(arch, "rm", "fp32", **big, autocast=True, **kw).activations


def test_upcycling_fewer_layers_shrinks_the_moe_estimate():
    arch = arch_from_config(tiny_llama(layers=4), "tiny")
    full = train_memory(arch, "rm", "fp32", 8, 64, experts=4, top_k=2)
    one = train_memory(arch, "rm", "fp32", 8, 64, experts=4, top_k=2, moe_layers=1)
    dense = train_memory(arch, "rm", "fp32", 8, 64)
    assert dense.params < one.params < full.params and dense.activations < one.activations < full.activations
    assert arch.params("rm", 4, moe_layers=4) == arch.params("rm", 4)


def test_gradient_checkpointing_and_zero_shrink_the_estimate():
    arch = arch_from_config(tiny_llama(layers=4), "tiny")
    full = train_memory(arch, "rm", "fp32", 8, 64)
    assert train_memory(arch, "rm", "fp32", 8, 64, checkpointing=True).activations < full.activations
    z1 = train_memory(arch, "rm", "bf16", 8, 64, world=8, strategy="deepspeed", zero_stage=1)
    z3 = train_memory(arch, "rm", "bf16", 8, 64, world=8, strategy="deepspeed", zero_stage=3)
    assert z3.params < z1.params and z3.grads < z1.grads and z3.optimizer == z1.optimizer


def test_vllm_kv_cache_from_gpu_memory_utilization():
    arch = arch_of("Qwen/Qwen2.5-0.5B-Instruct")
    roomy = vllm_memory(arch, "bf16", 0.6, device="gpu", device_bytes=24 * GiB, max_model_len=4096)
    assert roomy.ok and roomy.memory.kv_cache == int(0.6 * 24 * GiB) - roomy.memory.params - roomy.memory.activations
    assert roomy.kv_tokens == roomy.memory.kv_cache // (2 * 24 * 2 * 64 * 2)
    starved = vllm_memory(arch, "bf16", 0.05, device="gpu", device_bytes=24 * GiB, max_model_len=32768)
    assert not starved.ok


# ---------------------------------------------------------------------------------------------------------------------
# Clusters and placement.


def test_cluster_yaml_node_types():
    c = read_cluster(ROOT / "cluster.yaml")
    t = {n.name: n for n in c.node_types}
    assert t["head"].head and t["head"].cpus == 0
    assert (t["gpu_1x"].gpus, t["gpu_1x"].accelerator, t["gpu_1x"].ram) == (1, "A10G", 32 * GiB)
    assert (t["gpu_8x"].gpus, t["gpu_8x"].accelerator) == (8, "A100-80G")
    assert c.max_workers == 12


def test_cluster_file_errors_name_the_node_type(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("available_node_types:\n  mystery:\n    resources: {CPU: 8, GPU: 1, memory: 1000000000}\n")
    with pytest.raises(ClusterError, match="mystery.*accelerator_type"):
        read_cluster(bad)
    ok = tmp_path / "ok.yaml"
    ok.write_text("available_node_types:\n  box:\n    resources: {CPU: 8, GPU: 2, memory: 1000000000, "
                  "'accelerator_type:H100': 1}\n    max_workers: 1\n")
    (box,) = read_cluster(ok).node_types
    assert (box.accelerator, box.gpus, box.ram) == ("H100", 2, 10 ** 9)


def _cluster(*types: NodeType, max_workers: int = 10) -> Cluster:
    return Cluster("test", types, max_workers)


def test_place_pack_spread_and_failure():
    big = NodeType("gpu4", 16, 4, 64 * GiB, 24 * GiB, "A10G", max_workers=3)
    b = Bundle("rank", 1, 1, GiB, 10 * GiB)
    packed = place([Group("policy", (b,) * 4, "PACK")], _cluster(big))
    assert packed.ok and list(packed.nodes) == ["gpu4#0"]
    spread = place([Group("members", (b,) * 3, "STRICT_SPREAD")], _cluster(big))
    assert spread.ok and len(spread.nodes) == 3
    soft = place([Group("members", (b,) * 3, "SPREAD")], _cluster(big))  # best effort: no node started to spread
    assert soft.ok and len(soft.nodes) == 1
    huge = place([Group("gold", (Bundle("gold RM actor", 1, 1, GiB, 30 * GiB),), "PACK")], _cluster(big))
    assert not huge.ok and "gold RM actor" in huge.failure and "24.0 GiB" in huge.failure
    full = place([Group("policy", (b,) * 13, "PACK")], _cluster(big))
    assert not full.ok and "max_workers" in full.failure


def test_place_strict_pack_fractional_gpus_and_accelerator_types():
    a10 = NodeType("gpu_1x", 8, 1, 32 * GiB, 24 * GiB, "A10G", max_workers=8)
    a100 = NodeType("gpu_8x", 96, 8, 1024 * GiB, 80 * GiB, "A100-80G", max_workers=2)
    rank = Bundle("rank", 1, 1, GiB, 10 * GiB)
    # PACK spreads a rank group over single-GPU nodes; STRICT_PACK starts the one node that holds all of it
    loose = place([Group("policy", (rank,) * 4, "PACK")], _cluster(a10))
    assert loose.ok and len(loose.nodes) == 4
    strict = place([Group("policy", (rank,) * 4, "STRICT_PACK")], _cluster(a10, a100))
    assert strict.ok and list(strict.nodes) == ["gpu_8x#0"]
    nope = place([Group("policy", (rank,) * 4, "STRICT_PACK")], _cluster(a10))
    assert not nope.ok and "STRICT_PACK needs all 4 bundles on one node" in nope.failure
    # fractional GPUs share a device while shares and memory add up; a whole-GPU bundle takes an untouched one
    half = Bundle("proxy", 1, 0.5, GiB, 10 * GiB)
    shared = place([Group("p", (half,) * 2, "PACK"), Group("g", (Bundle("gold", 1, 1, GiB, 20 * GiB),), "PACK")],
                   _cluster(a10))
    assert shared.ok and shared.nodes == {"gpu_1x#0": ["proxy", "proxy"], "gpu_1x#1": ["gold"]}
    fat = Bundle("proxy", 1, 0.5, GiB, 15 * GiB)  # two halves of 15 GiB do not share a 24 GiB GPU
    assert len(place([Group("p", (fat,) * 2, "PACK")], _cluster(a10)).nodes) == 2
    # an accelerator type pins a bundle to matching nodes (A100 is the family Ray detects on both sizes)
    for acc in ("A100-80G", "A100"):
        pinned = place([Group("g", (Bundle("gold", 1, 1, GiB, 20 * GiB, acc),), "PACK")], _cluster(a10, a100))
        assert pinned.ok and list(pinned.nodes) == ["gpu_8x#0"]
    missing = place([Group("g", (Bundle("gold", 1, 1, GiB, 20 * GiB, "H100"),), "PACK")], _cluster(a10, a100))
    assert not missing.ok and "no node type has accelerator type H100" in missing.failure


# ---------------------------------------------------------------------------------------------------------------------
# jobs.plan for every preset, and check_fits.


def _run_plan(*args: str) -> tuple[int, str]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = plan_job.main(list(args))
    return rc, buf.getvalue()


# SmolLM2-135M-Instruct's config.json (what `jobs.fetch_model smollm2-135m` writes): the plan reads only this, so the
# smol preset is planned here without fetching the model.
SMOLLM2_CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576, "head_dim": 64,
                  "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                  "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192,
                  "tie_word_embeddings": True, "hidden_act": "silu", "rms_norm_eps": 1e-5, "bos_token_id": 1,
                  "eos_token_id": 2, "pad_token_id": 2}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_jobs_plan_every_preset(preset, tmp_path):
    args = ["--preset", preset, "--json"] + (["--cluster", str(ROOT / "cluster.yaml")] if preset == "gpu" else [])
    if preset == "smol":  # the smol preset's SmolLM2 base: the same config, without the 538 MB of weights
        (tmp_path / "smollm2").mkdir()
        (tmp_path / "smollm2" / "config.json").write_text(json.dumps(SMOLLM2_CONFIG))
        args += ["--sft.base_path", str(tmp_path / "smollm2")]
    rc, out = _run_plan(*args)
    plan = json.loads(out)
    stages = {s["stage"]: {r["role"] for r in s["roles"]} for s in plan["stages"]}
    assert {"sft", "rm_dense", "rm_ensemble", "ppo"} <= set(stages)
    assert any(s.startswith("rm_moe[") for s in stages) and any(s.startswith("rm_merge[") for s in stages)
    assert {"policy+critic rank", "reference", "proxy RM actor"} <= stages["ppo"]
    if preset == "gpu":  # GPU roles use GPU memory; the verdict and exit code agree
        assert rc == (0 if plan["fits"] else 3) and (plan["fits"] or plan["problems"])
        assert "gold RM actor" in stages["ppo"]
        assert all(r["device"] == "gpu" for s in plan["stages"] for r in s["roles"] if r["gpus"])
    else:  # the CPU presets are the ones this machine runs end to end
        assert rc == 0 and plan["fits"], plan["problems"]


def test_gpu_preset_fits_one_gpu_8x_node():
    """Every stage of the gpu preset lands on one gpu_8x node (8 x A100-80G) with at most its 8 GPUs: rank groups
    STRICT_PACK, PPO's reference and engines in the policy ranks' bundles, the 8B gold on a large-memory GPU."""
    rc, out = _run_plan("--preset", "gpu", "--json", "--cluster", str(ROOT / "cluster.yaml"))
    plan = json.loads(out)
    assert rc == 0 and plan["fits"], plan["problems"]
    for s in plan["stages"]:
        assert list(s["placement"]) == ["gpu_8x#0"], (s["stage"], s["placement"])
        gpus = sum(r["gpus"] * r["count"] for r in s["roles"] if not r["colocated"])
        policy = [r for r in s["roles"] if r["group"] == "policy" and not r["colocated"]]
        gpus += sum((1 - r["gpus"]) * r["count"] for r in policy if any(x["colocated"] for x in s["roles"]))
        assert gpus <= 8, (s["stage"], gpus)  # colocated bundles hold whole GPUs
        for r in s["roles"]:
            if r["gpus"] and r["count"] > 1 and r["group"] in ("policy", s["stage"]):
                assert r["strategy"] == "STRICT_PACK", r
    ppo = {r["role"]: r for s in plan["stages"] if s["stage"] == "ppo" for r in s["roles"]}
    assert ppo["gold RM actor"]["accelerator"] == "A100-80G" and ppo["reference"]["colocated"]
    assert ppo["rollout engine (vLLM)"]["placement"] == "in policy bundles 0..1"
    assert ppo["policy+critic rank"]["dtype"] == "bf16"


def test_jobs_plan_table_and_bad_cluster(tmp_path):
    rc, out = _run_plan("--preset", "test")
    assert rc == 0 and "== stage ppo ==" in out and "verdict: fits" in out
    rc, _ = _run_plan("--preset", "test", "--cluster", str(tmp_path / "missing.yaml"))
    assert rc == 2


def test_check_fits_stops_a_stage_that_cannot_fit(tmp_path):
    from umm_ray.records import PreferencePair

    src = save_tiny_rm_dir(tmp_path / "rm")
    cfg = load_config(None, ["--run.output_dir", str(tmp_path / "run"), "--rm.batch_size", "4096",
                             "--moe.num_experts", "2"], base=PRESETS["test"])
    small = _cluster(NodeType("box", 8, 0, 4 * GiB, max_workers=1, min_workers=1))
    pairs = [PreferencePair("the cat sat on", "the mat", "a dog")] * 3
    assert longest_row(src, pairs, cfg.rm.max_len) == 4 + 2 + 1
    with pytest.raises(DoesNotFit, match=r"rm_moe\[2\].*RM worker.*GiB") as e:
        check_fits(cfg, "rm_umm", source=src, cluster=small)  # no pairs: full rm.max_len rows
    assert "activations" in str(e.value) and "box" in str(e.value) and "--rm.batch_size" in str(e.value)
    ok = check_fits(load_config(None, [], base=PRESETS["test"]), "rm_dense", source=src, pairs=pairs, cluster=small)
    assert ok.ok and ok.stages[0].roles[0].detail.endswith("x 7")


def _big_node_worker(src: str, stage: str, args: list[str]):
    """The first role of `stage` (its training worker) planned on one roomy node, test preset + `args`."""
    cfg = load_config(None, args, base=PRESETS["test"])
    big = _cluster(NodeType("box", 8, 0, 64 * GiB, max_workers=1, min_workers=1))
    return make_plan(cfg, big, (stage,), src).stages[0].roles[0]


def test_rm_levers_reach_the_plan_and_the_hint(tmp_path):
    """rm.precision / rm.grad_checkpointing / moe.upcycle_layers change the RM roles' memory and say so; a stage that
    fits only with checkpointing is told so."""
    src = save_tiny_rm_dir(tmp_path / "rm")
    base = ["--run.output_dir", str(tmp_path / "run"), "--moe.num_experts", "2", "--rm.batch_size", "512"]
    plain = _big_node_worker(src, "rm_moe", base)
    levers = _big_node_worker(src, "rm_moe", base + ["--rm.precision", "bf16", "--rm.grad_checkpointing", "true",
                                                     "--moe.upcycle_layers", "0"])
    assert "bf16 autocast" in levers.detail and "grad ckpt" in levers.detail and "in 1 of 2 layers" in levers.detail
    assert levers.params < plain.params and levers.memory.activations < plain.memory.activations
    # the worker needs ~10.5 GiB without checkpointing, ~4.2 GiB with it (+ the 0.9 GiB eval task): a 7 GiB node
    tight = _cluster(NodeType("box", 8, 0, 7 * GiB, max_workers=1, min_workers=1))
    cfg = load_config(None, base, base=PRESETS["test"])
    ck = load_config(None, base + ["--rm.grad_checkpointing", "true"], base=PRESETS["test"])
    assert make_plan(ck, tight, ("rm_moe",), src).ok and not make_plan(cfg, tight, ("rm_moe",), src).ok
    with pytest.raises(DoesNotFit, match="--rm.grad_checkpointing true would fit") as e:
        check_fits(cfg, "rm_moe", source=src, cluster=tight)
    budget = int(re.search(r"--rm.micro_batch_tokens (\d+) would fit", str(e.value)).group(1))  # the other lever
    fits = load_config(None, base + ["--rm.micro_batch_tokens", str(budget)], base=PRESETS["test"])
    assert make_plan(fits, tight, ("rm_moe",), src).ok


def test_shared_prompt_rows_are_planned_at_their_worst_case_length(tmp_path):
    """rm.share_prompt: one row per pair, planned 2 x max_len long (nothing shared), never below the two-row plan
    (CPU attention's scores grow with the square of the row)."""
    src = save_tiny_rm_dir(tmp_path / "rm")
    base = ["--run.output_dir", str(tmp_path / "run"), "--rm.batch_size", "16", "--rm.max_len", "128"]
    two_rows = _big_node_worker(src, "rm_dense", base)
    shared = _big_node_worker(src, "rm_dense", base + ["--rm.share_prompt", "true"])
    assert "32 seqs x 128" in two_rows.detail and "16 seqs x 256" in shared.detail
    assert shared.memory.activations >= two_rows.memory.activations


def test_plan_stage_sum_counts_every_actor_on_a_node():
    cfg = load_config(None, [], base=PRESETS["tiny"])
    node = NodeType("box", 64, 0, 6 * GiB, max_workers=1, min_workers=1)
    plan = make_plan(cfg, _cluster(node), ("rm_ensemble",))
    worker = plan.stages[0].roles[0].memory.total
    # 8 workers of ~1.3 GiB do not share 6 GiB (minus Ray's own) although each alone fits
    assert worker < node.usable_ram and not plan.ok and "member" in plan.problems[0]


@pytest.mark.parametrize("kind", ["dense", "umm", "ensemble"])
def test_reward_training_entry_points_check_before_starting(tmp_path, kind):
    """The RM trainers call check_fits before any worker starts: an impossible batch stops with the numbers, and the
    trainer started nothing (Ray's state is as before: off when the test runs alone, the suite's cluster otherwise)."""
    import ray

    from umm_ray.records import PreferencePair
    from umm_ray.train import reward

    ray_before = ray.is_initialized()
    src = save_tiny_rm_dir(tmp_path / "rm")
    pairs = [PreferencePair("the cat sat on", "the mat", "a dog")] * 4
    cfg = load_config(None, ["--run.output_dir", str(tmp_path / "run"), "--rm.batch_size", "10000000"],
                      base=PRESETS["test"])
    with pytest.raises(DoesNotFit, match="RM worker|member 0 worker"):
        reward.TRAINERS[kind](cfg, None, data=reward.RMData(pairs, pairs, pairs, source="test"), source=src)
    assert ray.is_initialized() == ray_before


def test_sft_ppo_levers_and_token_budgets_reach_the_plan(tmp_path):
    """sft/ppo.precision, sft/ppo.grad_checkpointing and sft/rm/ppo.micro_batch_tokens lower the training roles'
    activation memory and say so; at their defaults the plan is the one from before the keys."""
    big = _cluster(NodeType("box", 8, 0, 64 * GiB, max_workers=1, min_workers=1))
    base = ["--run.output_dir", str(tmp_path / "run"), "--sft.batch_size", "64", "--ppo.micro_batch_size", "32",
            "--rm.batch_size", "64"]

    def role(stage, *extra):
        cfg = load_config(None, base + list(extra), base=PRESETS["test"])
        return make_plan(cfg, big, (stage,)).stages[0].roles[0]

    for stage, sec in (("sft", "sft"), ("ppo", "ppo")):
        plain = role(stage)
        levers = role(stage, f"--{sec}.precision", "bf16", f"--{sec}.grad_checkpointing", "true")
        assert "bf16 autocast" in levers.detail and "grad ckpt" in levers.detail, levers.detail
        assert levers.memory.activations < plain.memory.activations, stage
        T = load_config(None, base, base=PRESETS["test"]).model.max_seq_len
        budget = role(stage, f"--{sec}.micro_batch_tokens", str(4 * T))
        assert "4 of" in budget.detail and "token-budget micro-batch" in budget.detail, budget.detail
        assert budget.memory.activations < plain.memory.activations / 4, stage
    rm_plain = role("rm_dense")
    rm_budget = role("rm_dense", "--rm.micro_batch_tokens", str(8 * load_config(None, base, base=PRESETS["test"])
                                                                     .rm.max_len))
    assert "8 of 128 seqs" in rm_budget.detail  # 4 pairs, both rows of each
    assert rm_budget.memory.activations < rm_plain.memory.activations / 8


def test_budget_rows_worst_case():
    from umm_ray.plan_memory import budget_rows

    assert budget_rows(64, 100, 0) == 64  # off
    assert budget_rows(64, 100, 1000) == 10
    assert budget_rows(64, 100, 50) == 1  # a row longer than the budget runs alone
    assert budget_rows(64, 100, 10 ** 9) == 64
    assert budget_rows(64, 100, 1000, rows_per_item=2) == 10  # 5 pairs
    assert budget_rows(64, 100, 150, rows_per_item=2) == 2  # one pair, over the budget


def test_auto_ensemble_on_one_cpu_node_is_planned_as_the_shared_group_it_runs_as():
    """ensemble.worker_group 'auto' trains the members one after another on a single CPU-only node
    (train.ensemble.worker_group_mode): the plan counts one member's workers there, all members' on a cluster."""
    node = NodeType("local", 8, 0, 6 * GiB, max_workers=1, min_workers=1, head=True)
    one_node = Cluster("this machine", (node,), 0)
    auto = load_config(None, [], base=PRESETS["tiny"])
    per_member = load_config(None, ["--ensemble.worker_group", "per_member"], base=PRESETS["tiny"])
    shared = make_plan(auto, one_node, ("rm_ensemble",))
    assert shared.ok and {r.group for r in shared.stages[0].roles} == {"member0"}
    assert not make_plan(per_member, one_node, ("rm_ensemble",)).ok  # 4 members x 2 workers at once: no room
    scaling = make_plan(auto, _cluster(NodeType("w", 8, 0, 6 * GiB, max_workers=4)), ("rm_ensemble",))  # per member
    assert {r.group for r in scaling.stages[0].roles} == {f"member{i}" for i in range(4)}


def test_worker_group_rule_is_the_same_for_the_plan_and_the_run():
    """resolve_worker_group is the one rule: the plan (a cluster YAML) and the trainer (alive nodes) only feed it."""
    assert resolve_worker_group("auto", True) == "shared"
    assert resolve_worker_group("auto", False) == "per_member"
    assert resolve_worker_group("auto", None) == "per_member"  # nothing known about the cluster
    assert resolve_worker_group("per_member", True) == "per_member"  # an explicit choice is kept
    assert members_at_once("auto", 4, None) == 4
    gpu_node = NodeType("g", 8, 1, 6 * GiB, max_workers=1, min_workers=1, head=True)
    assert members_at_once("auto", 4, Cluster("gpu box", (gpu_node,), 0)) == 4
