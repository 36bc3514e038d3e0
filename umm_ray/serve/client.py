"""`RemoteScorer`: a Scorer that calls a reward endpoint over HTTP (PPO / BoN's `remote` reward kind).

    scorer = RemoteScorer("http://127.0.0.1:8000", token="...", batch_size=64)
    scorer.score(prompts, responses)          # -> list[float], in order

It posts `{"prompts", "responses"}` to `<url>/v1/score` in chunks of `batch_size`. Connection errors, timeouts and
5xx / 429 answers are retried with exponential backoff (the server may be starting, scaling or overloaded); a 4xx
answer is the caller's mistake, so it raises `RemoteScorerError` at once with the server's message.
"""

from __future__ import annotations

import time

import requests


class RemoteScorerError(RuntimeError):
    """The endpoint refused the request (4xx) or stayed unreachable after every retry; the message says which."""


RETRY_STATUS = (429, 500, 502, 503, 504)


class RemoteScorer:
    """A `Scorer` backed by a umm_ray (or any compatible) reward endpoint.

    Args:
        url: base URL of the endpoint, e.g. "http://127.0.0.1:8000" (the route `/v1/score` is appended).
        token: bearer token, if the endpoint requires one.
        batch_size: pairs per HTTP request (keep <= the server's `serve.max_items_per_request`).
        timeout_s: per-request timeout. retries: attempts after the first. backoff_s: first retry delay (doubles).
    """

    def __init__(self, url: str, token: str = "", batch_size: int = 64, timeout_s: float = 120.0,
                 retries: int = 5, backoff_s: float = 0.5):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"reward.remote_url must start with http:// or https://, got {url!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.url = url.rstrip("/") + "/v1/score"
        self.batch_size, self.timeout_s, self.retries, self.backoff_s = batch_size, timeout_s, retries, backoff_s
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        """One reward per (prompt, response) pair, in order; chunks of `batch_size` per HTTP request."""
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        out: list[float] = []
        for s in range(0, len(prompts), self.batch_size):
            chunk = {"prompts": prompts[s:s + self.batch_size], "responses": responses[s:s + self.batch_size]}
            rewards = self._post(chunk)["rewards"]
            if len(rewards) != len(chunk["prompts"]):
                raise RemoteScorerError(f"{self.url} returned {len(rewards)} rewards for {len(chunk['prompts'])} "
                                        "pairs")
            out.extend(float(r) for r in rewards)
        return out

    def _post(self, body: dict) -> dict:
        """POST with retries on connection errors / timeouts / 5xx / 429; raise at once on other 4xx."""
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                resp = self.session.post(self.url, json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as e:
                last = f"{type(e).__name__}: {e}"
                continue
            if resp.status_code in RETRY_STATUS:
                last = f"HTTP {resp.status_code}: {_detail(resp)}"
                continue
            if resp.status_code >= 400:
                raise RemoteScorerError(f"{self.url} refused the request: HTTP {resp.status_code}: {_detail(resp)}")
            return resp.json()
        raise RemoteScorerError(f"{self.url} failed after {self.retries + 1} attempts; last error: {last}")

    def close(self) -> None:
        self.session.close()


def _detail(resp: requests.Response) -> str:
    """The server's error message (`detail` of a JSON body), else the start of the body."""
    try:
        return str(resp.json().get("detail", resp.text[:300]))
    except ValueError:
        return resp.text[:300]
