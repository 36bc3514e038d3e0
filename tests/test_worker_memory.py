"""benchmarks.worker_memory on a tiny chat-shaped model: each malloc case runs in its own process with its setting,
and every step's resident memory is recorded (no Ray)."""

import json

import pytest

from benchmarks.worker_memory import main
from tests.fixtures import chat_world


def _pairs_file(path, world, n: int) -> str:
    rows = [{"prompt": p, "chosen": " a good answer " * (1 + i % 3), "rejected": " no"}
            for i, p in enumerate((world["prompts"] * n)[:n])]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_each_case_runs_in_its_own_process_with_its_malloc_setting(tmp_path):
    world = chat_world(tmp_path)
    data, out = _pairs_file(tmp_path / "pairs.jsonl", world, 8), tmp_path / "wm.json"
    main(["--model", world["lm"], "--data", data, "--pairs", "2", "--max-len", "128", "--steps", "3", "--threads", "1",
          "--cases", "default,mmap64k", "--out", str(out)])
    cases = json.loads(out.read_text())["cases"]
    assert cases["default"]["malloc_env"] == {"MALLOC_ARENA_MAX": None, "MALLOC_MMAP_THRESHOLD_": None}
    assert cases["mmap64k"]["malloc_env"]["MALLOC_MMAP_THRESHOLD_"] == "65536"
    for r in cases.values():
        assert len(r["rss_gb"]) == 3 and all(x > 0 for x in r["rss_gb"])
        assert r["tensor_gb"] > 0 and r["params"] > 0
        assert len(set(r["lengths"])) > 1  # the pairs' lengths differ, so the batches' shapes do


def test_too_few_pairs_is_named(tmp_path):
    world = chat_world(tmp_path)
    data = _pairs_file(tmp_path / "pairs.jsonl", world, 3)
    with pytest.raises(SystemExit, match=r"3 usable pairs, fewer than --steps x --pairs = 4"):
        main(["--model", world["lm"], "--data", data, "--pairs", "2", "--steps", "2", "--one"])
