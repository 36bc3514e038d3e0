"""RemoteScorer against the real endpoint, a dead port, and a loopback server that fails before it answers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.fixtures import free_port
from umm_ray.models.reward_model import load_scorer
from umm_ray.records import Scorer
from umm_ray.serve.client import RemoteScorer, RemoteScorerError


def test_remote_scorer_equals_in_process_scorer_across_chunks(served, tiny_rms, pairs):
    prompts, responses = pairs
    remote = RemoteScorer(served["url"] + "/dense", batch_size=3)  # 8 pairs -> 3 requests
    assert isinstance(remote, Scorer)
    assert remote.score(prompts, responses) == pytest.approx(load_scorer(tiny_rms["dense"]).score(prompts, responses),
                                                             abs=1e-4)


def test_remote_scorer_token_and_clear_4xx(served, pairs):
    prompts, responses = pairs
    ok = RemoteScorer(served["url"] + "/secure", token=served["token"]).score(prompts[:2], responses[:2])
    assert len(ok) == 2
    with pytest.raises(RemoteScorerError, match="refused the request: HTTP 401: missing or wrong bearer token"):
        RemoteScorer(served["url"] + "/secure").score(prompts[:2], responses[:2])
    with pytest.raises(RemoteScorerError, match="HTTP 413: 'prompts' has 17 items; the limit is 16"):
        RemoteScorer(served["url"] + "/dense", batch_size=17).score(["p"] * 17, ["r"] * 17)


def test_connection_errors_are_retried_then_reported():
    scorer = RemoteScorer(f"http://127.0.0.1:{free_port()}", retries=2, backoff_s=0.01)
    with pytest.raises(RemoteScorerError, match="failed after 3 attempts; last error: ConnectionError"):
        scorer.score(["p"], ["r"])


def test_5xx_is_retried_until_the_server_answers():
    """A real loopback HTTP server that answers 503 twice (like a replica still starting), then scores."""
    calls = []

    class Flaky(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(body)
            ok = len(calls) > 2
            payload = json.dumps({"rewards": [float(len(r)) for r in body["responses"]]} if ok
                                 else {"detail": "starting"}).encode()
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        scorer = RemoteScorer(f"http://127.0.0.1:{server.server_address[1]}", retries=3, backoff_s=0.01)
        assert scorer.score(["p", "q"], ["ab", "abcd"]) == [2.0, 4.0]
        assert len(calls) == 3
        with pytest.raises(RemoteScorerError, match="failed after 1 attempts; last error: HTTP 503: starting"):
            calls.clear()
            RemoteScorer(f"http://127.0.0.1:{server.server_address[1]}", retries=0).score(["p"], ["r"])
    finally:
        server.shutdown()


def test_bad_arguments():
    with pytest.raises(ValueError, match="must start with http"):
        RemoteScorer("127.0.0.1:8000")
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        RemoteScorer("http://127.0.0.1:1").score(["a", "b"], ["c"])
