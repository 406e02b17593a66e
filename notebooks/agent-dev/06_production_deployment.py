# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 · Production deployment: an agent behind a real API
#
# A model that answers in a notebook is not yet a service. This notebook builds the
# service around it with FastAPI, piece by piece, runs it on 127.0.0.1 with uvicorn and
# checks every piece over HTTP:
#
# 1. request and response models, input checks;
# 2. typed errors, retries with backoff, a circuit breaker;
# 3. rate limiting with `X-RateLimit-*` headers (in Valkey when `REDIS_URL` is set);
# 4. per-user budgets;
# 5. authentication with Keycloak-style JWTs, and CORS;
# 6. Prometheus metrics with token usage;
# 7. a task queue over NATS JetStream: `POST` returns a task id, a status endpoint;
# 8. `/health` and `/ready` (the model, the vector DB, NATS), a trace per request with
#    its user, and cost per user;
# 9. a load test with p50/p95/p99 and a latency histogram;
# 10. the Dockerfile, Deployment with probes, Service and route, generated for a
#     Thinkube cluster.
#
# FastAPI is the lesson here. agentcycle's own production app, `agentcycle app`
# (`agentcycle.app`), has these protections built in (named keys, per-key rates and
# token budgets, body and queue bounds, CORS, `/health`, `/ready`, traces); the
# templates deploy it. Read this notebook to see how such an app works, use
# `agentcycle app` (or `agentcycle new`) to ship one.
#
# **AI Lab image:** the agent-dev image (any Python 3.11+ kernel with
# `pip install "agentcycle[notebooks]"`).
# **Prerequisites:** none. Each service is the platform's when its variable is set
# (`LITELLM_ENDPOINT`, `QDRANT_URL`, `NATS_URL`, `REDIS_URL`, `LANGFUSE_*`,
# `MLFLOW_TRACKING_URI`), else agentcycle's embedded default: the bundled
# SmolLM2-135M-Instruct, Qdrant in local mode, an embedded NATS server, a local MLflow
# store. Keycloak and a Kubernetes cluster cannot run here: a locally generated RSA key
# stands in for Keycloak's signing key, and the manifests are validated offline, not
# applied.

# %% tags=["parameters"]
from agentcycle import lab

MAX_TOKENS = lab.sized(ci=24, full=128)  # per answer from the real model
RATE_LIMIT_PER_MINUTE = 5  # per user (small, so the demo reaches it)
BUDGET_USD_PER_DAY = {"bob": 0.0001, "*": 0.05}  # per user; "*" for everyone else
PRICE_USD_PER_1K_TOKENS = 0.002  # what the app charges per 1k tokens (set yours)
LOAD_REQUESTS = lab.sized(ci=200, full=2000)  # requests in the load test
LOAD_CONCURRENCY = lab.sized(ci=16, full=64)  # requests in flight at once

# %% [markdown]
# ## Setup: the services this notebook uses
#
# `lab.show_services` lists each service: the platform's (its variable is set) or the
# embedded default agentcycle uses instead. Besides the real chat model, a
# `ScriptedModel` (agentcycle's OpenAI-compatible test server, answering instantly from a
# script) stands in for the model where the lesson is the app, not the answers: failures
# on demand for the retries and the breaker, and the load test, which should measure the
# app rather than a 135M model on a shared CPU.

# %%
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import threading
import time
import uuid
from typing import Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled models only, never a download
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import jwt
import matplotlib.pyplot as plt
import mlflow
import openai
import uvicorn
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agentcycle import Settings
from agentcycle.observe import local_cost, span
from agentcycle.testing import Reply, ScriptedModel

settings = Settings()
settings.ensure_home()
services = lab.show_services(settings)
stack = contextlib.ExitStack()  # closed in the last cell
chat = stack.enter_context(lab.chat_endpoint(settings))
scripted = stack.enter_context(ScriptedModel(
    default="A landlord must return the deposit within 21 days (§ 11).", model="scripted"))
print(f"scripted model (stand-in for fast answers) at {scripted.base_url}")

# %% [markdown]
# ## 1. Request and response models, input checks
#
# Pydantic models are the API's contract: FastAPI validates every request body against
# them (a 422 names the field at fault), documents them in OpenAPI (`/docs`) and
# serialises the responses. `extra="forbid"` refuses unknown fields instead of ignoring
# them; bounds on sizes keep one request from taking the whole model.

# %%
class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(..., min_length=3, max_length=2000)
    max_tokens: int = Field(MAX_TOKENS, ge=1, le=256)

    @field_validator("question")
    @classmethod
    def _printable(cls, text: str) -> str:
        text = text.strip()
        if not text or any(ord(c) < 32 and c not in "\n\t" for c in text):
            raise ValueError("the question must be printable text")
        return text


class AskResponse(BaseModel):
    request_id: str
    user: str
    answer: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["queued"]
    status_url: str


class TaskStatus(BaseModel):
    task_id: str
    status: Literal["queued", "running", "done", "failed"]
    answer: str | None = None
    error: str | None = None


for body in ({"question": "How long to return a deposit?"}, {"question": "  "},
             {"question": "ok?", "max_tokens": 5000}, {"question": "hi there", "user": "x"}):
    try:
        print("valid:  ", AskRequest(**body).model_dump())
    except ValidationError as exc:
        print("refused:", "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors()))

# %% [markdown]
# ## 2. Typed errors, retries, a circuit breaker
#
# Every failure the API reports is an `APIError` subclass with its HTTP status and a
# stable `code`; one exception handler turns it into the same JSON body everywhere.
#
# A model call is retried when the failure is transient (connection lost, timeout, 429,
# 5xx), with exponential backoff and jitter, and never when the request itself is wrong
# (other 4xx). A request that still fails counts against a **circuit breaker**: after
# `threshold` failed requests in a row it *opens* and refuses at once for `cooldown_s`
# (no request piles onto a dead backend), then lets one trial request through
# (*half-open*): success closes it, failure opens it again. agentcycle's router does the
# same per backend (a cooldown and one recovery probe), shared by replicas in Valkey.

# %%
class APIError(Exception):
    status, code = 500, "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.headers = headers or {}


class ModelUnavailable(APIError):
    status, code = 503, "model_unavailable"


class CircuitOpen(ModelUnavailable):
    code = "circuit_open"


class RateLimited(APIError):
    status, code = 429, "rate_limited"


class BudgetExceeded(APIError):
    status, code = 429, "budget_exceeded"


class Unauthorized(APIError):
    status, code = 401, "unauthorized"


class NotFound(APIError):
    status, code = 404, "not_found"


class CircuitBreaker:
    def __init__(self, threshold: int = 3, cooldown_s: float = 10.0):
        self.threshold, self.cooldown_s = threshold, cooldown_s
        self.failures, self.opened_at = 0, None
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "open" if time.monotonic() - self.opened_at < self.cooldown_s else "half-open"

    def before_call(self) -> None:
        if self.state == "open":
            wait = self.cooldown_s - (time.monotonic() - self.opened_at)
            raise CircuitOpen(f"the model failed {self.failures} times in a row; "
                              f"retry in {wait:.0f} s", headers={"Retry-After": f"{wait:.0f}"})

    def succeeded(self) -> None:
        with self._lock:
            self.failures, self.opened_at = 0, None

    def failed(self) -> None:
        with self._lock:
            self.failures += 1
            if self.failures >= self.threshold or self.opened_at is not None:
                self.opened_at = time.monotonic()  # (re)open: a failed trial too


TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
             openai.InternalServerError)


async def complete(client: openai.AsyncOpenAI, model: str, question: str, max_tokens: int,
                   breaker: CircuitBreaker, attempts: int = 3, backoff_s: float = 0.2):
    """One chat completion with retries, behind the breaker: (text, usage, attempts)."""
    breaker.before_call()
    for attempt in range(1, attempts + 1):
        try:
            reply = await client.chat.completions.create(
                model=model, max_tokens=max_tokens, temperature=0,
                messages=[{"role": "system", "content": "Answer in one or two sentences."},
                          {"role": "user", "content": question}])
        except TRANSIENT as exc:
            last = exc
            if attempt < attempts:  # 0.2 s, 0.4 s ... each stretched by up to 2x jitter
                await asyncio.sleep(backoff_s * 2 ** (attempt - 1) * (1 + random.random()))
        except openai.APIStatusError as exc:  # our request is wrong: retrying won't help
            raise APIError(f"the model refused the request: {exc.message}") from None
        else:
            breaker.succeeded()
            return reply.choices[0].message.content or "", reply.usage, attempt
    breaker.failed()
    raise ModelUnavailable(f"the model failed {attempts} attempts: {type(last).__name__}")


async def breaker_demo() -> None:
    client = openai.AsyncOpenAI(base_url=scripted.base_url, api_key="none", max_retries=0)
    breaker = CircuitBreaker(threshold=2, cooldown_s=1.0)
    scripted.add(Reply(status=503), Reply(status=503))  # two failures, then the default
    text, _, attempts = await complete(client, "scripted", "deposit?", 16, breaker)
    print(f"transient 503s: answered on attempt {attempts}: {text[:40]!r}")
    scripted.rule = lambda request: Reply(status=503, content="backend down")
    for n in range(4):
        before = len(scripted.requests)
        try:
            await complete(client, "scripted", "deposit?", 16, breaker)
        except APIError as exc:
            print(f"request {n + 1}: {exc.status} {exc.code:18} breaker={breaker.state:9} "
                  f"model calls={len(scripted.requests) - before}")
    scripted.rule = None  # the backend recovers
    await asyncio.sleep(1.1)
    print(f"after the cooldown the breaker is {breaker.state}")
    await complete(client, "scripted", "deposit?", 16, breaker)
    print(f"a trial request succeeded: breaker={breaker.state}")
    await client.close()


await breaker_demo()

# %% [markdown]
# Two failed requests (three attempts each) opened the breaker; the next requests were
# refused without calling the model at all (`model calls=0`) until the cooldown ended.
#
# ## 3. Rate limiting, shared in Valkey
#
# A fixed one-minute window per user: each request increments the user's counter, and
# over the limit the API answers 429 with `Retry-After`. Every response carries
# `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`, so clients can
# slow down before they are refused.
#
# Where the counter lives matters once the app has replicas: counted per process, three
# replicas admit three times the limit. agentcycle's router state
# (`agentcycle.router.shared_state.open_state`) keeps the counters in Valkey when
# `REDIS_URL` (or `CACHE_URL`, what the platform gives a deployed app) is set, one atomic
# `INCR` per request that every replica shares, and in this process otherwise; the
# router's own `rate_limit` policy uses the same call.

# %%
from agentcycle.router.shared_state import open_state

limits_state = open_state(settings)
print(f"rate-limit counters and budgets: {limits_state.describe()}"
      + ("" if limits_state.shared else " (set REDIS_URL to share them between replicas)"))


async def rate_limit(app_name: str, user: str) -> dict[str, str]:
    """The rate-limit headers for this request; raises RateLimited over the limit."""
    count, reset_s = await limits_state.acount(f"{app_name}:user:{user}", 60.0)
    headers = {"X-RateLimit-Limit": str(RATE_LIMIT_PER_MINUTE),
               "X-RateLimit-Remaining": str(max(0, RATE_LIMIT_PER_MINUTE - count)),
               "X-RateLimit-Reset": str(math.ceil(reset_s))}
    if count > RATE_LIMIT_PER_MINUTE:
        raise RateLimited(f"{RATE_LIMIT_PER_MINUTE} requests a minute per user",
                          headers={**headers, "Retry-After": str(math.ceil(reset_s))})
    return headers


# %% [markdown]
# ## 4. Per-user budgets
#
# Each answer costs its tokens at `PRICE_USD_PER_1K_TOKENS` (for a hosted model, its
# provider's price; for the bundled model, what you charge back) plus the machine's time
# at `AGENTCYCLE_ENERGY_USD_PER_HOUR`. A user's spend is added up per UTC day in the same
# router state (Valkey or this process), and a user over their budget is refused with
# 429 `budget_exceeded` until midnight UTC.

# %%
def cost_usd(prompt_tokens: int, completion_tokens: int, latency_s: float) -> float:
    return ((prompt_tokens + completion_tokens) / 1000 * PRICE_USD_PER_1K_TOKENS
            + local_cost(latency_s, settings.energy_usd_per_hour))


def seconds_to_midnight_utc() -> int:
    return 86400 - int(time.time()) % 86400


async def check_budget(app_name: str, user: str) -> None:
    spent = await limits_state.aspent_today(f"{app_name}:user:{user}")
    budget = BUDGET_USD_PER_DAY.get(user, BUDGET_USD_PER_DAY["*"])
    if spent >= budget:
        raise BudgetExceeded(f"{user} spent ${spent:.6f} of ${budget:.6f} today",
                             headers={"Retry-After": str(seconds_to_midnight_utc())})


# %% [markdown]
# ## 5. Authentication (Keycloak JWTs) and CORS
#
# On the platform, users sign in with Keycloak, and the API receives
# `Authorization: Bearer <JWT>`: a token signed with the realm's RSA key, carrying the
# user (`sub`, `preferred_username`), the issuer, the audience and an expiry. The API
# verifies it against the realm's public keys (its JWKS,
# `<keycloak>/realms/<realm>/protocol/openid-connect/certs`; with PyJWT,
# `jwt.PyJWKClient(url)` fetches and caches them). Keycloak cannot run here: a
# locally generated RSA key and JWKS stand in for the realm's, and `issue_token` for
# Keycloak's token endpoint. The verification code is the same.
#
# CORS decides which *browser* origins may call the API (a UI on another host):
# FastAPI's `CORSMiddleware` answers the preflight `OPTIONS` request and adds
# `Access-Control-Allow-Origin` for allowed origins only.

# %%
ISSUER = "https://keycloak.example.thinkube.com/realms/thinkube"  # stand-in realm
AUDIENCE = "agent-api"
KEY_ID = "lab-signing-key"
realm_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(realm_key.public_key()))
JWKS = {"keys": [{**public_jwk, "kid": KEY_ID, "use": "sig", "alg": "RS256"}]}


def issue_token(user: str, minutes: float = 10, key=realm_key, **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": user, "preferred_username": user,
               "iat": now, "exp": now + int(minutes * 60), **claims}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": KEY_ID})


def verify_token(token: str) -> dict:
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        jwk = next((k for k in JWKS["keys"] if k["kid"] == kid), None)
        if jwk is None:
            raise Unauthorized(f"unknown signing key {kid!r}")
        return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=AUDIENCE,
                          issuer=ISSUER, options={"require": ["exp", "sub", "iss", "aud"]})
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from None


async def current_user(authorization: str | None = Header(None)) -> str:
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send Authorization: Bearer <token>",
                           headers={"WWW-Authenticate": "Bearer"})
    return verify_token(token)["preferred_username"]


forged = issue_token("alice", key=rsa.generate_private_key(public_exponent=65537,
                                                           key_size=2048))
for label, token in [("valid", issue_token("alice")), ("expired", issue_token("alice", -1)),
                     ("forged", forged), ("wrong audience", issue_token("alice", aud="x"))]:
    try:
        print(f"{label:15} -> user {verify_token(token)['preferred_username']}")
    except Unauthorized as exc:
        print(f"{label:15} -> 401 {exc}")

# %% [markdown]
# ## 6. Prometheus metrics with token usage
#
# The app counts requests by route and status, times them in a histogram, and counts
# tokens and cost per user; `prometheus_client` serves them at `/metrics` in the text
# format Prometheus scrapes (on the platform, a `ServiceMonitor` or the pod's
# `prometheus.io/scrape` annotation points Prometheus at it). Each app gets its own
# registry, so two apps in one process keep separate numbers.

# %%
from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("agent_requests_total", "HTTP requests",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("agent_request_seconds", "Request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.tokens = Counter("agent_llm_tokens_total", "Model tokens", ["user", "kind"],
                              registry=self.registry)
        self.cost = Counter("agent_cost_usd_total", "Cost charged", ["user"],
                            registry=self.registry)


# %% [markdown]
# ## 7. A task queue over NATS
#
# Long answers should not hold an HTTP request open. `POST /v1/tasks` publishes the task
# to a JetStream work-queue stream and answers `202` with a task id at once; a worker
# (here inside the app; in production any number of worker pods, one queue) takes tasks,
# runs the model and writes each task's state to a JetStream key-value bucket, which
# `GET /v1/tasks/{id}` reads. Unlike FastAPI's `BackgroundTasks` (lost on a restart,
# visible to one replica only), a task survives the API pod and any replica can report
# on it. NATS is the platform's (`NATS_URL`) or the embedded server (`nats-server` from
# its wheel, started under agentcycle's data dir).
#
# A task is acknowledged only when it is finished: a worker that dies mid-task leaves it
# to be delivered again. While a task runs, the worker tells JetStream it is still busy
# (`in_progress()`, every 15 s), or a task longer than the consumer's `ack_wait` would
# be delivered a second time and answered twice; after `max_deliver` deliveries a
# failing task is given up instead of retried forever.

# %%
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, KeyValueConfig, RetentionPolicy, StreamConfig
from nats.js.errors import KeyNotFoundError

from agentcycle.messaging import connect, nats_session

nats_url = stack.enter_context(nats_session(settings))
print(f"NATS at {nats_url}")


async def task_worker(app: FastAPI) -> None:
    """Take tasks from the queue one by one; their state goes to the key-value bucket."""
    queue = await app.state.js.pull_subscribe(app.state.subject, durable="workers",
                                              config=ConsumerConfig(ack_wait=60,
                                                                    max_deliver=3))
    while True:
        try:
            messages = await queue.fetch(1, timeout=1)
        except NatsTimeout:
            continue
        for message in messages:
            task = json.loads(message.data)
            await app.state.kv.put(task["id"], TaskStatus(
                task_id=task["id"], status="running").model_dump_json().encode())
            busy = asyncio.create_task(still_working(message))
            try:
                result = await answer(app, task["user"], AskRequest(**task["request"]))
                state = TaskStatus(task_id=task["id"], status="done", answer=result.answer)
            except APIError as exc:
                state = TaskStatus(task_id=task["id"], status="failed", error=str(exc))
            finally:
                busy.cancel()
            await app.state.kv.put(task["id"], state.model_dump_json().encode())
            await message.ack()  # only now: a worker that dies mid-task leaves it queued


async def still_working(message) -> None:
    while True:
        await asyncio.sleep(15)
        await message.in_progress()  # restarts the consumer's ack_wait for this task


# %% [markdown]
# ## 8. The app: health, readiness, a trace per request, cost per user
#
# `create_agent_app` puts the pieces together. Two probes follow the platform's health
# contract: `/health` says the process is alive (the liveness probe: no dependency is
# checked, so a database outage never restarts every pod), `/ready` checks what the app
# needs (the model, the vector DB, NATS) and answers 503 while any is missing, so
# Kubernetes sends no traffic to it (the readiness probe).
#
# Every answer is one trace (agentcycle's tracing: MLflow, and Langfuse too when
# `LANGFUSE_*` are set) tagged with the user; its model span carries the GenAI token
# attributes and the cost, so cost per user is a query over traces.

# %%
from agentcycle.examples.legal import LEGAL_COLLECTION
from agentcycle.rag import ChunkStore


async def answer(app: FastAPI, user: str, request: AskRequest) -> AskResponse:
    """The model's answer for one user: budget checked, traced, counted, charged."""
    await check_budget(app.title, user)
    started, request_id = time.perf_counter(), uuid.uuid4().hex[:12]
    with contextlib.ExitStack() as tracing:
        if app.state.traced:
            root = tracing.enter_context(span(f"{app.title} answer", "CHAIN", inputs={
                "question": request.question}, attributes={"user.id": user,
                                                          "request.id": request_id}))
            mlflow.update_current_trace(user=user, tags={"app": app.title})
            model_span = tracing.enter_context(span("chat completion", "CHAT_MODEL"))
        text, usage, _ = await complete(app.state.client, app.state.model, request.question,
                                        request.max_tokens, app.state.breaker)
        latency_s = time.perf_counter() - started
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cost = cost_usd(prompt, completion, latency_s)
        if app.state.traced:
            model_span.set_attributes({
                "gen_ai.request.model": app.state.model, "gen_ai.response.model":
                app.state.model, "gen_ai.usage.input_tokens": prompt,
                "gen_ai.usage.output_tokens": completion, "agentcycle.cost_usd": cost})
            root.set_outputs({"answer": text})
    await limits_state.aadd_spend(f"{app.title}:user:{user}", cost)
    app.state.metrics.tokens.labels(user, "prompt").inc(prompt)
    app.state.metrics.tokens.labels(user, "completion").inc(completion)
    app.state.metrics.cost.labels(user).inc(cost)
    return AskResponse(request_id=request_id, user=user, answer=text.strip(),
                       prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost,
                       latency_ms=round(latency_s * 1000, 1))


def create_agent_app(name: str, base_url: str, api_key: str, model: str,
                     cors_origins: list[str]) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key,
                                              max_retries=0, timeout=120)
        app.state.nc = await connect(nats_url, name=name)
        app.state.js = app.state.nc.jetstream()
        app.state.subject = f"agent.{name}.tasks"
        await app.state.js.add_stream(StreamConfig(
            name=f"TASKS_{name}", subjects=[app.state.subject],
            retention=RetentionPolicy.WORK_QUEUE))
        app.state.kv = await app.state.js.create_key_value(KeyValueConfig(
            bucket=f"task_status_{name}", ttl=3600))
        worker = asyncio.create_task(task_worker(app))
        yield
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)  # its fetch ends first
        # close, not drain: every put above was acknowledged, and drain() on the pull
        # consumer's subscription held each app's shutdown past 10 s.
        await app.state.nc.close()
        await app.state.client.close()

    app = FastAPI(title=name, version="1.0.0", lifespan=lifespan)
    app.state.model, app.state.traced = model, True
    app.state.breaker, app.state.metrics = CircuitBreaker(), Metrics()
    app.mount("/metrics", make_asgi_app(app.state.metrics.registry))
    app.add_middleware(CORSMiddleware, allow_origins=cors_origins,
                       allow_methods=["GET", "POST"],
                       allow_headers=["authorization", "content-type"],
                       expose_headers=["X-RateLimit-Limit", "X-RateLimit-Remaining",
                                       "X-RateLimit-Reset", "Retry-After"])

    @app.middleware("http")
    async def measure(request: Request, call_next):
        if int(request.headers.get("content-length") or 0) > 16 * 1024:
            return JSONResponse({"error": {"code": "too_large", "message":
                                           "bodies are limited to 16 KiB"}}, status_code=413)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = route.path if route is not None else "other"
        app.state.metrics.requests.labels(path, str(response.status_code)).inc()
        app.state.metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return JSONResponse({"error": {"type": type(exc).__name__, "code": exc.code,
                                       "message": str(exc)}},
                            status_code=exc.status, headers=exc.headers)

    async def admitted(response: Response, user: str = Depends(current_user)) -> str:
        response.headers.update(await rate_limit(name, user))
        return user

    @app.post("/v1/ask", response_model=AskResponse)
    async def ask(body: AskRequest, user: str = Depends(admitted)) -> AskResponse:
        return await answer(app, user, body)

    @app.post("/v1/tasks", response_model=TaskAccepted, status_code=202)
    async def submit(body: AskRequest, user: str = Depends(admitted)) -> TaskAccepted:
        await check_budget(name, user)  # refuse now, not in the worker later
        task_id = uuid.uuid4().hex
        await app.state.kv.put(task_id, TaskStatus(task_id=task_id, status="queued")
                               .model_dump_json().encode())
        await app.state.js.publish(app.state.subject, json.dumps(
            {"id": task_id, "user": user, "request": body.model_dump()}).encode())
        return TaskAccepted(task_id=task_id, status="queued",
                            status_url=f"/v1/tasks/{task_id}")

    @app.get("/v1/tasks/{task_id}", response_model=TaskStatus)
    async def task_status(task_id: str, user: str = Depends(current_user)) -> TaskStatus:
        try:
            entry = await app.state.kv.get(task_id)
        except KeyNotFoundError:
            raise NotFound(f"no task {task_id}") from None
        return TaskStatus.model_validate_json(entry.value)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "healthy", "component": "agent", "service": name}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        async def model() -> None:
            async with httpx.AsyncClient(timeout=3) as client:
                reply = await client.get(base_url.rstrip("/") + "/models",
                                         headers={"Authorization": f"Bearer {api_key}"})
                reply.raise_for_status()

        async def vector_db() -> None:
            await asyncio.to_thread(ChunkStore(settings, LEGAL_COLLECTION).require)

        async def nats() -> None:
            if not app.state.nc.is_connected:
                raise RuntimeError("not connected")

        checks = {}
        for check_name, check in (("model", model), ("vector db", vector_db),
                                  ("nats", nats)):
            try:
                await check()
                checks[check_name] = "ok"
            except Exception as exc:  # a probe reports, it never raises
                checks[check_name] = f"unavailable: {exc}"[:200]
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "not ready", "checks": checks},
                            status_code=200 if ok else 503)

    return app


# %% [markdown]
# ### Serving it
#
# uvicorn runs each app on 127.0.0.1, in a thread of this kernel: `agent` in front of the
# real chat model, `fast` in front of the scripted one. In a container uvicorn is the
# main process, on `0.0.0.0` (`uvicorn module:app --host 0.0.0.0 --port 8000`); the
# template's Dockerfile in section 10 runs agentcycle's own app that way
# (`agentcycle app`, uvicorn inside).

# %%
UI_ORIGIN = "https://agent-ui.example.thinkube.com"


class Served:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread."""

    def __init__(self, app: FastAPI):
        from agentcycle.serving.server import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "Served":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the app did not start on {self.url}")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


agent_app = create_agent_app("agent", chat.base_url, chat.api_key, chat.model, [UI_ORIGIN])
fast_app = create_agent_app("fast", scripted.base_url, "none", "scripted", [UI_ORIGIN])
agent = stack.enter_context(Served(agent_app))
fast = stack.enter_context(Served(fast_app))
http = stack.enter_context(httpx.Client(timeout=300))
alice = {"Authorization": f"Bearer {issue_token('alice')}"}
print(f"agent app at {agent.url} (the real model), fast app at {fast.url} (scripted)")
print(http.get(agent.url + "/health").json())

# %% [markdown]
# ### `/ready` follows the dependencies
#
# The vector DB check wants the legal collection the agent's retrieval would use. On a
# fresh data dir it is missing, so the app is *not ready* (503) and Kubernetes would
# keep it out of the Service; once the corpus is ingested it is ready.

# %%
ready = http.get(agent.url + "/ready")
print(ready.status_code, json.dumps(ready.json(), indent=1))
if ready.status_code != 200:
    from agentcycle.examples.legal import ensure_legal_collection

    ensure_legal_collection(settings)  # chunk, embed (MiniLM) and store the Act
    ready = http.get(agent.url + "/ready")
    print(ready.status_code, json.dumps(ready.json(), indent=1))

# %% [markdown]
# ### Asking, as a signed-in user
#
# One request to the real model: the response model, the rate-limit headers and the
# cost. Then the same question as a task over NATS: `202` with an id at once, and the
# status endpoint from `queued` (or `running`) to `done`.

# %%
reply = http.post(agent.url + "/v1/ask", headers=alice,
                  json={"question": "How long does a landlord have to return a deposit?"})
print(reply.status_code, {k: v for k, v in reply.headers.items() if k.startswith("x-rate")})
print(json.dumps(reply.json(), indent=1))

# %%
accepted = http.post(agent.url + "/v1/tasks", headers=alice,
                     json={"question": "Can a landlord keep the deposit for repairs?"})
print(accepted.status_code, accepted.json())
seen, deadline = [], time.monotonic() + 300
while time.monotonic() < deadline:
    state = http.get(agent.url + accepted.json()["status_url"], headers=alice).json()
    if not seen or seen[-1] != state["status"]:
        seen.append(state["status"])
    if state["status"] in ("done", "failed"):
        break
    time.sleep(0.2)
print(" -> ".join(seen), "|", state.get("answer") or state.get("error"))

# %% [markdown]
# ### Every refusal, over HTTP
#
# On the fast app (the scripted model, so refusals are not waiting on a slow model):
# no token, a forged token, a bad body, too large a body, a user over the rate limit,
# a user over budget, and CORS for an allowed and a foreign origin. Each refusal is
# the same JSON error shape with its status and code.

# %%
def show(label: str, response: httpx.Response) -> None:
    body = response.json() if response.content else {}
    code = body.get("error", {}).get("code") or (body.get("detail") and "invalid_body") or ""
    print(f"{label:34} {response.status_code} {code}")


ask = {"question": "How long does a landlord have to return a deposit?"}
show("no token", http.post(fast.url + "/v1/ask", json=ask))
show("forged token", http.post(fast.url + "/v1/ask", json=ask,
                               headers={"Authorization": f"Bearer {forged}"}))
show("blank question", http.post(fast.url + "/v1/ask", json={"question": " "}, headers=alice))
show("unknown field", http.post(fast.url + "/v1/ask", json={**ask, "x": 1}, headers=alice))
show("20 KiB body", http.post(fast.url + "/v1/ask", headers=alice,
                              json={"question": "x" * 20_000}))
carol = {"Authorization": f"Bearer {issue_token('carol')}"}
for n in range(RATE_LIMIT_PER_MINUTE + 1):
    limited = http.post(fast.url + "/v1/ask", json=ask, headers=carol)
    print(f"carol request {n + 1}: {limited.status_code} remaining="
          f"{limited.headers.get('x-ratelimit-remaining')} "
          f"retry-after={limited.headers.get('retry-after')}")
bob = {"Authorization": f"Bearer {issue_token('bob')}"}
for n in range(3):
    show(f"bob (budget ${BUDGET_USD_PER_DAY['bob']}) request {n + 1}",
         http.post(fast.url + "/v1/ask", json=ask, headers=bob))
for origin in (UI_ORIGIN, "https://evil.example.com"):
    preflight = http.options(fast.url + "/v1/ask", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    print(f"CORS preflight from {origin}: {preflight.status_code}, allow-origin="
          f"{preflight.headers.get('access-control-allow-origin')}")

# %% [markdown]
# ### Cost per user, from the traces
#
# Each answer above was one trace tagged with its user. A query over the trace store
# adds up tokens and cost per user: what a chargeback report or a per-user dashboard in
# Langfuse shows.

# %%
import litellm
import pandas as pd

from agentcycle.observe.tracing import setup_tracking

# MLflow prices model spans with LiteLLM's cost map, which knows neither "local" nor
# "scripted": without this it prints LiteLLM's provider list; our spans carry their cost.
litellm.suppress_debug_info = True
mlflow.flush_trace_async_logging()
traces = mlflow.search_traces(locations=[setup_tracking(settings)], return_type="list",
                              max_results=500)
rows = []
for trace in traces:
    user = (trace.info.trace_metadata or {}).get("mlflow.trace.user")
    for s in trace.data.spans:
        attributes = s.attributes or {}
        if user and "gen_ai.usage.input_tokens" in attributes:
            rows.append({"user": user, "app": (trace.info.tags or {}).get("app"),
                         "tokens": int(attributes["gen_ai.usage.input_tokens"])
                         + int(attributes["gen_ai.usage.output_tokens"]),
                         "cost_usd": float(attributes.get("agentcycle.cost_usd") or 0),
                         "seconds": (s.end_time_ns - s.start_time_ns) / 1e9})
per_user = (pd.DataFrame(rows).groupby(["user", "app"])
            .agg(answers=("tokens", "size"), tokens=("tokens", "sum"),
                 cost_usd=("cost_usd", "sum"), mean_s=("seconds", "mean")).round(6))
print(per_user.to_string())

# %% [markdown]
# ## 9. Load test: p50, p95, p99
#
# `httpx.AsyncClient` sends `LOAD_REQUESTS` requests, `LOAD_CONCURRENCY` at a time, from
# many signed-in users, to the fast app: the scripted model answers at once, so the
# numbers measure the API itself (JWT check, rate limit, budget, metrics, uvicorn) on
# this machine. Tracing is turned off for the run (sample 0%: production services trace
# a sample of requests at this rate); against the real model, latency is the model's
# generation time and throughput its batching, measured in the fine-tuning notebooks.
# Percentiles, not the mean: p99 is what one request in a hundred waits.

# %%
fast_app.state.traced = False
users = [f"load-{n:03d}" for n in range(max(1, LOAD_REQUESTS // 4))]  # under the rate limit
tokens = {user: issue_token(user) for user in users}


async def load_test() -> tuple[list[float], dict[int, int], float]:
    latencies, statuses = [], {}
    gate = asyncio.Semaphore(LOAD_CONCURRENCY)
    limits = httpx.Limits(max_connections=LOAD_CONCURRENCY)

    async with httpx.AsyncClient(base_url=fast.url, timeout=60, limits=limits) as client:
        async def one(n: int) -> None:
            user = users[n % len(users)]
            async with gate:
                started = time.perf_counter()
                response = await client.post("/v1/ask", json=ask, headers={
                    "Authorization": f"Bearer {tokens[user]}"})
                latencies.append(time.perf_counter() - started)
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(n) for n in range(LOAD_REQUESTS)))
    return latencies, statuses, time.perf_counter() - started


latencies, statuses, wall_s = await load_test()
fast_app.state.traced = True
ms = sorted(1000 * x for x in latencies)
cuts = statistics.quantiles(ms, n=100)
print(f"{LOAD_REQUESTS} requests, {LOAD_CONCURRENCY} in flight: {LOAD_REQUESTS / wall_s:.0f} "
      f"requests/s; status codes {statuses}")
print(f"p50 {cuts[49]:.1f} ms   p95 {cuts[94]:.1f} ms   p99 {cuts[98]:.1f} ms   "
      f"max {ms[-1]:.1f} ms")

figure, axis = plt.subplots(figsize=(8, 3.5))
axis.hist(ms, bins=40, color="#4c72b0")
for value, label in ((cuts[49], "p50"), (cuts[94], "p95"), (cuts[98], "p99")):
    axis.axvline(value, color="#c44e52", linestyle="--")
    axis.text(value, axis.get_ylim()[1] * 0.9, f" {label}", color="#c44e52")
axis.set(xlabel="latency (ms)", ylabel="requests",
         title=f"POST /v1/ask, {LOAD_CONCURRENCY} concurrent, scripted model")
plt.tight_layout()
plt.show()

# %% [markdown]
# The same numbers are in the app's Prometheus metrics, next to the token counters:
# Prometheus computes the percentiles from the histogram buckets
# (`histogram_quantile(0.99, rate(agent_request_seconds_bucket[5m]))`).

# %%
scrape = http.get(fast.url + "/metrics/").text
wanted = ("agent_requests_total{", "agent_llm_tokens_total{user=\"load-000\"",
          "agent_request_seconds_bucket{le=\"0.05\",route=\"/v1/ask\"",
          "agent_request_seconds_count", "agent_cost_usd_total{user=\"bob\"")
print("\n".join(line for line in scrape.splitlines() if line.startswith(wanted)))

# %% [markdown]
# ## 10. Dockerfile, Deployment, probes, Service, route
#
# On Thinkube an app is a repository with a `Dockerfile` and a `thinkube.yaml`; the
# platform generates the Kubernetes manifests from it and ArgoCD applies them. agentcycle
# does the same offline: `agentcycle new tkt-rag-agent DIR` renders an agent project
# from its template (the protected `agentcycle app` in a container), and `agentcycle
# deploy --dry-run` renders `k8s/` from `thinkube.yaml` and validates it against the
# Kubernetes schemas without touching a cluster (`agentcycle deploy` then pushes to
# Gitea and ArgoCD). Here through the same library calls.

# %%
import tempfile
from pathlib import Path

import yaml

from agentcycle.deploy import DeployOptions, deploy
from agentcycle.templates import new_project

workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
project = new_project("tkt-rag-agent", workdir / "legal-agent", settings=settings)
report = deploy(workdir / "legal-agent", DeployOptions(domain="example.thinkube.com"),
                dry_run=True)
project_dir = workdir / "legal-agent"
print(f"rendered {len(report.files)} files into k8s/:", ", ".join(sorted(
    Path(f).name for f in report.files)))
print("\n--- Dockerfile (its build and run steps) ---")
print("\n".join(line for line in (project_dir / "Dockerfile").read_text().splitlines()
                if line.startswith(("FROM", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "CMD"))))

# %%
def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((project_dir / "k8s" / name).read_text()) if d]


deployment = next(d for d in documents("deployments.yaml") if d["kind"] == "Deployment")
container = deployment["spec"]["template"]["spec"]["containers"][0]
print("--- Deployment: the container, its resources and probes ---")
print(yaml.safe_dump({key: container[key] for key in (
    "name", "image", "ports", "resources", "readinessProbe", "livenessProbe",
    "startupProbe") if key in container}, sort_keys=False))
print("--- Service ---")
print(yaml.safe_dump(documents("services.yaml")[0]["spec"], sort_keys=False))
print("--- route (Gateway API HTTPRoute) ---")
print(yaml.safe_dump(documents("ingress.yaml")[0]["spec"], sort_keys=False))

# %% [markdown]
# The platform's `thinkube.yaml` names one health path (`health: /health`), and the
# generated startup, liveness and readiness probes all ask it: Kubernetes waits for the
# process to start, restarts it when it stops answering, and routes to it while it
# answers. `/ready` (section 8) is what a readiness probe should ask when the app
# depends on other services; the descriptor has no field for it yet, so here `/ready`
# serves monitoring. The Service gives the pods one stable address inside the cluster,
# and the HTTPRoute publishes it on the platform's gateway under the app's host name.
#
# ## Clean up
#
# Stop both apps, the model servers, the NATS server (when embedded) and remove the
# generated project.

# %%
stack.close()
print("stopped: the apps, the model servers and the embedded NATS server")
