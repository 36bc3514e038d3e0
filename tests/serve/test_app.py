"""The reward endpoint on a real Ray Serve proxy (loopback, free port): scores, refusals, token, ensemble."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from umm_ray.models.reward_model import load_scorer


def post(url: str, body=None, raw: bytes | None = None, token: str = "", **kw) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if raw is not None:
        return requests.post(url, data=raw, headers=headers | {"Content-Type": "application/json"}, timeout=60, **kw)
    return requests.post(url, json=body, headers=headers, timeout=60, **kw)


def test_health(served):
    r = requests.get(served["url"] + "/dense/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_pairs_route_equals_in_process_scorer(served, tiny_rms, pairs):
    prompts, responses = pairs
    r = post(served["url"] + "/dense/v1/score", {"prompts": prompts, "responses": responses})
    assert r.status_code == 200, r.text
    want = load_scorer(tiny_rms["dense"]).score(prompts, responses)
    assert r.json()["rewards"] == pytest.approx(want, abs=1e-4)
    assert r.json()["scores"] == r.json()["rewards"]


@pytest.mark.parametrize("route", ["/", "/score", "/get_reward"])
def test_openrlhf_routes_equal_in_process_scorer(served, tiny_rms, pairs, route):
    prompts, responses = pairs
    queries = [p + r + "<|eos|>" for p, r in zip(prompts, responses)]  # a decoder's trailing EOS is stripped
    r = post(served["url"] + "/dense" + route.rstrip("/"),
             {"query": queries, "prompts": prompts, "labels": [""] * len(prompts)})
    assert r.status_code == 200, r.text
    scorer = load_scorer(tiny_rms["dense"])
    assert r.json()["rewards"] == pytest.approx(scorer.score(prompts, responses), abs=1e-4)
    # Without prompts the full text is scored as one piece after an empty prompt.
    r = post(served["url"] + "/dense/score", {"query": queries[:3]})
    full = [p + x for p, x in zip(prompts[:3], responses[:3])]
    assert r.json()["rewards"] == pytest.approx(scorer.score([""] * 3, full), abs=1e-4)


BAD = [
    ("/v1/score", b"{not json", 400, "not valid JSON"),
    ("/v1/score", b"[1, 2]", 422, "JSON object"),
    ("/v1/score", b'{"prompts": ["a"], "responses": "b"}', 422, "'responses' must be a list"),
    ("/v1/score", b'{"prompts": ["a", 1], "responses": ["b", "c"]}', 422, "'prompts[1]' must be a string"),
    ("/v1/score", b'{"prompts": ["a", "b"], "responses": ["c"]}', 422, "length mismatch"),
    ("/v1/score", b'{"prompts": [], "responses": []}', 422, "is empty"),
    ("/v1/score", b'{"prompts": ["a"]}', 422, "missing field 'responses'"),
    ("/v1/score", json.dumps({"prompts": ["a"], "responses": ["x" * 2001]}).encode(), 413, "limit is 2000"),
    ("/v1/score", json.dumps({"prompts": ["a"] * 17, "responses": ["b"] * 17}).encode(), 413,
     "17 items; the limit is 16"),
    ("/v1/score", json.dumps({"prompts": ["y" * 70000], "responses": ["b"]}).encode(), 413, "limit is 65536"),
    ("/", b'{"query": ["hello"], "prompts": ["bye"]}', 422, "does not start with"),
    ("/score", b'{"query": 5}', 422, "'query' must be a list"),
]


@pytest.mark.parametrize("route, raw, status, words", BAD, ids=[f"{b[2]}-{b[3][:20]}" for b in BAD])
def test_bad_input_is_refused_and_the_server_keeps_serving(served, pairs, route, raw, status, words):
    r = post(served["url"] + "/dense" + route.rstrip("/"), raw=raw)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    prompts, responses = pairs
    ok = post(served["url"] + "/dense/v1/score", {"prompts": prompts[:2], "responses": responses[:2]})
    assert ok.status_code == 200 and len(ok.json()["rewards"]) == 2


def test_wrong_method_and_unknown_route_are_4xx(served):
    assert requests.get(served["url"] + "/dense/v1/score", timeout=30).status_code == 405
    assert requests.post(served["url"] + "/dense/nope", json={}, timeout=30).status_code == 404


def test_token_required_when_set(served, pairs):
    prompts, responses = pairs
    url, body = served["url"] + "/secure/v1/score", {"prompts": prompts[:2], "responses": responses[:2]}
    for token in ("", "wrong-token"):
        r = post(url, body, token=token)
        assert r.status_code == 401 and "bearer token" in r.json()["detail"]
        assert r.headers.get("www-authenticate") == "Bearer"
    r = post(url, body, token=served["token"])
    assert r.status_code == 200 and len(r.json()["rewards"]) == 2
    assert requests.get(served["url"] + "/secure/health", timeout=30).status_code == 200  # health stays open


def test_ensemble_returns_aggregate_and_members(served, tiny_rms, pairs):
    prompts, responses = pairs
    r = post(served["url"] + "/ens/v1/score", {"prompts": prompts, "responses": responses})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["aggregate"] == "uwo" and body["members"] == ["m0", "m1", "m2"]
    members = [load_scorer(tiny_rms[m]).score(prompts, responses) for m in ("m0", "m1", "m2")]
    for got, want in zip(body["member_scores"], members):
        assert got == pytest.approx(want, abs=1e-4)
    for i, reward in enumerate(body["rewards"]):
        col = [m[i] for m in members]
        mean = sum(col) / 3
        assert reward == pytest.approx(mean - 0.5 * sum((c - mean) ** 2 for c in col) / 3, abs=1e-3)


def test_concurrent_requests_get_their_own_scores(served, tiny_rms, pairs):
    """Items of many requests share dynamic batches; each answer must still carry its own items' scores."""
    prompts, responses = pairs
    want = load_scorer(tiny_rms["dense"]).score(prompts, responses)
    jobs = [(i % 8, 1 + i % 3) for i in range(24)]  # (start, count) windows over the 8 pairs

    def call(job):
        s, n = job
        idx = [(s + k) % 8 for k in range(n)]
        r = post(served["url"] + "/dense/v1/score",
                 {"prompts": [prompts[i] for i in idx], "responses": [responses[i] for i in idx]})
        return idx, r

    with ThreadPoolExecutor(12) as pool:
        for idx, r in pool.map(call, jobs):
            assert r.status_code == 200, r.text
            assert r.json()["rewards"] == pytest.approx([want[i] for i in idx], abs=1e-4)


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outward interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_binds_loopback_only_by_default(served):
    ip = _non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe")
    with socket.socket() as s:
        s.settimeout(5)
        assert s.connect_ex((ip, served["port"])) != 0, f"the endpoint answers on {ip}, not only on 127.0.0.1"


def test_spec_from_config_follows_the_reward_keys(tiny_rms):
    """serve_rm: reward.proxy checks the kind of reward.proxy_path; model.trust_remote_code reaches the replicas."""
    from umm_ray.config import load_config
    from umm_ray.serve.app import spec_from_config

    dense = str(tiny_rms["dense"])
    spec = spec_from_config(load_config(None, ["--reward.proxy_path", dense, "--model.trust_remote_code", "true"]))
    assert spec.path == dense and spec.trust_remote_code
    assert spec_from_config(load_config(None, ["--reward.proxy", "dense", "--reward.proxy_path", dense])).path == dense
    with pytest.raises(ValueError, match="reward.proxy is 'ensemble' but .* of kind 'dense'"):
        spec_from_config(load_config(None, ["--reward.proxy", "ensemble", "--reward.proxy_path", dense]))
    with pytest.raises(ValueError, match="serve_rm serves a local reward model"):
        spec_from_config(load_config(None, ["--reward.proxy", "remote", "--reward.remote_url", "http://h:1"]))
