"""Every `python -m jobs.X ...` command in README.md and docs/ runs: each is executed with `--dry-run` against a tiny
run directory laid out as the jobs write it, so a command whose flags, paths or inputs would stop the real job (exit
2) fails here. `jobs.plan` is a dry run by nature and runs as written (exit 3 is its 'does not fit' answer)."""

import importlib
import json
import os
import re
import shlex
from pathlib import Path

import pytest

from jobs.common import parse_job_args
from tests.fixtures import (ROOT, hub_cache_model, save_tiny_lm, save_tiny_rm, tiny_corpus, tiny_tokenizer,
                            use_hf_cache, write_manifest, write_prompts)
from umm_ray.layout import RunLayout
from umm_ray.models.families import MERGE_META, MOE_CONFIG_NAME

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def documented_commands() -> list[tuple[str, str]]:
    """(document, command after `python -m`) for every job command in the project's documents."""
    found = []
    for doc in DOCS:
        text = re.sub(r"\\\n\s*", " ", doc.read_text())  # join shell line continuations
        for cmd in re.findall(r"python -m (jobs\.\w+[^\n#`]*)", text):
            found.append((doc.name, cmd.strip()))
    return found


COMMANDS = documented_commands()


def test_the_documents_have_commands():
    assert len(COMMANDS) >= 12
    assert {"jobs.prepare", "jobs.sft", "jobs.train_rm", "jobs.bon", "jobs.ppo", "jobs.compare", "jobs.serve_rm",
            "jobs.fetch_model", "jobs.plan"} <= {c.split()[0] for _, c in COMMANDS}


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    """A working directory whose runs/default holds what the documented commands read: the SFT policy and prompts,
    each RM kind's model, an ensemble manifest; plus the 'own data' example's files (my_prefs.jsonl, ...)."""
    root = tmp_path_factory.mktemp("readme")
    records, texts = tiny_corpus(24)
    tok = tiny_tokenizer(texts)
    layout = RunLayout(root / "runs" / "default")
    save_tiny_lm(layout.sft_model, tok)
    for split in ("ppo", "bon", "sft"):
        write_prompts(layout.prompts(split), records)
    for kind, n in (("dense", None), ("umm", 4), ("moe", 4)):
        save_tiny_rm(layout.rm_model(kind, n), tok, seed=n or 0)
    (layout.rm_model("umm", 4) / MERGE_META).write_text(json.dumps({"alpha": 0.5, "softmax_theta": []}))
    (layout.rm_model("moe", 4) / MOE_CONFIG_NAME).write_text("{}")
    members = [save_tiny_rm(layout.rm("ensemble") / f"member_{i}" / "model", tok, seed=10 + i) for i in range(2)]
    write_manifest(layout.rm_model("ensemble"), members)
    # the own-data example of the README
    save_tiny_lm(root / "my-sft-model", tok)
    save_tiny_rm(root / "my-gold-rm", tok, seed=7)
    write_prompts(root / "my_prompts.jsonl", records)
    with open(root / "my_prefs.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps({"prompt": r.prompt, "chosen": " a fine answer", "rejected": " no"}) + "\n")
    (root / "cluster.yaml").write_text((ROOT / "cluster.yaml").read_text())
    # the gpu preset's hub models, as a cluster node with hub access would find them (stand-ins in an offline cache)
    hub_cache_model(root / "hf", "Qwen/Qwen2.5-0.5B-Instruct", root / "my-sft-model")
    hub_cache_model(root / "hf", "Skywork/Skywork-Reward-Llama-3.1-8B", root / "my-gold-rm")
    return root


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{d}:{c[:60]}" for d, c in COMMANDS])
def test_documented_command_runs(doc, command, run_root, monkeypatch, capsys):
    monkeypatch.chdir(run_root)
    # Variables the documents ask the user to set: a token, the gold RM a GPU cluster keeps on shared storage.
    monkeypatch.setenv("TOKEN", "secret-token")
    monkeypatch.setenv("GOLD_RM", str(run_root / "my-gold-rm"))
    monkeypatch.setenv("HH_HARMLESS", str(run_root / "my_prefs.jsonl"))  # ../shared/data/hh-rlhf/harmless-base/...
    use_hf_cache(monkeypatch, run_root / "hf")  # no hub here: hub ids resolve from the cache laid out above
    module, *args = shlex.split(os.path.expandvars(command))
    main = getattr(importlib.import_module(module), "main", None)
    assert callable(main), f"{doc}: {module} has no main()"
    if "--help" in args:
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 0
        return
    if module == "jobs.plan":
        code = main(args)
        assert code in (0, 3), f"{doc}: `{command}` exited {code}\n{capsys.readouterr().out[-2000:]}"
        return
    if module == "jobs.fetch_model":
        assert main([*args, "--dry-run"]) is not None
        return
    with pytest.raises(SystemExit) as e:
        main([*args, "--dry-run"])
    out = capsys.readouterr()
    assert e.value.code == 0, f"{doc}: `{command}` would stop with:\n{out.err[-2000:]}"
    assert "every input resolved" in out.out


def test_a_command_with_a_missing_input_fails_the_dry_run(run_root, monkeypatch, capsys):
    """The check has teeth: a proxy path that no job wrote stops the dry run with exit 2 naming it."""
    from jobs.bon import main

    monkeypatch.chdir(run_root)
    with pytest.raises(SystemExit) as e:
        main(["--reward.proxy_path", "runs/default/rm_umm6/model", "--dry-run"])
    assert e.value.code == 2 and "rm_umm6/model does not exist" in capsys.readouterr().err


def test_dry_run_shows_cached_and_next_stage(run_root, monkeypatch, capsys):
    from jobs.train_rm import main

    monkeypatch.chdir(run_root)
    with pytest.raises(SystemExit) as e:
        main(["--rm.kind", "dense", "--run.output_dir", str(run_root / "fresh"), "--dry-run"])
    assert e.value.code == 0
    assert "the first to run: prepare (not run before)" in capsys.readouterr().out
    assert not (run_root / "fresh").exists()  # a dry run writes nothing


def test_help_lists_every_key(capsys):
    with pytest.raises(SystemExit) as e:
        parse_job_args(["--help"], "compare")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--ppo.kl_coef" in out and "--moe.num_experts" in out and "--dry-run" in out


def test_bad_flag_exits_2_naming_key(capsys):
    with pytest.raises(SystemExit) as e:
        parse_job_args(["--ppo.kl_cof", "1"], "ppo")
    assert e.value.code == 2
    assert "ppo.kl_cof" in capsys.readouterr().err
