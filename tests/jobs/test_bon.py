"""`python -m jobs.bon` end to end at tiny size: a tiny policy sampled through a real RolloutActor on a local Ray
cluster, two proxy RMs (one an ensemble aggregate) and the testbed gold; bon.json has a curve per RM."""

import json

import pytest

from tests.fixtures import (SMALL, finish_job, hub_cache_model, job_env, save_tiny_lm, save_tiny_rm, start_job,
                            tiny_corpus, tiny_tokenizer, write_manifest, write_prompts)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bon_job")
    records, texts = tiny_corpus(8, seed=1, responses_per_prompt=3)
    tok = tiny_tokenizer(texts, 300)
    policy = save_tiny_lm(root / "policy", tok, seed=0, **SMALL)
    rm0 = save_tiny_rm(root / "rm0", tok, seed=0, **SMALL)
    save_tiny_rm(root / "rm1", tok, seed=1, **SMALL)
    write_manifest(root / "ens.json", ["rm0", "rm1"], aggregate="mean")
    write_prompts(root / "prompts.jsonl", records)
    return {"root": root, "policy": policy, "rm0": rm0}


def _argv(w, backend: str) -> list[str]:
    root = w["root"]
    return ["--preset", "test", "--run.output_dir", str(root / f"run_{backend}"), "--run.seed", "3",
            "--bon.policy_path", str(w["policy"]), "--bon.prompts", str(root / "prompts.jsonl"),
            "--bon.rms", f"dense={w['rm0']},ens-wco={root / 'ens.json'}#wco",
            "--bon.n_prompts", "4", "--bon.n_samples", "4", "--rollout.max_new_tokens", "8",
            "--rollout.backend", backend]


def _check_outputs(out_dir):
    data = json.loads((out_dir / "bon.json").read_text())
    assert set(data["curves"]) == {"dense", "ens-wco"}
    for c in data["curves"].values():
        assert c["ns"] == [1, 2, 4] and c["n_prompts"] == 4 and c["n_samples"] == 4
        assert all(b >= a - 1e-9 for a, b in zip(c["proxy"], c["proxy"][1:]))
    rows = [json.loads(x) for x in (out_dir / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(len(r["responses"]) == 4 for r in rows)
    assert (out_dir / "config.yaml").is_file()


def test_bon_job_hf_backend(ray_local, tiny_world):
    from jobs.bon import main

    curves = main(_argv(tiny_world, "hf"))
    assert set(curves) == {"dense", "ens-wco"}
    _check_outputs(tiny_world["root"] / "run_hf" / "bon")


@pytest.mark.slow
def test_bon_job_vllm_backend(ray_local, tiny_world):
    from jobs.bon import main

    main(_argv(tiny_world, "vllm"))
    _check_outputs(tiny_world["root"] / "run_vllm" / "bon")


def test_bon_job_samples_a_hub_id_policy_from_the_node_cache(tiny_world, tmp_path):
    """bon.policy_path a hub id (no local path): the job starts from it, and its rollout actor loads the snapshot
    in its node's offline HF cache (HF_HOME of the fresh local cluster) through the per-node lock."""
    home = tmp_path / "hf"
    hub_cache_model(home, "org/tiny-policy", tiny_world["policy"])
    argv = _argv(tiny_world, "hf")
    argv[argv.index("--bon.policy_path") + 1] = "org/tiny-policy"
    argv[argv.index("--run.output_dir") + 1] = str(tmp_path / "run")
    log = tmp_path / "bon.log"
    finish_job(start_job("jobs.bon", argv + ["--run.ray_address", "local"], log,
                         env=job_env(HF_HOME=str(home), HF_HUB_OFFLINE="1")), log)
    _check_outputs(tmp_path / "run" / "bon")
    assert json.loads((tmp_path / "run" / "bon" / "bon.json").read_text())["policy"] == "org/tiny-policy"
    assert (home / "hub" / ".locks" / "umm_ray" / "org--tiny-policy.lock").exists()  # resolved by `local_model`


def test_bon_job_fails_early_on_missing_inputs(tiny_world, capsys):
    from jobs.bon import main

    with pytest.raises(SystemExit) as e:
        main(["--run.output_dir", str(tiny_world["root"] / "nothing")])
    assert e.value.code == 2 and "no SFT policy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--bon.policy_path", str(tiny_world["policy"]), "--bon.rms", "d=/no/such/rm"])
    assert "RM 'd': /no/such/rm does not exist" in capsys.readouterr().err


def test_without_bon_rms_the_reward_proxy_keys_choose_the_rm(tiny_world):
    """No --bon.rms: reward.proxy (auto: whatever reward.proxy_path holds) picks the proxy, named by its kind; an
    explicit kind that the checkpoint does not have stops before any compute."""
    from jobs.bon import resolve_inputs
    from umm_ray.config import load_config

    root = tiny_world["root"]
    base = ["--bon.policy_path", str(tiny_world["policy"]), "--run.output_dir", str(root / "run_keys")]
    _, specs, _ = resolve_inputs(load_config(None, base + ["--reward.proxy_path", f"{root / 'ens.json'}#wco"]))
    assert list(specs) == ["ensemble"] and specs["ensemble"].aggregate == "wco"
    _, specs, _ = resolve_inputs(load_config(None, base + ["--reward.proxy", "dense", "--reward.proxy_path",
                                                           str(tiny_world["rm0"])]))
    assert list(specs) == ["dense"]
    with pytest.raises(ValueError, match="reward.proxy is 'ensemble' but .* of kind 'dense'"):
        resolve_inputs(load_config(None, base + ["--reward.proxy", "ensemble", "--reward.proxy_path",
                                                 str(tiny_world["rm0"])]))
    with pytest.raises(ValueError, match="no proxy reward"):
        resolve_inputs(load_config(None, base))
