"""umm_ray/data/jsonl.py: JSON lines / JSON arrays, plain and gzipped, with errors naming file and line."""

from __future__ import annotations

import gzip
import json

import pytest

from umm_ray.data.jsonl import DataError, iter_records, read_jsonl, write_jsonl
from umm_ray.records import PreferencePair, PromptRecord


def test_write_read_roundtrip_dataclasses_plain_and_gz(tmp_path):
    recs = [PromptRecord(prompt="Q: é\u2028?\nAnswer:", family="list", reference=" a", source="t:1", meta={"k": [1]}),
            PromptRecord(prompt="second", meta={})]
    for name in ("p.jsonl", "p.jsonl.gz"):
        path = write_jsonl(tmp_path / "sub" / name, recs)
        rows = list(read_jsonl(path))
        assert [line for line, _ in rows] == [1, 2]
        assert [PromptRecord(**d) for _, d in rows] == recs
        assert rows[0][1]["meta"] == {"k": [1]}
    assert gzip.open(tmp_path / "sub" / "p.jsonl.gz", "rt").readline().startswith("{")


def test_write_accepts_dicts_and_rejects_other_types(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"a": 1}])
    assert list(read_jsonl(tmp_path / "d.jsonl")) == [(1, {"a": 1})]
    with pytest.raises(TypeError, match="dataclass instances or dicts"):
        write_jsonl(tmp_path / "d.jsonl", [["not", "a", "record"]])


def test_write_is_atomic_old_file_survives_a_failure(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [PreferencePair("p", "a", "b")])
    before = path.read_bytes()

    def records():
        yield PreferencePair("p2", "c", "d")
        raise RuntimeError("crash while writing")

    with pytest.raises(RuntimeError):
        write_jsonl(path, records())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl"]  # no temp file left behind


def test_blank_lines_are_not_records_and_line_numbers_stay_true(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n')
    assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_malformed_line_is_yielded_as_error_and_raised_by_read_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": \n{"a": 3}\n')
    rows = list(iter_records(path))
    assert rows[0] == (1, {"a": 1}) and rows[2] == (3, {"a": 3})
    assert isinstance(rows[1][1], DataError) and rows[1][1].reason == "malformed_json"
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON") as e:
        list(read_jsonl(path))
    assert e.value.line == 2 and e.value.path == str(path)


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_the_line(tmp_path, gz):
    data = b'{"a": "ok"}\n{"a": "caf\xe9"}\n'
    path = tmp_path / ("u.jsonl.gz" if gz else "u.jsonl")
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError, match=r"u\.jsonl(\.gz)?:2: invalid UTF-8") as e:
        list(read_jsonl(path))
    assert e.value.reason == "invalid_utf8"


def test_not_an_object(tmp_path):
    path = tmp_path / "l.jsonl"
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"l\.jsonl:2: expected a JSON object, got list"):
        list(read_jsonl(path))


def test_corrupt_and_truncated_gzip_raise_even_mid_file(tmp_path):
    good = gzip.compress(b"".join(b'{"i": %d}\n' % i for i in range(2000)))
    trunc = tmp_path / "t.jsonl.gz"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"t\.jsonl\.gz:\d+: cannot read file") as e:
        list(iter_records(trunc))
    assert e.value.reason == "corrupt_file"
    notgz = tmp_path / "n.jsonl.gz"
    notgz.write_bytes(b'{"plain": "text"}\n')
    with pytest.raises(DataError, match="n.jsonl.gz"):
        list(iter_records(notgz))


def test_missing_file():
    with pytest.raises(DataError, match="no such file"):
        list(iter_records("/nonexistent/x.jsonl"))


def test_json_array_elements_carry_their_start_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1,\n   "b": 2},\n  {"a": 3}\n  ,{"a": 4}]\n')
    assert list(iter_records(path)) == [(2, {"a": 1, "b": 2}), (4, {"a": 3}), (5, {"a": 4})]
    empty = tmp_path / "e.json"
    empty.write_text(" [ ] ")
    assert list(iter_records(empty)) == []


def test_broken_json_array_raises_with_line(tmp_path):
    path = tmp_path / "a.json"
    path.write_text('[\n  {"a": 1},\n  {"a": }\n]\n')
    with pytest.raises(DataError, match=r"a\.json:3: malformed JSON array element"):
        list(iter_records(path))
    path.write_text('[\n  {"a": 1}\n  {"a": 2}\n]\n')
    with pytest.raises(DataError, match=r"a\.json:3: expected ',' or ']'"):
        list(iter_records(path))
    path.write_bytes(b'[\n{"a": "x"},\n{"a": "\xff"}]')
    with pytest.raises(DataError, match=r"a\.json:3: invalid UTF-8"):
        list(iter_records(path))


def test_json_array_gz_and_real_file_line_numbers(tmp_path, shared_data):
    src = shared_data / "alpaca_farm" / "eval_gpt-3.5-turbo-0301.json"
    rows = list(iter_records(src))
    assert len(rows) == 805
    lines = src.read_text().split("\n")
    assert all(lines[line - 1].strip() == "{" for line, _ in rows)
    gz = tmp_path / "eval.json.gz"
    gz.write_bytes(gzip.compress(src.read_bytes()))
    assert [r for _, r in iter_records(gz)] == json.loads(src.read_text())
