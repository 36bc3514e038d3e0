"""Ray Serve reward endpoint: any dense / merged UMM / unmerged MoE reward model, or an ensemble, over HTTP.

    cfg = parse_job_args(["--reward.proxy_path", "runs/x/rm_umm4/model"])
    serve.start(http_options=http_options(cfg.serve))
    serve.run(build_app(cfg), name="reward", route_prefix="/")

Routes (all JSON; see `protocol.py` for the request shapes and the exact validation):
    POST /, /score, /get_reward   OpenRLHF remote RM: {"query", "prompts"?, "labels"?} -> {"rewards", "scores"}
    POST /v1/score                {"prompts", "responses"} -> {"rewards", "scores"}
    GET  /health                  {"status": "ok", ...}; never needs the token (for load balancers)
An ensemble also answers "aggregate" (mean | wco | uwo), "members" (names) and "member_scores" [k][B].

Each text of a request is queued separately into `@serve.batch`, so a batch holds at most `serve.max_batch_size`
texts whatever the request sizes: bounded memory per forward pass, and small requests share batches.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import os
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve

from umm_ray.reward_source import proxy_source
from umm_ray.serve.protocol import Limits, RequestError, ScoreRequest, decode_body, parse_openrlhf, parse_pairs
from umm_ray.serve.service import RewardService, load_service

logger = logging.getLogger("umm_ray.serve")

TOKEN_ENV = "UMM_RAY_SERVE_TOKEN"  # read when serve.token is empty: keeps the secret off the command line
api = FastAPI(title="umm_ray reward model", docs_url=None, redoc_url=None, openapi_url=None)


@dataclass
class ServeSpec:
    """Everything a replica needs, resolved on the driver (so replicas never read CLI or env)."""

    path: str
    aggregate: str = "mean"
    uwo_lambda: float = 0.1
    max_len: int = 256
    device: str = "cpu"
    limits: Limits = field(default_factory=Limits)
    token: str = ""
    max_batch_size: int = 32
    batch_wait_timeout_s: float = 0.01
    torch_threads: int = 1
    trust_remote_code: bool = False
    chat_template: str = "auto"  # model.chat_template: the endpoint renders prompts as the policy and RM training did


def spec_from_config(cfg) -> ServeSpec:
    """Build the replica spec from a `Config` (reward.proxy[_path], ensemble.*, rm.max_len, serve.*,
    model.trust_remote_code, model.chat_template).

    reward.proxy_path is a `RewardSource`: an ensemble manifest may carry its aggregate ('#wco', '#uwo:0.3'), which
    wins over ensemble.aggregate / ensemble.uwo_lambda. An explicit reward.proxy kind is checked against the
    checkpoint (or finds the RM of that kind the stage graph trained), as PPO and BoN do.
    """
    s, r = cfg.serve, cfg.reward
    if r.proxy == "remote":
        raise ValueError("reward.proxy is 'remote': serve_rm serves a local reward model (set reward.proxy to auto "
                         "or the model's kind)")
    if r.proxy == "auto" and not r.proxy_path:
        raise ValueError("reward.proxy_path is empty: give the RM directory or ensemble manifest to serve")
    source, _ = proxy_source(cfg)
    if source.kind == "remote":
        raise ValueError(f"reward.proxy_path {str(source)!r} is an endpoint; serve a checkpoint or 'testbed'")
    return ServeSpec(
        path=source.location, aggregate=source.aggregate or cfg.ensemble.aggregate,
        uwo_lambda=cfg.ensemble.uwo_lambda if source.lam is None else source.lam,
        max_len=cfg.rm.max_len, device="cuda" if s.num_gpus > 0 else "cpu",
        limits=Limits(max_request_bytes=s.max_request_bytes, max_items=s.max_items_per_request,
                      max_chars=s.max_chars_per_item),
        token=s.token or os.environ.get(TOKEN_ENV, ""), max_batch_size=s.max_batch_size,
        batch_wait_timeout_s=s.batch_wait_timeout_s, torch_threads=max(1, int(s.num_cpus)),
        trust_remote_code=cfg.model.trust_remote_code, chat_template=cfg.model.chat_template)


def service_of(spec: ServeSpec) -> RewardService:
    """What a replica scores with: the RM(s) at spec.path, loaded with the spec's settings (no Ray Serve needed)."""
    return load_service(spec.path, spec.aggregate, spec.uwo_lambda, spec.max_len, spec.max_batch_size, spec.device,
                        spec.trust_remote_code, spec.chat_template)


def _error(status: int, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) before reading it all when it is larger than `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name="RewardModel")
@serve.ingress(api)
class RewardDeployment:
    """One replica: loads the reward model(s) once, answers scoring requests with dynamic batching."""

    def __init__(self, spec: ServeSpec):
        import torch  # heavy: ~1.5 s; the replica needs it, the process building the app does not

        torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.service: RewardService = service_of(spec)
        self._score_item.set_max_batch_size(spec.max_batch_size)
        self._score_item.set_batch_wait_timeout_s(spec.batch_wait_timeout_s)
        logger.info("serving %s (%d member(s), aggregate=%s)", spec.path, len(self.service.members),
                    self.service.how)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _score_item(self, items: list[tuple[str, str]]) -> list[tuple[float, list[float]]]:
        """Score queued (prompt, response) items together; returns (reward, member scores) per item."""
        prompts = [p for p, _ in items]
        responses = [r for _, r in items]
        # The forward pass is blocking; a worker thread keeps the event loop answering /health meanwhile.
        out = await asyncio.to_thread(self.service.score_all, prompts, responses)
        return [(out.rewards[i], [m[i] for m in out.member_scores]) for i in range(len(items))]

    def _authorize(self, request: Request) -> None:
        if not self.spec.token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.spec.token.encode()):
            raise RequestError(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")

    async def _answer(self, request: Request, openrlhf: bool) -> JSONResponse:
        try:
            self._authorize(request)
            data = decode_body(await _read_body(request, self.spec.limits.max_request_bytes), self.spec.limits)
            req = (parse_openrlhf(data, self.spec.limits, self.service.special_tokens) if openrlhf
                   else parse_pairs(data, self.spec.limits))
            return JSONResponse(await self._score_request(req))
        except RequestError as e:
            return _error(e.status, e.message)
        except Exception as e:  # a scoring failure must not take the replica down; say what broke
            logger.exception("scoring failed")
            return _error(500, f"scoring failed: {type(e).__name__}: {e}")

    async def _score_request(self, req: ScoreRequest) -> dict:
        results = await asyncio.gather(*[self._score_item((p, r)) for p, r in zip(req.prompts, req.responses)])
        rewards = [float(r) for r, _ in results]
        bad = [i for i, r in enumerate(rewards) if not math.isfinite(r)]
        if bad:
            raise RuntimeError(f"the reward model produced non-finite scores for items {bad[:10]}")
        body: dict = {"rewards": rewards, "scores": rewards}
        if len(self.service.members) > 1:
            body["aggregate"] = self.service.how
            body["members"] = self.service.names
            body["member_scores"] = [[float(m[j]) for _, m in results] for j in range(len(self.service.members))]
        return body

    @api.post("/")
    async def root(self, request: Request) -> JSONResponse:
        return await self._answer(request, openrlhf=True)

    @api.post("/score")
    async def score(self, request: Request) -> JSONResponse:
        return await self._answer(request, openrlhf=True)

    @api.post("/get_reward")
    async def get_reward(self, request: Request) -> JSONResponse:
        return await self._answer(request, openrlhf=True)

    @api.post("/v1/score")
    async def score_pairs(self, request: Request) -> JSONResponse:
        return await self._answer(request, openrlhf=False)

    @api.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "members": len(self.service.members), "aggregate": self.service.how}


def http_options(serve_cfg) -> dict:
    """Serve proxy options from `cfg.serve`: loopback unless `serve.host` says otherwise."""
    return {"host": serve_cfg.host, "port": serve_cfg.port}


def build_app(cfg, spec: ServeSpec | None = None):
    """The bound Serve application (autoscaling and replica resources from `cfg.serve`)."""
    s = cfg.serve
    if s.min_replicas > s.max_replicas:
        raise ValueError(f"serve.min_replicas={s.min_replicas} exceeds serve.max_replicas={s.max_replicas}")
    autoscaling = {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                   "initial_replicas": max(1, s.min_replicas),
                   "target_ongoing_requests": s.target_ongoing_requests}
    return RewardDeployment.options(
        autoscaling_config=autoscaling, max_ongoing_requests=s.max_ongoing_requests,
        ray_actor_options={"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
    ).bind(spec or spec_from_config(cfg))
