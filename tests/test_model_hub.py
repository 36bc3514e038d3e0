"""Hub model ids for reward models, on a real HF cache laid out on disk (no hub access here): the snapshot is found
offline, a pickle-only repo is refused naming the id and why, the per-node lock serialises concurrent resolvers, and
RewardSource / proxy_source / the jobs' input check take the id."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.fixtures import ROOT, SMALL, hub_cache_model, save_tiny_lm, save_tiny_rm, tiny_tokenizer, use_hf_cache
from umm_ray.model_hub import HubModelError, check_hub_model, hub_snapshot, is_hub_id, local_model
from umm_ray.reward_source import RewardSource, proxy_source

TEXTS = ["sort the list 3 1 2 answer 1 2 3", "add 4 and 5 answer 9", "name a colour answer red"] * 20


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_rm")
    return save_tiny_rm(root / "rm", tiny_tokenizer(TEXTS, vocab_size=300), seed=0, **SMALL)


@pytest.fixture
def hf_home(tmp_path, monkeypatch, tiny_rm):
    """HF_HOME in tmp_path, offline, holding org/tiny-rm (safetensors) and org/pickled-rm (pytorch_model.bin only)."""
    home = tmp_path / "hf"
    hub_cache_model(home, "org/tiny-rm", tiny_rm)
    hub_cache_model(home, "org/pickled-rm", tiny_rm, pickle_only=True)
    use_hf_cache(monkeypatch, home)
    return home


def test_is_hub_id_tells_ids_from_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("Skywork/Skywork-Reward-Llama-3.1-8B") and is_hub_id("org/tiny-rm")
    for text in ("runs/x/rm_dense/model", "/abs/path", "./org/name", "org/ens.json", "testbed", "org/"):
        assert not is_hub_id(text), text
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not is_hub_id("org/local")  # an existing local directory wins, as in from_pretrained


def test_snapshot_is_found_offline_in_the_hf_cache(hf_home, tiny_rm):
    path = hub_snapshot("org/tiny-rm")
    assert path == hf_home / "hub" / "models--org--tiny-rm" / "snapshots" / ("a" * 40)
    assert (path / "model.safetensors").read_bytes() == (__import__("pathlib").Path(tiny_rm) /
                                                         "model.safetensors").read_bytes()


def test_pickle_only_repo_is_refused_naming_the_id_and_why(hf_home):
    with pytest.raises(HubModelError, match=r"reward.gold: hub model 'org/pickled-rm' has no safetensors weights "
                                            r"\(only pickle weights \['pytorch_model.bin'\]\).*arbitrary code"):
        hub_snapshot("org/pickled-rm", what="reward.gold")


def test_check_hub_model_lists_files_without_downloading(hf_home):
    """The job-start check: file names from the cache (offline here), safetensors required, nothing loaded."""
    assert "model.safetensors" in check_hub_model("org/tiny-rm", what="reward.gold")
    with pytest.raises(HubModelError, match=r"reward.gold: hub model 'org/pickled-rm' has no safetensors weights"):
        check_hub_model("org/pickled-rm", what="reward.gold")
    with pytest.raises(HubModelError, match=r"reward.gold: 'org/absent' is neither a local directory nor a model "
                                            r"the hub or the HF cache"):
        check_hub_model("org/absent", what="reward.gold")
    with pytest.raises(HubModelError, match="'org/pickled-rm' has no safetensors"):
        RewardSource.parse("org/pickled-rm").check_exists("reward.gold")


def test_missing_model_offline_names_the_id(hf_home):
    with pytest.raises(HubModelError, match="reward.gold: 'org/absent' is neither a local directory nor downloadable"):
        hub_snapshot("org/absent", what="reward.gold")
    with pytest.raises(HubModelError, match="not a hub model id"):
        hub_snapshot("a/b/c")


def test_resolvers_on_one_node_wait_for_the_lock(hf_home):
    """The node's lock file is held while a download runs: a second resolver waits for it, then reads the cache."""
    from filelock import FileLock

    from umm_ray.model_hub import _lock_path

    got = []
    lock = FileLock(str(_lock_path("org/tiny-rm")))
    with lock:
        t = threading.Thread(target=lambda: got.append(hub_snapshot("org/tiny-rm")))
        t.start()
        t.join(timeout=2.0)
        assert t.is_alive() and not got  # blocked on the lock another resolver holds
    t.join(timeout=60)
    assert got and (got[0] / "config.json").is_file()


def test_reward_source_and_proxy_source_take_hub_ids(hf_home, tmp_path):
    from umm_ray.config import load_config

    src = RewardSource.parse("org/tiny-rm", "reward.gold")
    assert src.kind == "hub" and str(src) == "org/tiny-rm" and src.absolute() == src
    assert src.check_exists("reward.gold") is src  # nothing on disk to check: resolved in the actor
    with pytest.raises(ValueError, match="aggregate applies to ensemble manifests only"):
        RewardSource.parse("org/tiny-rm#wco")
    base = ["--run.output_dir", str(tmp_path), "--reward.proxy_path", "org/tiny-rm"]
    assert proxy_source(load_config(None, base)) == (src, "dense")
    assert proxy_source(load_config(None, base + ["--reward.proxy", "dense"]))[1] == "dense"
    with pytest.raises(ValueError, match="reward.proxy is 'umm' but reward.proxy_path 'org/tiny-rm' is a hub model"):
        proxy_source(load_config(None, base + ["--reward.proxy", "umm"]))


def test_gpu_preset_gold_hub_id_passes_the_input_check(hf_home, tiny_rm, tmp_path):
    """The gpu preset's hub gold is accepted by config validation, the dry-run input check (here from a cache that
    holds a stand-in under its id; absent, the check stops naming it) and the plan."""
    from jobs.common import PRESETS
    from jobs.inputs import InputError, check_inputs
    from umm_ray.config import load_config
    from umm_ray.plan import ppo_stage
    from umm_ray.plan_cluster import read_cluster

    cfg = load_config(None, ["--run.output_dir", str(tmp_path)], base=PRESETS["gpu"])
    with pytest.raises(InputError, match="ppo.policy_path: 'Qwen/Qwen2.5-0.5B-Instruct' is neither"):
        check_inputs(cfg)
    hub_cache_model(hf_home, cfg.ppo.policy_path, tiny_rm)  # a stand-in: the check lists files only
    with pytest.raises(InputError, match="reward.gold: 'Skywork/Skywork-Reward-Llama-3.1-8B' is neither"):
        check_inputs(cfg)
    hub_cache_model(hf_home, "Skywork/Skywork-Reward-Llama-3.1-8B", tiny_rm)
    assert cfg.reward.gold == "Skywork/Skywork-Reward-Llama-3.1-8B"
    notes = [n for n in check_inputs(cfg) if n.startswith("reward.gold")]
    assert notes and "loaded as a hub model id" in notes[0]
    roles = {r.name: r for r in ppo_stage(cfg, read_cluster(ROOT / "cluster.yaml")).roles}
    gold = roles["gold RM actor"]
    assert gold.dtype == "bf16" and roles["rollout engine (vLLM)"].dtype == "bf16"  # 'auto' on GPU
    assert roles["reference"].dtype == "bf16" and roles["proxy RM actor"].dtype == "bf16"
    kv = roles["rollout engine (vLLM)"].kv  # sized for model.max_seq_len (1024), not Qwen's 32768 positions
    assert kv.max_model_len == cfg.model.max_seq_len == 1024 and kv.kv_tokens > 0 and kv.ok


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub_lm")
    return save_tiny_lm(root / "lm", tiny_tokenizer(TEXTS, vocab_size=300), seed=0, **SMALL)


def test_hub_policy_passes_the_input_checks_and_loads_from_the_snapshot(hf_home, tiny_lm, tmp_path, capsys):
    """A policy given as a hub id: jobs.ppo / jobs.bon and their dry runs accept it from the HF cache (no download),
    a pickle-only repo is refused naming the id, and `local_model` (what each actor calls) gives the snapshot."""
    from jobs.bon import main as bon_main
    from jobs.bon import resolve_inputs as bon_inputs
    from jobs.ppo import resolve_inputs as ppo_inputs
    from umm_ray.config import load_config

    hub_cache_model(hf_home, "org/tiny-policy", tiny_lm)
    hub_cache_model(hf_home, "org/pickled-policy", tiny_lm, pickle_only=True)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "add 4 and 5"}\n')
    ppo = ["--run.output_dir", str(tmp_path), "--ppo.prompts", str(prompts), "--reward.proxy_path", "org/tiny-rm"]
    assert ppo_inputs(load_config(None, ppo + ["--ppo.policy_path", "org/tiny-policy"]))[0] == "org/tiny-policy"
    with pytest.raises(HubModelError, match="policy: hub model 'org/pickled-policy' has no safetensors"):
        ppo_inputs(load_config(None, ppo + ["--ppo.policy_path", "org/pickled-policy"]))
    bon = ["--run.output_dir", str(tmp_path), "--bon.rms", "d=org/tiny-rm"]
    assert bon_inputs(load_config(None, bon + ["--bon.policy_path", "org/tiny-policy"]))[0] == "org/tiny-policy"
    with pytest.raises(SystemExit) as e:
        bon_main(bon + ["--bon.policy_path", "org/tiny-policy", "--dry-run"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "bon.policy_path: 'org/tiny-policy' is not a local path; loaded as a hub" in out
    with pytest.raises(SystemExit) as e:
        bon_main(bon + ["--bon.policy_path", "org/pickled-policy", "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "bon.policy_path: hub model 'org/pickled-policy' has no safetensors" in err
    with pytest.raises(FileNotFoundError, match="no policy .*neither a local directory nor a hub model id"):
        ppo_inputs(load_config(None, ppo + ["--ppo.policy_path", str(tmp_path / "nope")]))
    snap = local_model("org/tiny-policy", "ppo.policy_path")
    assert snap == str(hub_snapshot("org/tiny-policy")) and (Path(snap) / "model.safetensors").is_file()
    assert local_model(tiny_lm) == tiny_lm  # a local directory is used as it is
