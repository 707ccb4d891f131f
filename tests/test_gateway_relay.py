"""The gateway in-process (aiohttp test server) on a real Redis, a scripted worker on the reply protocol."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis.asyncio as aioredis
import structlog
from aiohttp.test_utils import TestClient
from prometheus_client import REGISTRY

from gateway.app import create_app
from shared.keys import JOBS_STREAM, WORKERS_HASH, cancel_key
from shared.schema import (
    Citation,
    Done,
    ErrorEvent,
    Event,
    Job,
    Keepalive,
    Start,
    TextDelta,
    Usage,
    encode_events,
    job_decoder,
)
from shared.secret import Secret
from shared.settings import CommonSettings, GatewaySettings

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
HI = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}]}


async def announce_worker(redis: aioredis.Redis) -> None:
    """The scripted workers below stand in for a real one, so they heartbeat like one."""
    await redis.hset(WORKERS_HASH, "scripted", int(time.time() * 1000))


@pytest_asyncio.fixture
async def gateway(redis_url: str, aiohttp_client: Any, redis: aioredis.Redis) -> ClientFactory:
    """`await gateway(**settings_overrides)` → a test client of a gateway with small timeouts."""
    await announce_worker(redis)

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        settings = GatewaySettings(
            common=CommonSettings(redis_url=redis_url),
            keepalive_interval_s=5.0,
            idle_timeout_s=2.0,
            request_timeout_s=5.0,
        )
        client: TestClient[Any, Any] = await aiohttp_client(
            create_app(dataclasses.replace(settings, **overrides))
        )
        return client

    return factory


async def next_job(redis: aioredis.Redis, after: str = "0") -> tuple[str, Job]:
    """The next job on the job stream, as a worker would read it."""
    reply = await redis.xread({JOBS_STREAM: after}, block=5_000, count=1)
    entry_id, fields = reply[0][1][0]
    return entry_id.decode(), job_decoder.decode(fields[b"job"])


async def publish(redis: aioredis.Redis, job: Job, *batches: list[Event], pause_s: float = 0.0) -> None:
    for batch in batches:
        await redis.xadd(job.reply_key, {"e": encode_events(batch)})
        if pause_s:
            await asyncio.sleep(pause_s)


def worker(
    redis: aioredis.Redis, *batches: list[Event], delay_s: float = 0.0, pause_s: float = 0.0
) -> asyncio.Task[Job]:
    """A scripted worker: takes the next job, waits `delay_s`, publishes the batches."""

    async def run() -> Job:
        _, job = await next_job(redis)
        await asyncio.sleep(delay_s)
        await publish(redis, job, *batches, pause_s=pause_s)
        return job

    return asyncio.create_task(run())


def chunks(raw: bytes) -> list[Any]:
    """The data payloads of an SSE body: JSON objects, or the literal [DONE]."""
    out: list[Any] = []
    for frame in raw.decode().split("\n\n"):
        if frame.startswith("data: "):
            payload = frame[6:]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def test_stream_relays_events_as_openai_chunks(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """A streamed answer: SSE headers, the request id as x-request-id and in the job, exact chunks, [DONE]."""
    client = await gateway()
    task = worker(
        redis, [Start(account_id="acc1")], [TextDelta("Hel"), TextDelta("lo")], [Usage(4, 2), Done()]
    )
    resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    raw = await resp.read()
    job = await task
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert resp.headers["X-Accel-Buffering"] == "no"
    assert resp.headers["x-request-id"] == job.request.request_id
    assert job.reply_key == f"kimi:reply:{{{job.request.request_id}}}"
    assert job.request.deadline_s == pytest.approx(time.time() + 5.0, abs=2)
    data = chunks(raw)
    assert [c if c == "[DONE]" else c["choices"][0]["delta"] for c in data] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
        "[DONE]",
    ]
    assert {c["id"] for c in data[:-1]} == {f"chatcmpl-{job.request.request_id}"}
    assert data[-2]["choices"][0]["finish_reason"] == "stop"


async def test_non_stream_returns_one_completion(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """Non-stream: one JSON body with the whole text, citations inline, and the worker's usage."""
    client = await gateway()
    task = worker(
        redis, [Start(), Citation(1, "T", "https://t"), TextDelta("ok"), Usage(4, 2), Done("length")]
    )
    resp = await client.post("/v1/chat/completions", json={**HI, "model": "kimi-search"})
    body = await resp.json()
    await task
    assert resp.status == 200
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "【检索 1】 [T](https://t)\n\nok",
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


async def test_error_before_first_byte_keeps_its_status(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """An ErrorEvent before any content is an HTTP error in OpenAI's shape, with Retry-After on 429."""
    client = await gateway()
    task = worker(redis, [ErrorEvent("rate_limited", "every Kimi account is cooling", retry_after_s=42.4)])
    resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    await task
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "42"
    assert await resp.json() == {
        "error": {
            "message": "every Kimi account is cooling",
            "type": "rate_limit_error",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


async def test_error_status_from_the_worker_wins(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """An ErrorEvent's explicit status (e.g. 401 for a dead pass-through token) is the HTTP status."""
    client = await gateway()
    task = worker(redis, [ErrorEvent("upstream_auth", "the Kimi token was refused", status=401)])
    resp = await client.post("/v1/chat/completions", json=HI)
    await task
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "upstream_auth_failed"


async def test_error_after_first_byte_is_in_band(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """After content, an ErrorEvent becomes `data: {"error": …}` and the stream ends without [DONE]."""
    client = await gateway()
    task = worker(redis, [Start(), TextDelta("par")], [ErrorEvent("protocol", "Kimi's stream was cut")])
    resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    raw = await resp.read()
    await task
    assert resp.status == 200
    data = chunks(raw)
    assert data[-1] == {
        "error": {
            "message": "Kimi's stream was cut",
            "type": "server_error",
            "param": None,
            "code": "upstream_protocol_error",
        }
    }
    assert "[DONE]" not in data
    assert data[1]["choices"][0]["delta"] == {"content": "par"}


async def test_keepalive_comments_before_the_first_token(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """From the worker's first event (it holds an account) until the first token, SSE comment keep-alives flow
    every keepalive_interval_s; the 0.5 s before it stay silent (the status is not committed yet)."""
    client = await gateway(keepalive_interval_s=0.2)
    # Redis resolves BLOCK timeouts on its 100 ms clock, so keep-alives may run up to ~0.1 s late.
    task = worker(redis, [Start(), Keepalive()], [TextDelta("x"), Done()], delay_s=0.5, pause_s=1.0)
    resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    raw = await resp.read()
    await task
    head, _, rest = raw.partition(b"data: ")
    assert head.count(b": keep-alive\n\n") >= 3
    assert head == b": keep-alive\n\n" * head.count(b": keep-alive\n\n")
    assert rest.endswith(b"data: [DONE]\n\n")


async def test_idle_timeout_is_a_504_and_cancels_the_job(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """No worker reply within idle_timeout_s: 504 in OpenAI's shape, and the job's cancel key is set."""
    client = await gateway(idle_timeout_s=0.3)
    resp = await client.post("/v1/chat/completions", json=HI)
    assert resp.status == 504
    assert (await resp.json())["error"]["code"] == "timeout"
    _, job = await next_job(redis)
    assert await redis.get(cancel_key(job.request.request_id)) == b"1"
    assert resp.headers["x-request-id"] == job.request.request_id


async def test_stream_without_terminal_event_is_an_error(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """Content then silence: the stream ends with an in-band timeout error, never a made-up stop."""
    client = await gateway(idle_timeout_s=0.3)
    task = worker(redis, [Start(), TextDelta("half")])
    resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    data = chunks(await resp.read())
    await task
    assert data[-1]["error"]["code"] == "timeout"
    assert all(c == "[DONE]" or c.get("choices", [{}])[0].get("finish_reason") is None for c in data[:-1])


async def test_client_disconnect_sets_the_cancel_key(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """A client that leaves mid-stream makes the gateway set kimi:cancel:{job}."""
    client = await gateway(keepalive_interval_s=0.05)
    resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
    _, job = await next_job(redis)
    await publish(redis, job, [Start(), TextDelta("a")])
    await resp.content.readuntil(b"\n\n")
    resp.close()
    for _ in range(100):
        if await redis.exists(cancel_key(job.request.request_id)):
            break
        await asyncio.sleep(0.02)
    assert await redis.get(cancel_key(job.request.request_id)) == b"1"


async def test_bad_requests_in_openai_shape(gateway: ClientFactory) -> None:
    """400 with param, 404 model_not_found, 413, unknown route 404: all in OpenAI's error shape."""
    client = await gateway(max_body_bytes=2_000)
    resp = await client.post("/v1/chat/completions", data=b"{oops")
    assert resp.status == 400 and (await resp.json())["error"]["type"] == "invalid_request_error"
    resp = await client.post("/v1/chat/completions", json={"model": "kimi", "messages": []})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "messages"
    resp = await client.post("/v1/chat/completions", json={**HI, "model": "gpt-5"})
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "model_not_found"
    resp = await client.post("/v1/chat/completions", data=b"x" * 3_000)
    assert resp.status == 413 and (await resp.json())["error"]["code"] == "request_too_large"
    resp = await client.get("/v1/nope")
    assert resp.status == 404 and (await resp.json())["error"]["code"] == "not_found"


async def test_api_keys_gate_the_chat_route(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """With GATEWAY_API_KEYS, a missing or wrong key is 401; the right key means the pool (no account ids)."""
    client = await gateway(api_keys=(Secret("k1"),))
    resp = await client.post("/v1/chat/completions", json=HI)
    assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_api_key"
    resp = await client.post("/v1/chat/completions", json=HI, headers={"Authorization": "Bearer nope"})
    assert resp.status == 401
    task = worker(redis, [Start(), TextDelta("x"), Done()])
    resp = await client.post("/v1/chat/completions", json=HI, headers={"Authorization": "Bearer k1"})
    assert resp.status == 200
    assert (await task).request.account_ids is None


async def test_passthrough_tokens_become_ephemeral_accounts(
    gateway: ClientFactory, redis: aioredis.Redis, kimi_sim: Any
) -> None:
    """`Bearer T1,T2` of Kimi tokens restricts the job to those two accounts."""
    client = await gateway()
    one = kimi_sim.state.add_account("kimi_auth")
    two = kimi_sim.state.add_account("refresh_token")
    task = worker(redis, [Start(), TextDelta("x"), Done()])
    resp = await client.post(
        "/v1/chat/completions", json=HI, headers={"Authorization": f"Bearer {one.token},{two.token}"}
    )
    assert resp.status == 200
    ids = (await task).request.account_ids
    assert ids is not None and len(set(ids)) == 2


async def test_models_routes(gateway: ClientFactory) -> None:
    """GET /v1/models lists the table; /v1/models/{id} answers one or 404 model_not_found."""
    client = await gateway()
    listing = await (await client.get("/v1/models")).json()
    assert "kimi-k2.5-thinking" in [m["id"] for m in listing["data"]]
    one = await client.get("/v1/models/kimi-search-silent")
    assert (one.status, (await one.json())["id"]) == (200, "kimi-search-silent")
    missing = await client.get("/v1/models/gpt-5")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "model_not_found"


async def test_service_routes(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """/ping, /healthz, /readyz (503 until a fresh worker heartbeat), /metrics, / and /openapi.json."""
    client = await gateway()
    await redis.delete(WORKERS_HASH)
    assert await (await client.get("/ping")).text() == "pong"
    assert (await client.get("/healthz")).status == 200
    not_ready = await client.get("/readyz")
    assert (not_ready.status, await not_ready.json()) == (
        503,
        {"status": "no_worker", "redis": True, "live_workers": 0},
    )
    await redis.hset(
        "kimi:workers", mapping={"old": int((time.time() - 60) * 1000), "w1": int(time.time() * 1000)}
    )
    ready = await client.get("/readyz")
    assert (ready.status, await ready.json()) == (200, {"status": "ready", "redis": True, "live_workers": 1})
    assert "kimi_gateway_requests_total" in await (await client.get("/metrics")).text()
    assert "<h1>Kimi gateway</h1>" in await (await client.get("/")).text()
    spec = await (await client.get("/openapi.json")).json()
    assert "/v1/chat/completions" in spec["paths"]


async def test_readyz_is_503_when_redis_is_unreachable(aiohttp_client: Any) -> None:
    """/readyz answers 503 quickly when Redis does not answer."""
    settings = GatewaySettings(
        common=CommonSettings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.5)
    )
    client = await aiohttp_client(create_app(settings))
    resp = await client.get("/readyz")
    assert (resp.status, await resp.json()) == (
        503,
        {"status": "unavailable", "redis": False, "live_workers": 0},
    )


async def test_chat_is_503_when_redis_is_unreachable(aiohttp_client: Any) -> None:
    """A chat request with Redis down fails fast with 503 in OpenAI's shape."""
    settings = GatewaySettings(
        common=CommonSettings(redis_url="redis://127.0.0.1:1/0", redis_socket_timeout_s=0.5)
    )
    client = await aiohttp_client(create_app(settings))
    resp = await client.post("/v1/chat/completions", json=HI)
    assert resp.status == 503 and (await resp.json())["error"]["code"] == "service_unavailable"


async def test_stop_sequence_ends_the_stream_and_cancels_the_job(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """An OpenAI `stop` hit: finish chunk, usage chunk, [DONE], then the job's cancel key is set."""
    client = await gateway()
    body = {**HI, "stream": True, "stop": ["\n"], "stream_options": {"include_usage": True}}
    task = worker(redis, [Start(), TextDelta("one\ntwo")])
    resp = await client.post("/v1/chat/completions", json=body)
    data = chunks(await resp.read())
    job = await task
    assert [c if c == "[DONE]" else (c["choices"], c["usage"]) for c in data[1:]] == [
        ([{"index": 0, "delta": {"content": "one"}, "logprobs": None, "finish_reason": None}], None),
        ([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}], None),
        ([], {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}),
        "[DONE]",
    ]
    assert await redis.get(cancel_key(job.request.request_id)) == b"1"


async def test_max_tokens_ends_a_non_stream_answer_and_cancels_the_job(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """A non-stream answer cut at max_tokens returns at once with finish_reason length and cancels the job."""
    client = await gateway()
    task = worker(redis, [Start(), TextDelta("abcdefgh"), TextDelta("ijkl")])
    resp = await client.post("/v1/chat/completions", json={**HI, "max_tokens": 2})
    out = await resp.json()
    job = await task
    assert (out["choices"][0]["message"]["content"], out["choices"][0]["finish_reason"]) == (
        "abcdefgh",
        "length",
    )
    assert await redis.get(cancel_key(job.request.request_id)) == b"1"


async def test_no_live_worker_is_a_quick_503(gateway: ClientFactory, redis: aioredis.Redis) -> None:
    """Without a fresh worker heartbeat a chat request is refused at once with 503, and nothing is queued."""
    client = await gateway()
    await redis.delete(WORKERS_HASH)
    await redis.hset(WORKERS_HASH, "long-dead", int((time.time() - 3600) * 1000))
    started = time.monotonic()
    resp = await client.post("/v1/chat/completions", json=HI)
    body = await resp.json()
    assert resp.status == 503
    assert time.monotonic() - started < 1.0
    assert "python -m upstream_worker" in body["error"]["message"]
    assert await redis.xlen(JOBS_STREAM) == 0
    await announce_worker(redis)
    task = worker(redis, [Start(account_id="acc1")], [TextDelta("ok")], [Usage(1, 1), Done()])
    resp = await client.post("/v1/chat/completions", json=HI)
    assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "ok"
    await task


def requests_total(dialect: str, model: str, status: str) -> float:
    labels = {"dialect": dialect, "model": model, "status": status}
    return REGISTRY.get_sample_value("kimi_gateway_requests_total", labels) or 0.0


async def counted(dialect: str, model: str, status: str, expected: float) -> float:
    """The request counter once the handler has finished (it ends just after the client's last byte)."""
    for _ in range(100):
        if requests_total(dialect, model, status) >= expected:
            break
        await asyncio.sleep(0.01)
    return requests_total(dialect, model, status)


async def bad_entry(redis: aioredis.Redis, job: Job) -> None:
    """A reply entry no decoder accepts: the relay meets an exception it does not expect."""
    await redis.xadd(job.reply_key, {"e": b"not json"})


async def test_in_band_error_counts_its_status_and_bytes(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """A stream failed in-band counts the error's status (502), and the canonical line counts its bytes."""
    client = await gateway()
    before = requests_total("openai", "kimi", "502")
    task = worker(redis, [Start(), TextDelta("par")], [ErrorEvent("protocol", "Kimi's stream was cut")])
    with structlog.testing.capture_logs() as logs:
        resp = await client.post("/v1/chat/completions", json={**HI, "stream": True})
        raw = await resp.read()
        assert await counted("openai", "kimi", "502", before + 1) == before + 1
    await task
    assert resp.status == 200
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert (line["status"], line["error"], line["bytes"]) == (502, "protocol", len(raw))


async def test_unexpected_error_mid_stream_is_an_in_band_500(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """An unexpected exception after the headers ends the stream with the dialect's in-band error, logged once."""
    client = await gateway()
    before = requests_total("anthropic", "kimi", "500")

    task = worker(redis, [Start(), TextDelta("par")])
    body = {**HI, "max_tokens": 64, "stream": True}
    with structlog.testing.capture_logs() as logs:
        resp = await client.post("/v1/messages", json=body)  # returns once the first bytes are sent
        await bad_entry(redis, await task)
        raw = await resp.read()
        assert await counted("anthropic", "kimi", "500", before + 1) == before + 1
    assert resp.status == 200
    error = b'{"type":"error","error":{"type":"api_error","message":"Internal server error."}}'
    assert raw.endswith(b"event: error\ndata: " + error + b"\n\n")
    (failure,) = [entry for entry in logs if entry["event"] == "unhandled_error"]
    assert failure["request_id"] == resp.headers["x-request-id"]
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert (line["status"], line["error"]) == (500, "internal")


async def test_unexpected_error_before_headers_takes_the_route_dialect(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """An unexpected exception before any byte is a 500 in the route's dialect (Anthropic here, not OpenAI)."""
    client = await gateway()

    async def run() -> None:
        _, job = await next_job(redis)
        await bad_entry(redis, job)

    task = asyncio.create_task(run())
    resp = await client.post("/v1/messages", json={**HI, "max_tokens": 64})
    await task
    assert resp.status == 500
    assert await resp.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error."},
        "request_id": resp.headers["x-request-id"],
    }


@pytest.mark.parametrize(
    ("model", "label"),
    [
        ("kimi-silent-search-search", "kimi-search-silent"),
        ("0123456789abcdefghij", "kimiplus"),
        ("kimi-k2.5-instant", "kimi-k2.5-instant"),
    ],
)
async def test_model_metric_label_is_bounded(
    gateway: ClientFactory, redis: aioredis.Redis, model: str, label: str
) -> None:
    """The request counter labels a model by its canonical id (flags sorted once, Kimi+ ids as "kimiplus");
    the canonical log line keeps the id the client sent."""
    client = await gateway()
    before = requests_total("openai", label, "200")
    task = worker(redis, [Start(), TextDelta("x"), Done()])
    with structlog.testing.capture_logs() as logs:
        resp = await client.post("/v1/chat/completions", json={**HI, "model": model})
        assert resp.status == 200
        assert await counted("openai", label, "200", before + 1) == before + 1
    await task
    assert requests_total("openai", model, "200") == (before + 1 if model == label else 0.0)
    (line,) = [entry for entry in logs if entry["event"] == "request"]
    assert line["model"] == model
