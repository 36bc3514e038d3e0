"""RewardSource: one parser and one spelling for 'testbed' | URL | 'path[#aggregate[:lambda]]'."""

import pytest

from umm_ray.reward_source import RewardSource, parse_named_sources, source_from_config


@pytest.mark.parametrize("text,kind,aggregate,lam", [
    ("testbed", "testbed", None, None),
    ("http://127.0.0.1:8000", "remote", None, None),
    ("https://rm.example/v1#frag", "remote", None, None),  # a URL is taken whole
    ("runs/x/rm_dense/model", "path", None, None),
    ("m.json#wco", "path", "wco", None),
    ("m.json#uwo:0.5", "path", "uwo", 0.5),
    ("m.json#mean", "path", "mean", None),
])
def test_parse_and_str_round_trip(text, kind, aggregate, lam):
    src = RewardSource.parse(text)
    assert (src.kind, src.aggregate, src.lam) == (kind, aggregate, lam)
    assert str(src) == text and RewardSource.parse(str(src)) == src


@pytest.mark.parametrize("text,words", [
    ("", "reward.gold is empty: expected 'testbed'"),
    ("m.json#max", "reward.gold 'm.json#max': malformed; expected 'testbed', an http(s)"),
    ("m.json#uwo:x", "lambda 'x' is not a number"),
    ("m.json#uwo:", "malformed"),
    ("m.json#", "malformed"),
    ("#uwo", "malformed"),
    ("m.json#uwo:-1", "must be a finite number >= 0"),
])
def test_malformed_text_names_the_string_and_the_form(text, words):
    with pytest.raises(ValueError) as e:
        RewardSource.parse(text, "reward.gold")
    assert words in str(e.value)


def test_aggregate_only_for_checkpoints_and_helpers(tmp_path):
    with pytest.raises(ValueError, match="ensemble manifests only"):
        RewardSource("testbed", "mean")
    src = RewardSource.parse(str(tmp_path / "m.json") + "#uwo:0.5")
    assert src.is_manifest and str(src.with_aggregate("uwo", 0.1)).endswith("m.json#uwo:0.1")
    with pytest.raises(FileNotFoundError, match=r"reward.proxy_path: .*m.json does not exist"):
        src.check_exists("reward.proxy_path")
    assert RewardSource("testbed").check_exists().absolute() == RewardSource("testbed")


def test_config_values_and_named_lists():
    assert source_from_config("remote", "http://h:1", "reward.gold") == RewardSource("http://h:1")
    with pytest.raises(ValueError, match="reward.gold is 'remote' but reward.remote_url is empty"):
        source_from_config("remote", "", "reward.gold")
    assert parse_named_sources(["d=x", "e=m.json#uwo:0.1"]) == {"d": RewardSource("x"),
                                                                "e": RewardSource("m.json", "uwo", 0.1)}
    with pytest.raises(ValueError, match="duplicate"):
        parse_named_sources(["d=x", "d=y"])
    with pytest.raises(ValueError, match="bon.rms entry 'just-a-path': expected name=path"):
        parse_named_sources(["just-a-path"])
    with pytest.raises(ValueError, match="bon.rms entry 'e' 'm.json#max': malformed"):
        parse_named_sources(["e=m.json#max"])
