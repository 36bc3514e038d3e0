"""The vLLM worker extension: its log filter drops only the per-step rotary-cache reload warning, and its exact
rewind of CPU generators lets seeded sampling survive chunked prefill with the same tokens as without it."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys

from tests.fixtures import ROOT, job_env

from umm_ray.actors.vllm_ext import QuietReloadNoise


def test_filter_drops_only_the_rotary_reload_warning():
    f = QuietReloadNoise()

    def record(layer: str) -> logging.LogRecord:
        return logging.LogRecord("x", logging.WARNING, __file__, 1, "%s: Failed to load weights", (layer,), None)

    assert not f.filter(record("RotaryEmbedding"))
    assert f.filter(record("QKVParallelLinear"))  # a real layer that failed to load still warns


def test_the_filtered_loggers_are_the_ones_vllm_logs_reloads_through():
    """Guards against vLLM moving the modules: the filter would then silently stop applying."""
    import umm_ray.actors.vllm_ext  # noqa: F401  (installs the filter)

    layerwise = importlib.import_module("vllm.model_executor.model_loader.reload.layerwise")
    inplace = importlib.import_module("vllm.model_executor.model_loader.reload.inplace")
    assert any(isinstance(f, QuietReloadNoise) for f in logging.getLogger(layerwise.logger.name).filters)
    assert logging.getLogger(inplace.logger.name).level == logging.WARNING


CHUNKED = """
import gc, json, os, sys
os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
from pathlib import Path
from tests.fixtures import save_tiny_lm, tiny_tokenizer
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

texts = ["sort the list 3 1 2 answer 1 2 3", "add 4 and 5 answer 9", "the quick brown fox jumps over it"] * 20
path = save_tiny_lm(Path(sys.argv[1]), tiny_tokenizer(texts, vocab_size=300), "llama", seed=0, max_seq_len=128)
prompts = [TokensPrompt(prompt_token_ids=[5 + (i * 7 + j) % 250 for j in range(40 + i)]) for i in range(6)]
params = [SamplingParams(n=2, max_tokens=8, temperature=1.0, seed=1000 + 17 * i, detokenize=False) for i in range(6)]
out = {}
for budget in (64, 1024):  # 6 prompts of 40-45 tokens: 64 tokens a step splits them, 1024 does not
    llm = LLM(model=path, dtype="float32", seed=0, max_model_len=128, enforce_eager=True, enable_prefix_caching=False,
              max_num_batched_tokens=budget, max_num_seqs=8, kv_cache_memory_bytes=64 << 20,
              worker_extension_cls="umm_ray.actors.vllm_ext.WeightSyncExtension")
    res = llm.generate(prompts, params, use_tqdm=False)
    out[budget] = [[list(c.token_ids) for c in sorted(o.outputs, key=lambda c: c.index)] for o in res]
    del llm
    gc.collect()
print("TOKENS", json.dumps(out))
"""


def test_seeded_sampling_with_chunked_prefill_on_cpu(tmp_path):
    """vLLM rewinds a seeded request's generator after discarding the token sampled on a partial prefill; on CPU that
    raised "CPU Generator does not use offset" and killed the engine (SmolLM2's chat prompts hit it in the pairs
    stage). With the extension's exact rewind, prompts split over several steps by a 64-token budget sample exactly
    the tokens they sample in one step."""
    proc = subprocess.run([sys.executable, "-c", CHUNKED, str(tmp_path / "llama")], cwd=ROOT, env=job_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("TOKENS "))
    out = json.loads(line.removeprefix("TOKENS "))
    assert len(out["64"]) == 6 and all(len(o) == 2 and all(len(t) == 8 for t in o) for o in out["64"])
    assert out["64"] == out["1024"]
