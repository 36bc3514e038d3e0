"""umm_ray/data/prompts.py: AlpacaFarm instruction files, prompt jsonl (testbed round trip), HH prompts, bad rows."""

from __future__ import annotations

import collections
import json
import logging

import pytest

from umm_ray.data import DataError, load_prompts, load_prompts_with_report, write_jsonl
from umm_ray.data.hub import PROMPT_DATASETS, resolve
from umm_ray.records import PromptRecord

ALPACA_EVAL = "alpaca_farm/eval_gpt-3.5-turbo-0301.json"


def test_real_alpaca_eval_prompts(shared_data):
    rows = json.loads((shared_data / ALPACA_EVAL).read_text())
    prompts, rep = load_prompts_with_report(shared_data / ALPACA_EVAL)
    assert (len(prompts), rep.rows, rep.skipped) == (805, 805, {})
    assert collections.Counter(p.family for p in prompts) == {"selfinstruct": 252, "oasst": 188, "koala": 156,
                                                              "helpful_base": 129, "vicuna": 80}
    for row, p in zip(rows, prompts):
        assert p.prompt.startswith("\n\nHuman: " + row["instruction"].strip()) and p.prompt.endswith("\n\nAssistant:")
        assert p.reference == " " + row["output"]
        assert p.meta["generator"] == "gpt-3.5-turbo-0301" and p.meta["input"] == row["input"]
    with_input = [p for p in prompts if p.meta["input"].strip()]
    assert with_input and all(f"\n\n{p.meta['input'].strip()}\n\nAssistant:" in p.prompt for p in with_input)
    assert prompts[0].source == "eval_gpt-3.5-turbo-0301.json:2"
    assert prompts[0].prompt == ("\n\nHuman: What are the names of some famous actors that started their careers on "
                                 "Broadway?\n\nAssistant:")


@pytest.mark.parametrize("name,n", [("outputs_sft.json", 252), ("outputs_rlhf.json", 252),
                                    ("outputs_pairs.json", 6), ("multisamples_sft.json", 8)])
def test_real_alpaca_output_files_as_prompts(shared_data, name, n):
    prompts = load_prompts(shared_data / "alpaca_farm" / name)
    assert len(prompts) == n and all(p.prompt.endswith("\n\nAssistant:") for p in prompts)
    if name == "multisamples_sft.json":
        assert all(len(p.meta["outputs"]) > 1 and p.reference == " " + p.meta["outputs"][0] for p in prompts)
    if name == "outputs_pairs.json":  # no `output` field: no reference
        assert all(p.reference == "" for p in prompts)


def test_real_hh_transcripts_as_prompts(shared_data):
    prompts = load_prompts(shared_data / "hh-rlhf/harmless-base/test.jsonl.gz")
    assert len(prompts) == 2312  # an empty chosen turn just means no reference
    assert sum(p.reference == "" for p in prompts) == 4
    assert all(p.prompt.startswith("\n\nHuman:") and p.prompt.endswith("\n\nAssistant:") for p in prompts)


def test_testbed_prompt_file_round_trip(tmp_path):
    recs = [PromptRecord("Q: list three fruits.\nAnswer:", family="listing", source="testbed:0",
                         meta={"budget": 3, "topic": "fruit"}),
            PromptRecord("Describe rain.\nAnswer:", family="describing", reference=" Water falling.")]
    loaded = load_prompts(write_jsonl(tmp_path / "prompts_ppo.jsonl", recs))
    assert loaded[0] == recs[0] and loaded[0].meta == recs[0].meta
    assert loaded[1] == PromptRecord("Describe rain.\nAnswer:", family="describing", reference=" Water falling.",
                                     source="prompts_ppo.jsonl:2")


def test_plain_prompt_jsonl_and_limit(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(5)))
    prompts, rep = load_prompts_with_report(path, limit=3)
    assert [p.prompt for p in prompts] == ["Question 0?", "Question 1?", "Question 2?"] and rep.rows == 3
    assert prompts[2] == PromptRecord("Question 2?", source="p.jsonl:3")


def test_bad_prompt_rows_raise_and_skip(tmp_path, caplog):
    lines = ['{"prompt": "ok"}', '{"prompt": "  "}', '{"prompt": 5}', '{"prompt": "x", "meta": [1]}', "{oops",
             '{"text": "no prompt"}', '{"prompt": "fine"}']
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: field 'prompt' is empty"):
        load_prompts(path)
    with caplog.at_level(logging.WARNING):
        prompts, rep = load_prompts_with_report(path, on_error="skip")
    assert [p.prompt for p in prompts] == ["ok", "fine"]
    assert rep.skipped == {"empty_prompt": 1, "wrong_type": 2, "malformed_json": 1, "missing_field": 1}
    assert "skipped 5 rows:" in caplog.text


def test_prompts_over_the_character_limit_stop_or_are_counted(tmp_path, caplog):
    """A 5,000,000-character prompt (or reference) in a prompt file stops the load naming file:line and the limit,
    or is skipped and counted as "too_long"."""
    huge = "x" * 5_000_000
    rows = [{"prompt": "ok"}, {"prompt": huge}, {"prompt": "fine", "reference": huge}, {"prompt": "last"}]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"long\.jsonl:2: prompt has 5,000,000 characters, over the limit of 100,000"):
        load_prompts(path)
    with caplog.at_level(logging.WARNING):
        prompts, rep = load_prompts_with_report(path, on_error="skip")
    assert [p.prompt for p in prompts] == ["ok", "last"] and rep.skipped == {"too_long": 2}
    assert "long.jsonl:3: reference has 5,000,000 characters" in rep.examples[1]
    alpaca = tmp_path / "a.json"
    alpaca.write_text(json.dumps([{"instruction": "Do it.", "input": huge}]))
    with pytest.raises(DataError, match=r"a\.json:\d+: prompt has 5,000,0\d\d characters"):
        load_prompts(alpaca)
    assert load_prompts(path, max_chars=5_000_000, limit=2)[1].prompt == huge


def test_bad_alpaca_prompt_rows(tmp_path):
    rows = [{"instruction": "Do it.", "input": "", "output": "Done."}, {"instruction": "", "input": "x"},
            {"instruction": "Hi", "input": 3}, {"instruction": "Hi", "output": [1]}, {"input": "no instruction"}]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(rows, indent=1))
    with pytest.raises(DataError, match=r"a\.json:\d+: field 'instruction' is empty"):
        load_prompts(path)
    prompts, rep = load_prompts_with_report(path, on_error="skip")
    assert len(prompts) == 1 and rep.skipped == {"empty_prompt": 1, "wrong_type": 2, "missing_field": 1}


def test_unknown_prompt_format(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"text": "hello"}\n')
    with pytest.raises(DataError, match=r"u\.jsonl:1: cannot tell the prompt format"):
        load_prompts(path)


def test_prompt_hub_defaults():
    kw, label, fmt = resolve("tatsu-lab/alpaca_farm", None, PROMPT_DATASETS)
    assert kw == {"path": "tatsu-lab/alpaca_farm", "split": "eval", "name": "alpaca_farm_evaluation"}
    assert (label, fmt) == ("tatsu-lab/alpaca_farm:alpaca_farm_evaluation[eval]", "alpaca")
