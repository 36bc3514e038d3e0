"""umm_ray/data/preferences.py + formats.py: real HH / AlpacaFarm rows, hub-schema rows, every kind of bad input."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from umm_ray.data import DataError, load_preferences, load_preferences_with_report, write_jsonl
from umm_ray.data.formats import split_transcript
from umm_ray.data.hub import PREFERENCE_DATASETS, looks_like_hub_name, resolve
from umm_ray.records import PreferencePair

HH_TEST = Path("hh-rlhf") / "harmless-base" / "test.jsonl.gz"
HH_EMPTY_CHOSEN_LINES = [87, 517, 926, 1104]  # chosen last turn is " " in the real file (checked by hand)
# Rows whose one response itself contains "\n\nAssistant:" (checked by hand), so per-transcript prompts differ.
HH_INNER_ASSISTANT_LINES = {1255: "rejected", 1689: "rejected", 1951: "chosen", 1953: "rejected", 2037: "rejected"}


def _hh(prompt_q: str, chosen: str, rejected: str) -> dict:
    head = f"\n\nHuman: {prompt_q}\n\nAssistant:"
    return {"chosen": head + chosen, "rejected": head + rejected}


GOOD = _hh("hi there", " Hello! How can I help?", " Go away.")


def _write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    raw = b"".join((json.dumps(x).encode() if isinstance(x, dict) else x.encode() if isinstance(x, str) else x)
                   + b"\n" for x in lines)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


# ---- real data ---------------------------------------------------------------------------------------------------

def test_real_hh_harmless_test_skip_mode_counts(shared_data, caplog):
    with caplog.at_level(logging.WARNING):
        pairs, rep = load_preferences_with_report(shared_data / HH_TEST, on_error="skip")
    assert (rep.rows, rep.loaded, rep.skipped, rep.dropped) == (2312, 2308, {"empty_response": 4}, {})
    assert len(pairs) == 2308
    assert [int(re.search(r"test\.jsonl\.gz:(\d+): ", e)[1]) for e in rep.examples] == HH_EMPTY_CHOSEN_LINES
    assert "skipped 4 rows: {'empty_response': 4}" in caplog.text
    for p in pairs:
        assert p.prompt.startswith("\n\nHuman:") and p.prompt.endswith("\n\nAssistant:")
        assert p.chosen.strip() and p.rejected.strip() and p.chosen.strip() != p.rejected.strip()
    assert pairs[0].source == "test.jsonl.gz:1"


def test_real_hh_raise_mode_stops_at_first_empty_response(shared_data):
    with pytest.raises(DataError, match=r"test\.jsonl\.gz:87: chosen response is empty") as e:
        load_preferences(shared_data / HH_TEST)
    assert e.value.line == 87 and e.value.reason == "empty_response"


def test_real_hh_split_is_the_last_assistant_turn(shared_data):
    rows = [json.loads(line) for line in gzip.open(shared_data / HH_TEST, "rt")]
    pairs = {int(p.source.split(":")[1]): p for p in load_preferences(shared_data / HH_TEST, on_error="skip")}
    ordinary = [ln for ln in pairs if ln not in HH_INNER_ASSISTANT_LINES]
    for ln in ordinary:
        prompt, chosen = split_transcript(rows[ln - 1]["chosen"])
        assert (pairs[ln].prompt, pairs[ln].chosen) == (prompt, chosen)
        assert pairs[ln].prompt + pairs[ln].rejected == rows[ln - 1]["rejected"]
    # The five rows with an "\n\nAssistant:" inside one response: the prompt is the other side's prompt.
    for ln, clean_side in HH_INNER_ASSISTANT_LINES.items():
        row, p = rows[ln - 1], pairs[ln]
        assert p.prompt == split_transcript(row[clean_side])[0]
        assert p.prompt + p.chosen == row["chosen"] and p.prompt + p.rejected == row["rejected"]


def test_real_hh_limit(shared_data):
    pairs, rep = load_preferences_with_report(shared_data / HH_TEST, limit=10)
    assert len(pairs) == 10 and rep.rows == 10 and rep.loaded == 10


def test_real_hh_row_with_a_different_conversation_is_a_prompt_mismatch(shared_data, tmp_path):
    rows = [json.loads(line) for line in gzip.open(shared_data / HH_TEST, "rt")][:3]
    rows[1]["rejected"] = rows[1]["rejected"].replace("\n\nHuman:", "\n\nHuman: well,", 1)
    path = _write_lines(tmp_path / "hh.jsonl.gz", rows)
    with pytest.raises(DataError, match=r"hh\.jsonl\.gz:2: chosen and rejected do not share a prompt"):
        load_preferences(path)
    pairs, rep = load_preferences_with_report(path, on_error="skip")
    assert len(pairs) == 2 and rep.skipped == {"prompt_mismatch": 1}


def _alpaca_labelled(shared_data, tmp_path) -> tuple[list[dict], Path]:
    rows = json.loads((shared_data / "alpaca_farm" / "outputs_pairs.json").read_text())
    for i, r in enumerate(rows):
        r["preference"] = 1 + i % 2
    path = tmp_path / "alpaca_pref.json"
    path.write_text(json.dumps(rows, indent=2))
    return rows, path


def test_real_alpaca_pairs_with_labels_json_array_and_jsonl(shared_data, tmp_path):
    rows, path = _alpaca_labelled(shared_data, tmp_path)
    jsonl = write_jsonl(tmp_path / "alpaca_pref.jsonl", rows)
    for f in (path, jsonl):
        pairs = load_preferences(f)
        assert len(pairs) == 6
        for r, p in zip(rows, pairs):
            win, lose = (r["output_1"], r["output_2"]) if r["preference"] == 1 else (r["output_2"], r["output_1"])
            assert (p.chosen, p.rejected) == (" " + win, " " + lose)
            assert p.prompt.startswith(f"\n\nHuman: {r['instruction'].strip()}") and p.prompt.endswith("Assistant:")
            assert (r["input"].strip() in p.prompt) and (f"\n\n{r['input'].strip()}\n\nAssistant:" in p.prompt
                                                         or not r["input"].strip())
    assert load_preferences(jsonl)[1].source == "alpaca_pref.jsonl:2"
    assert load_preferences(path)[1].source == "alpaca_pref.json:9"  # line where the 2nd array element starts


def test_real_alpaca_outputs_pairs_without_labels_is_missing_preference(shared_data):
    src = shared_data / "alpaca_farm" / "outputs_pairs.json"
    with pytest.raises(DataError, match=r"outputs_pairs\.json:2: missing field 'preference'"):
        load_preferences(src)
    with pytest.raises(DataError, match=r"outputs_pairs\.json: no usable records: .* 6 rows, 0 loaded, skipped 6 "
                       r"\{'missing_field': 6\}.*; e\.g\. .*outputs_pairs\.json:2: missing field 'preference'"):
        load_preferences(src, on_error="skip")


def test_empty_file_is_an_error(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no usable records: .* 0 rows"):
        load_preferences(tmp_path / "empty.jsonl")
    assert load_preferences(tmp_path / "empty.jsonl", limit=0) == []


@pytest.mark.parametrize("label", [0, 3, "1", 1.0, True, None])
def test_alpaca_bad_preference_label(tmp_path, label):
    row = {"instruction": "Say hi.", "input": "", "output_1": "Hi", "output_2": "Hey", "preference": label}
    path = _write_lines(tmp_path / "a.jsonl", [dict(row, preference=2), row])
    with pytest.raises(DataError, match=r"a\.jsonl:2: field 'preference' must be 1 or 2"):
        load_preferences(path)
    pairs, rep = load_preferences_with_report(path, on_error="skip")
    assert [p.chosen for p in pairs] == [" Hey"] and rep.skipped == {"bad_label": 1}


# ---- WebGPT rows in the hub schema (question dict, quotes, tokens) ----------------------------------------------

def _webgpt(q: str, a0: str, a1: str, s0: float, s1: float) -> dict:
    quotes = {"title": ["Some page"], "extract": ["Some extract."]}
    return {"question": {"dataset": "eli5", "id": "x", "full_text": q}, "quotes_0": quotes, "answer_0": a0,
            "tokens_0": [1, 2], "score_0": s0, "quotes_1": quotes, "answer_1": a1, "tokens_1": [3], "score_1": s1}


def test_webgpt_higher_score_wins_and_ties_are_dropped_and_counted(tmp_path, caplog):
    rows = [_webgpt("Why is the sky blue?", "Rayleigh scattering.", "It reflects the sea.", 1.0, -1.0),
            _webgpt("Why do cats purr?", "Nobody knows.", "Vibrating larynx muscles.", -0.5, 0.5),
            _webgpt("Is water wet?", "Yes.", "No.", 0.0, 0.0),
            _webgpt("What is 2+2?", "4", "Four", 0, 0.0)]
    path = _write_lines(tmp_path / "webgpt.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        pairs, rep = load_preferences_with_report(path)  # raise mode: ties are not errors
    assert [(p.chosen, p.rejected) for p in pairs] == [(" Rayleigh scattering.", " It reflects the sea."),
                                                       (" Vibrating larynx muscles.", " Nobody knows.")]
    assert pairs[0].prompt == "\n\nHuman: Why is the sky blue?\n\nAssistant:"
    assert (rep.rows, rep.loaded, rep.dropped, rep.skipped) == (4, 2, {"tie": 2}, {})
    assert "dropped 2 rows: {'tie': 2}" in caplog.text


def test_webgpt_bad_scores(tmp_path):
    path = _write_lines(tmp_path / "w.jsonl", [_webgpt("q?", "a", "b", 1.0, "high"),
                                               _webgpt("q?", "a", "b", float("nan"), 1.0),
                                               _webgpt("q?", "a", "b", 0.2, 0.1)])
    with pytest.raises(DataError, match=r"w\.jsonl:1: field 'score_1' must be a number, got str"):
        load_preferences(path)
    pairs, rep = load_preferences_with_report(path, on_error="skip")
    assert rep.skipped == {"wrong_type": 1, "bad_label": 1} and [p.chosen for p in pairs] == [" a"]


# ---- generic pairs -----------------------------------------------------------------------------------------------

def test_generic_pairs_roundtrip_through_write_jsonl(tmp_path):
    pairs = [PreferencePair("Q: a?\nAnswer:", " yes", " no", source="testbed:3", family="answering"),
             PreferencePair("Q: b?\nAnswer:", " 1 2", " 1", family="listing")]
    loaded = load_preferences(write_jsonl(tmp_path / "pairs.jsonl.gz", pairs))
    assert loaded[0] == pairs[0]  # a stored source is kept
    assert loaded[1] == PreferencePair("Q: b?\nAnswer:", " 1 2", " 1", source="pairs.jsonl.gz:2", family="listing")


def test_forced_format_and_argument_errors(tmp_path):
    path = _write_lines(tmp_path / "hh.jsonl", [GOOD])
    with pytest.raises(DataError, match=r"hh\.jsonl:1: missing field 'prompt'"):
        load_preferences(path, fmt="pairs")
    assert load_preferences(path, fmt="hh")[0].chosen == " Hello! How can I help?"
    with pytest.raises(ValueError, match="fmt must be one of"):
        load_preferences(path, fmt="csv")
    with pytest.raises(ValueError, match="on_error must be one of"):
        load_preferences(path, on_error="ignore")
    with pytest.raises(DataError, match="no such file, and not a hub dataset name"):
        load_preferences(tmp_path / "missing.jsonl")


# ---- one test per kind of bad input: raise names file:line, skip counts it -----------------------------------

BAD_ROWS = {
    "malformed_json": ('{"chosen": "\\n\\nHuman: x\\n\\nAssistant: a", ', r"malformed JSON"),
    "missing_field": ({"chosen": GOOD["chosen"]}, r"missing field 'rejected'"),
    "wrong_type": ({"chosen": GOOD["chosen"], "rejected": 7}, r"field 'rejected' must be a string, got int"),
    "empty_response": (_hh("q", " fine", "   "), r"rejected response is empty"),
    "identical_responses": (_hh("q", " same answer", " same answer "), r"chosen == rejected"),
    "invalid_utf8": (b'{"chosen": "caf\xe9", "rejected": "x"}', r"invalid UTF-8"),
    "prompt_mismatch": ({"chosen": GOOD["chosen"], "rejected": _hh("other", " a", " b")["rejected"]},
                        r"chosen and rejected do not share a prompt"),
    "no_assistant_turn": ({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: hi"},
                          r"chosen transcript has no '\\n\\nAssistant:' turn"),
    "not_an_object": ("[1, 2]", r"expected a JSON object, got list"),
    "unknown_format": ({"text": "hello"}, r"cannot tell the format"),
    "too_long": (_hh("q" * 100_000, " fine", " bad"), r"prompt has 100,0\d\d characters, over the limit of 100,000"),
}


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_bad_row_raise_names_file_and_line_skip_counts(tmp_path, caplog, reason, suffix):
    bad, message = BAD_ROWS[reason]
    # unknown_format is only detectable when the bad row comes first (later rows are parsed as the detected format)
    lines = [bad, GOOD, GOOD] if reason == "unknown_format" else [GOOD, bad, GOOD]
    bad_line = lines.index(bad) + 1
    path = _write_lines(tmp_path / f"data{suffix}", lines)
    with pytest.raises(DataError, match=rf"data{suffix.replace('.', '[.]')}:{bad_line}: {message}") as e:
        load_preferences(path)
    assert (e.value.path, e.value.line, e.value.reason) == (str(path), bad_line, reason)
    with caplog.at_level(logging.WARNING):
        pairs, rep = load_preferences_with_report(path, on_error="skip")
    assert len(pairs) == 2 and (rep.rows, rep.loaded, rep.skipped) == (3, 2, {reason: 1})
    assert f"skipped 1 rows: {{'{reason}': 1}}" in caplog.text
    assert [p.source for p in pairs] == [f"data{suffix}:{i}" for i in (1, 2, 3) if i != bad_line]


def test_generic_pairs_bad_rows(tmp_path):
    good = {"prompt": "Q?", "chosen": " a", "rejected": " b"}
    lines = [good, dict(good, prompt="  "), dict(good, chosen=""), dict(good, family=3), dict(good, rejected=" a")]
    path = _write_lines(tmp_path / "g.jsonl", lines)
    _, rep = load_preferences_with_report(path, on_error="skip")
    assert rep.skipped == {"empty_prompt": 1, "empty_response": 1, "wrong_type": 1, "identical_responses": 1}


def test_texts_over_the_character_limit_stop_or_are_counted(tmp_path, caplog):
    """A 5,000,000-character prompt, chosen or rejected stops the load naming file:line and the limit (raise), or is
    skipped and counted as "too_long" (skip); a text at the limit loads."""
    from umm_ray.data.validate import MAX_TEXT_CHARS

    good = {"prompt": "Q?", "chosen": " a", "rejected": " b"}
    huge = "x" * 5_000_000
    lines = [good, dict(good, prompt=huge), dict(good, chosen=huge), dict(good, rejected=huge),
             dict(good, prompt="y" * MAX_TEXT_CHARS)]
    path = _write_lines(tmp_path / "long.jsonl", lines)
    with pytest.raises(DataError, match=r"long\.jsonl:2: prompt has 5,000,000 characters, over the limit of "
                                        r"100,000 \(umm_ray\.data\.validate\.MAX_TEXT_CHARS\)") as e:
        load_preferences(path)
    assert (e.value.line, e.value.reason) == (2, "too_long")
    with caplog.at_level(logging.WARNING):
        pairs, rep = load_preferences_with_report(path, on_error="skip")
    assert [p.source for p in pairs] == ["long.jsonl:1", "long.jsonl:5"] and rep.skipped == {"too_long": 3}
    assert [re.search(r"long\.jsonl:(\d+): (\w+) has", x).groups() for x in rep.examples] == [
        ("2", "prompt"), ("3", "chosen"), ("4", "rejected")]
    assert "skipped 3 rows: {'too_long': 3}" in caplog.text
    # the limit is the loader's max_chars
    with pytest.raises(DataError, match=r"short\.jsonl:2: prompt has 100,000 characters, over the limit of 99,999"):
        load_preferences(_write_lines(tmp_path / "short.jsonl", [good, lines[-1]]), max_chars=99_999)
    with pytest.raises(ValueError, match="max_chars must be >= 1"):
        load_preferences(path, max_chars=0)


# ---- hub names -----------------------------------------------------------------------------------------------------

def test_hub_spec_resolution():
    assert looks_like_hub_name("Anthropic/hh-rlhf:harmless-base") and not looks_like_hub_name("data/x.jsonl")
    kw, label, fmt = resolve("Anthropic/hh-rlhf:harmless-base", None, PREFERENCE_DATASETS)
    assert (kw, label, fmt) == ({"path": "Anthropic/hh-rlhf", "split": "train", "data_dir": "harmless-base"},
                                "Anthropic/hh-rlhf:harmless-base[train]", "hh")
    kw, _, fmt = resolve("tatsu-lab/alpaca_farm", None, PREFERENCE_DATASETS)
    assert kw == {"path": "tatsu-lab/alpaca_farm", "split": "preference", "name": "alpaca_human_preference"}
    assert fmt == "alpaca"
    kw, _, fmt = resolve("openai/webgpt_comparisons", "train", PREFERENCE_DATASETS)
    assert (kw, fmt) == ({"path": "openai/webgpt_comparisons", "split": "train", "name": None}, "webgpt")


def test_hub_layout_through_datasets_load_dataset(shared_data, tmp_path, monkeypatch):
    """The hub path for real: `datasets` finds a local folder named like the hub dataset before the hub."""
    import datasets

    target = tmp_path / "Anthropic" / "hh-rlhf" / "harmless-base"
    target.mkdir(parents=True)
    shutil.copy(shared_data / HH_TEST, target / "test.jsonl.gz")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    pairs, rep = load_preferences_with_report("Anthropic/hh-rlhf:harmless-base", split="test", on_error="skip")
    assert (rep.source, rep.rows, rep.loaded, rep.skipped) == ("Anthropic/hh-rlhf:harmless-base[test]", 2312, 2308,
                                                               {"empty_response": 4})
    assert pairs[0].source == "Anthropic/hh-rlhf:harmless-base[test]:0"  # 0-based row index, as ds[i]
    local = load_preferences(shared_data / HH_TEST, on_error="skip")
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [(p.prompt, p.chosen, p.rejected) for p in local]


def test_hub_offline_fails_with_a_clear_error(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    code = ("from umm_ray.data import load_preferences, DataError\n"
            "try:\n    load_preferences('openai/webgpt_comparisons')\n"
            "except DataError as e:\n    print('DATAERROR', e.reason, e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert "DATAERROR hub_unavailable openai/webgpt_comparisons[train]: could not load hub dataset" in out.stdout
    assert "save the rows as a local .jsonl" in out.stdout
