"""RewardActor / RewardGroup on a real local Ray cluster: every scorer kind, and loud failures on bad outputs."""

from __future__ import annotations

import json
import random
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import ray
import torch

from tests.fixtures import SMALL, save_tiny_rm, tiny_tokenizer, write_manifest
from umm_ray.actors.reward import RewardActor, RewardGroup, RewardSpec, check_scores, ensemble_members
from umm_ray.layout import RunLayout
from umm_ray.reward_source import RewardSource, proxy_source
from umm_ray.testbed.world import make_prompts, sft_responses

PROMPTS = make_prompts(8, seed=3)
TEXTS = [p.prompt for p in PROMPTS]
RESPONSES = [sft_responses(p, 1, random.Random(i))[0] for i, p in enumerate(PROMPTS)]
SCALE = [[0.5, 2.0], [-1.0, 0.25]]  # the manifest's per-member [mean, std]: far from identity, so it must be applied


@pytest.fixture(scope="module")
def rm_dirs(tmp_path_factory):
    """Two tiny RMs (seeds 0, 1), their ensemble manifest, and a broken checkpoint whose head scores NaN."""
    root = tmp_path_factory.mktemp("rms")
    tok = tiny_tokenizer([p + r for p, r in zip(TEXTS, RESPONSES)] * 4, vocab_size=300)
    dirs = [save_tiny_rm(root / f"m{i}", tok, seed=i, **SMALL) for i in range(2)]
    return {"members": dirs, "manifest": write_manifest(root / "ensemble.json", ["m0", "m1"], aggregate="mean",
                                                                 scale=SCALE),
            "nan": save_tiny_rm(root / "nan", tok, seed=0, nan_head=True, **SMALL)}


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
    assert [list(m.scale) for m in members] == SCALE
    group = RewardGroup(members, strategy="SPREAD")
    try:
        scores = group.member_scores(TEXTS, RESPONSES)
        assert scores.shape == (2, len(TEXTS))
        # Each actor returns its member on the ensemble's scale, (raw - mean) / std, as the in-process scorer does.
        raw = [load_scorer(d).score(TEXTS, RESPONSES) for d in rm_dirs["members"]]
        want = torch.tensor([[(x - m) / sd for x in r] for r, (m, sd) in zip(raw, SCALE)], dtype=torch.float64)
        assert torch.allclose(scores, want, atol=1e-5)
        direct = load_scorer(rm_dirs["manifest"]).member_scores(TEXTS, RESPONSES)
        assert torch.allclose(scores, torch.tensor(direct, dtype=torch.float64), atol=1e-5)
        assert not torch.allclose(scores[0], scores[1])  # members differ (seeds 0 and 1)
        agg = aggregate(scores, how, lam)
        assert torch.allclose(agg, scores.mean(0) - 0.1 * scores.var(0, unbiased=False))
    finally:
        group.shutdown()



def test_one_actor_for_a_whole_ensemble_scores_exactly_as_an_actor_per_member(ray_local, rm_dirs):
    """ensemble.score_actors shared: the manifest's spec in one actor gives the members' rows, bit for bit."""
    spec = RewardSpec.load(rm_dirs["manifest"] + "#uwo:0.1", "proxy")
    per_member, shared = RewardGroup(ensemble_members(spec)), RewardGroup([spec])
    try:
        assert (len(per_member.actors), len(shared.actors)) == (2, 1)
        want = per_member.member_scores(TEXTS, RESPONSES)
        got = shared.member_scores(TEXTS, RESPONSES)
        assert got.shape == (2, len(TEXTS)) and torch.equal(got, want)
        assert shared.member_scores([], []).shape == (2, 0)
    finally:
        per_member.shutdown()
        shared.shutdown()


def test_a_shared_ensemble_actor_names_the_member_with_bad_scores(ray_local, rm_dirs, tmp_path):
    bad = write_manifest(tmp_path / "bad.json", [rm_dirs["members"][0], rm_dirs["nan"]], aggregate="mean", scale=SCALE)
    actor = _actor(RewardSpec.load(bad, "proxy"))
    with pytest.raises(ray.exceptions.RayTaskError, match=r"member 1: non-finite scores"):
        ray.get(actor.member_scores.remote(TEXTS, RESPONSES))
    ray.kill(actor)

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


def test_trust_remote_code_runs_the_rm_checkpoints_own_code(tmp_path):
    """model.trust_remote_code reaches reward actors through the spec: the checkpoint's own code (which adds a
    bonus to every score) runs only with the flag; without it transformers' built-in classes load."""
    from tests.remote_code import REMOTE_BONUS, save_remote_rm

    path = save_remote_rm(tmp_path / "rm")
    spec = RewardSpec.load(path, "proxy")
    trusted = RewardSpec.load(path, "proxy", trust_remote_code=True)
    assert not spec.trust_remote_code and trusted.trust_remote_code
    plain = RewardActor(spec).score(TEXTS[:3], RESPONSES[:3])
    remote = RewardActor(trusted).score(TEXTS[:3], RESPONSES[:3])
    assert remote == pytest.approx([s + REMOTE_BONUS for s in plain], abs=1e-3)


def _proxy_cfg(tmp_path, *overrides):
    from umm_ray.config import load_config

    return load_config(None, ["--run.output_dir", str(tmp_path / "run"), *overrides])


def _proxy(cfg) -> tuple[str, str]:
    source, kind = proxy_source(cfg)
    return str(source), kind


@pytest.fixture(scope="module")
def rm_kinds(rm_dirs, tmp_path_factory):
    """A checkpoint of every kind: dense dir, merged UMM dir (umm_merge.json beside it), MoE dir, manifest."""
    import shutil

    from umm_ray.models.families import MERGE_META, MOE_CONFIG_NAME

    root = tmp_path_factory.mktemp("kinds")
    umm = shutil.copytree(rm_dirs["members"][0], root / "umm")
    (umm / MERGE_META).write_text(json.dumps({"alpha": 0.5, "softmax_theta": []}))
    moe = shutil.copytree(rm_dirs["members"][1], root / "moe")
    (moe / MOE_CONFIG_NAME).write_text("{}")
    return {"dense": rm_dirs["members"][0], "umm": str(umm), "moe": str(moe), "ensemble": rm_dirs["manifest"]}


def test_proxy_auto_takes_whatever_proxy_path_holds(tmp_path, rm_kinds):
    for kind, path in rm_kinds.items():
        assert _proxy(_proxy_cfg(tmp_path, "--reward.proxy_path", path)) == (path, kind)
    manifest = rm_kinds["ensemble"] + "#uwo:0.1"
    assert _proxy(_proxy_cfg(tmp_path, "--reward.proxy_path", manifest)) == (manifest, "ensemble")
    with pytest.raises(ValueError, match="no proxy reward"):
        proxy_source(_proxy_cfg(tmp_path))


def test_proxy_kind_must_match_the_checkpoint(tmp_path, rm_kinds):
    """reward.proxy dense/umm/moe/ensemble: the path must hold that kind, else a clear stop naming both kinds."""
    for kind, path in rm_kinds.items():
        assert _proxy(_proxy_cfg(tmp_path, "--reward.proxy", kind, "--reward.proxy_path", path))[1] == kind
    with pytest.raises(ValueError, match="reward.proxy is 'umm' but reward.proxy_path .* of kind 'dense'"):
        proxy_source(_proxy_cfg(tmp_path, "--reward.proxy", "umm", "--reward.proxy_path", rm_kinds["dense"]))
    with pytest.raises(ValueError, match="reward.proxy is 'dense' but .* of kind 'ensemble'"):
        proxy_source(_proxy_cfg(tmp_path, "--reward.proxy", "dense", "--reward.proxy_path", rm_kinds["ensemble"]))


def test_proxy_kind_without_path_finds_the_trained_rm(tmp_path, rm_kinds):
    """reward.proxy K with no proxy_path: the RM of that kind the stage graph trains (RunLayout.rm_model, e.g.
    <run.output_dir>/rm_umm4/model for jobs.train_rm --rm.kind umm), or a clear stop."""
    import shutil

    with pytest.raises(FileNotFoundError, match="jobs.train_rm --rm.kind umm"):
        proxy_source(_proxy_cfg(tmp_path, "--reward.proxy", "umm"))
    want = RunLayout(tmp_path / "run").rm_model("umm", 4)
    shutil.copytree(rm_kinds["umm"], want)
    assert _proxy(_proxy_cfg(tmp_path, "--reward.proxy", "umm")) == (str(want), "umm")
    shutil.rmtree(want)
    shutil.copytree(rm_kinds["dense"], want)  # a dense model left where the UMM should be
    with pytest.raises(ValueError, match="of kind 'dense'"):
        proxy_source(_proxy_cfg(tmp_path, "--reward.proxy", "umm"))


def test_proxy_remote_uses_remote_url(tmp_path):
    url = "http://127.0.0.1:8000"
    assert _proxy(_proxy_cfg(tmp_path, "--reward.proxy", "remote", "--reward.remote_url", url)) == (url, "remote")
    with pytest.raises(ValueError, match="remote_url is empty"):
        proxy_source(_proxy_cfg(tmp_path, "--reward.proxy", "remote"))


def test_bf16_proxy_holds_bf16_weights_and_scores_float32_close_to_fp32(rm_dirs):
    """reward.proxy_dtype bf16: the weights are loaded in bf16 (not cast later) and the scores are float32 numbers
    within bf16 rounding of the fp32 scores; 'auto' on CPU is fp32 and scores exactly as before."""
    path = rm_dirs["members"][0]
    fp32 = RewardActor(RewardSpec.load(path, "proxy", dtype="fp32"))
    auto = RewardActor(RewardSpec.load(path, "proxy"))
    bf16 = RewardActor(RewardSpec.load(path, "proxy", dtype="bf16"))
    assert (fp32.weights_dtype(), auto.weights_dtype(), bf16.weights_dtype()) == ("float32", "float32", "bfloat16")
    want = fp32.score(TEXTS, RESPONSES)
    assert auto.score(TEXTS, RESPONSES) == want
    got = bf16.score(TEXTS, RESPONSES)
    assert all(type(v) is float for v in got)
    scale = max(abs(v) for v in want)
    assert got == pytest.approx(want, abs=0.05 * scale)  # bf16 keeps ~3 significant digits per matmul
    assert got != want  # the bf16 weights were really used


def test_hub_gold_actor_loads_from_the_node_cache_in_bf16(ray_local, rm_dirs, tmp_path, monkeypatch):
    """A gold given as a hub id: the Ray actor resolves it offline from the node's HF cache and holds bf16 weights
    (reward.gold_dtype bf16), scoring like the same RM loaded from its directory."""
    from tests.fixtures import hub_cache_model, use_hf_cache

    home = tmp_path / "hf"
    hub_cache_model(home, "org/gold-rm", rm_dirs["members"][1])
    env = {"env_vars": use_hf_cache(monkeypatch, home)}  # the driver's check and the actor read the same cache
    spec = RewardSpec.load("org/gold-rm", "gold", dtype="bf16")
    assert spec.kind == "hub" and spec.path == "org/gold-rm"
    actor = ray.remote(RewardActor).options(num_cpus=1, runtime_env=env).remote(spec)
    assert ray.get(actor.weights_dtype.remote()) == "bfloat16"
    got = ray.get(actor.score.remote(TEXTS, RESPONSES))
    want = RewardActor(RewardSpec.load(rm_dirs["members"][1], "gold", dtype="fp32")).score(TEXTS, RESPONSES)
    assert got == pytest.approx(want, abs=0.05 * max(abs(v) for v in want))
    ray.kill(actor)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False")
def test_auto_dtype_on_cuda_is_bf16_with_float32_scores(rm_dirs):
    """'auto' on a GPU: the proxy's weights are bf16 on CUDA; its scores are float32 numbers close to fp32's."""
    path = rm_dirs["members"][0]
    auto, fp32 = RewardActor(RewardSpec.load(path, "proxy")), RewardActor(RewardSpec.load(path, "proxy", dtype="fp32"))
    assert auto.weights_dtype() == "bfloat16" and next(auto.scorer.model.parameters()).is_cuda
    got, want = auto.score(TEXTS, RESPONSES), fp32.score(TEXTS, RESPONSES)
    assert all(type(v) is float for v in got)
    assert got == pytest.approx(want, abs=0.05 * max(abs(v) for v in want))


def test_a_sources_aggregate_overrides_the_manifests(rm_dirs):
    """'manifest.json#wco' scores with the worst case over the members whatever aggregate the manifest was written
    with ('mean' here); no suffix keeps the manifest's; '#uwo:0.1' carries its lambda; a single RM refuses one."""
    manifest = rm_dirs["manifest"]
    members = torch.tensor(RewardActor(RewardSpec.load(manifest, "proxy")).scorer.member_scores(TEXTS, RESPONSES))
    for suffix, want in (("", members.mean(0)), ("#mean", members.mean(0)), ("#wco", members.min(0).values),
                         ("#uwo:0.1", members.mean(0) - 0.1 * members.var(0, unbiased=False))):
        actor = RewardActor(RewardSpec.load(manifest + suffix, "proxy"))
        assert actor.score(TEXTS, RESPONSES) == pytest.approx(want.tolist(), abs=1e-6), suffix
    assert not torch.allclose(members.mean(0), members.min(0).values)  # the two aggregates really differ here
    with pytest.raises(ValueError, match="is not an ensemble manifest"):
        RewardActor(RewardSpec.load(rm_dirs["members"][0] + "#wco", "proxy"))
