"""RewardActor / RewardGroup on a real local Ray cluster: every scorer kind, and loud failures on bad outputs."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import ray
import torch

from umm_ray.actors.reward import RewardActor, RewardGroup, RewardSpec, check_scores, ensemble_members
from umm_ray.reward_source import RewardSource
from umm_ray.testbed.world import make_prompts, sft_responses

PROMPTS = make_prompts(8, seed=3)
TEXTS = [p.prompt for p in PROMPTS]
RESPONSES = [sft_responses(p, 1, random.Random(i))[0] for i, p in enumerate(PROMPTS)]


def _save_rm(out_dir, seed: int, nan_head: bool = False) -> str:
    from umm_ray.testbed.models import make_reward_model, save_model
    from umm_ray.testbed.tokenizer import train_tokenizer

    tok = train_tokenizer([p + r for p, r in zip(TEXTS, RESPONSES)] * 4, vocab_size=300)
    model = make_reward_model("llama", tok, seed=seed, hidden_size=64, num_layers=1, intermediate_size=64,
                              max_seq_len=128)
    if nan_head:  # a broken checkpoint: the score head produces NaN for every input
        with torch.no_grad():
            model.score.weight.fill_(float("nan"))
    save_model(model, tok, out_dir)
    return str(out_dir)


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rms")
    dirs = [_save_rm(root / f"m{i}", seed=i) for i in range(2)]
    (root / "ensemble.json").write_text(json.dumps({"members": ["m0", "m1"], "aggregate": "mean"}))
    return {"members": dirs, "manifest": str(root / "ensemble.json"), "nan": _save_rm(root / "nan", 0, True)}


def _actor(spec: RewardSpec):
    return ray.remote(RewardActor).options(num_cpus=1).remote(spec)


def test_testbed_gold_actor_matches_gold(ray_local):
    from umm_ray.testbed.gold import TestbedGold

    actor = _actor(RewardSpec("gold", RewardSource("testbed")))
    assert ray.get(actor.score.remote(TEXTS, RESPONSES)) == TestbedGold().score(TEXTS, RESPONSES)
    ray.kill(actor)


def test_hf_rm_actor_matches_direct_scorer(ray_local, rm_dirs):
    from umm_ray.models.reward_model import load_scorer

    actor = _actor(RewardSpec("proxy", RewardSource(rm_dirs["members"][0])))
    got = ray.get(actor.score.remote(TEXTS, RESPONSES))
    want = load_scorer(rm_dirs["members"][0]).score(TEXTS, RESPONSES)
    assert got == pytest.approx(want, abs=1e-5)
    ray.kill(actor)


def test_nan_scores_raise_naming_the_actor(ray_local, rm_dirs):
    actor = _actor(RewardSpec("proxy", RewardSource(rm_dirs["nan"])))
    with pytest.raises(RuntimeError) as e:
        ray.get(actor.score.remote(TEXTS, RESPONSES))
    assert "RewardActor[proxy: " in str(e.value) and rm_dirs["nan"] in str(e.value) and "non-finite" in str(e.value)
    ray.kill(actor)


def test_check_scores_rejects_wrong_count_and_inf():
    with pytest.raises(RuntimeError, match=r"RM-x: returned 2 scores for 3 responses"):
        check_scores([0.1, 0.2], 3, "RM-x")
    with pytest.raises(RuntimeError, match=r"RM-x: non-finite scores at indices \[1\]"):
        check_scores([0.1, float("inf"), 0.3], 3, "RM-x")
    with pytest.raises(RuntimeError, match="not a list of numbers"):
        check_scores(["a"], 1, "RM-x")
    assert check_scores([1, 2.5], 2, "RM-x") == [1.0, 2.5]


class _BadEndpoint(BaseHTTPRequestHandler):
    """A misbehaving reward server: answers with too few rewards, or NaN, depending on the path."""

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = len(body["prompts"])
        rewards = [0.5] * (n - 1) if self.server.mode == "short" else [float("nan")] * n
        data = json.dumps({"rewards": rewards}).encode()  # json writes NaN literally; the client parses it back
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("mode,message", [("short", "returned 7 rewards for 8"), ("nan", "non-finite")])
def test_remote_endpoint_bad_output_raises(ray_local, mode, message):
    server = HTTPServer(("127.0.0.1", 0), _BadEndpoint)
    server.mode = mode
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        actor = _actor(RewardSpec("proxy", RewardSource(url)))
        with pytest.raises(RuntimeError) as e:
            ray.get(actor.score.remote(TEXTS, RESPONSES))
        assert f"RewardActor[proxy: {url}]" in str(e.value) and message in str(e.value)
        ray.kill(actor)
    finally:
        server.shutdown()


def test_ensemble_group_spreads_members_and_matches_manifest(ray_local, rm_dirs):
    from umm_ray.algo.ensemble import aggregate
    from umm_ray.models.reward_model import load_scorer

    spec = RewardSpec.load(rm_dirs["manifest"] + "#uwo:0.1", "proxy")
    how, lam = spec.source.aggregate, spec.source.lam
    assert (how, lam) == ("uwo", 0.1)
    members = ensemble_members(spec)
    assert [m.name for m in members] == ["proxy/member0", "proxy/member1"]
    group = RewardGroup(members, strategy="SPREAD")
    try:
        scores = group.member_scores(TEXTS, RESPONSES)
        assert scores.shape == (2, len(TEXTS))
        direct = load_scorer(rm_dirs["manifest"]).member_scores(TEXTS, RESPONSES)
        assert torch.allclose(scores, torch.tensor(direct, dtype=torch.float64), atol=1e-5)
        assert not torch.allclose(scores[0], scores[1])  # members differ (seeds 0 and 1)
        agg = aggregate(scores, how, lam)
        assert torch.allclose(agg, scores.mean(0) - 0.1 * scores.var(0, unbiased=False))
    finally:
        group.shutdown()


def test_load_reward_spec_errors(tmp_path, monkeypatch):
    assert RewardSpec.load("testbed", "gold").kind == "testbed"
    assert RewardSpec.load("http://127.0.0.1:8000", "proxy", token="t").token == "t"
    assert RewardSpec.load("testbed", "gold", token="t").token == ""  # a token only goes to an endpoint
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rm").mkdir()
    assert RewardSpec.load("rm", "proxy").path == str(tmp_path / "rm")  # absolute: actors run elsewhere
    with pytest.raises(FileNotFoundError, match="reward source 'proxy': .*nope does not exist"):
        RewardSpec.load(str(tmp_path / "nope"), "proxy")
    with pytest.raises(ValueError, match="malformed; expected 'testbed'"):
        RewardSpec.load(str(tmp_path) + "#max", "proxy")
    with pytest.raises(ValueError, match="is empty"):
        RewardSpec.load("", "gold")
