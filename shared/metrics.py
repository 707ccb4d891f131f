"""Metrics every service shares: Redis command latency and errors, and the `/metrics` handler.

Each service defines its own metrics in its `metrics.py`; this module holds only what all of them have.
`instrument_redis(client, "gateway")` times every command of one client, pipelines included, under
`kimi_redis_command_duration_seconds{service,command}`; connection failures and timeouts count in
`kimi_redis_errors_total{service}`. Redis' own error replies (BUSYGROUP, NOSCRIPT, …) are answers the code
handles, not an unhealthy Redis, so they are timed but not counted as errors.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeAlias

import redis.asyncio as aioredis
from prometheus_client import Counter, Histogram
from prometheus_client.aiohttp import make_aiohttp_handler
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.redis_client import PoolExhausted

#: Most commands take well under a millisecond on loopback; blocking reads (XREAD BLOCK) last seconds.
_REDIS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REDIS_COMMAND_DURATION = Histogram(
    "kimi_redis_command_duration_seconds",
    "Redis command round trip, retries included, by service and command (PIPELINE / MULTI for batches).",
    ["service", "command"],
    buckets=_REDIS_BUCKETS,
)
REDIS_ERRORS = Counter(
    "kimi_redis_errors_total",
    "Redis commands that failed on a connection error or timeout.",
    ["service"],
)

#: `app.router.add_get("/metrics", metrics_handler)`: prometheus-client's own aiohttp exposition handler.
metrics_handler = make_aiohttp_handler()

_Send: TypeAlias = Callable[..., Coroutine[Any, Any, Any]]
_UNHEALTHY = (RedisConnectionError, RedisTimeoutError, OSError)


def instrument_redis(client: aioredis.Redis, service: str) -> aioredis.Redis:
    """Time every command `client` sends (and every pipeline it builds) under the `service` label."""
    timers = _Timers(service)
    client.execute_command = _timed_command(client.execute_command, timers)  # type: ignore[method-assign]
    client.pipeline = _timed_pipelines(client.pipeline, timers)  # type: ignore[method-assign]
    return client


class _Timers:
    """One service's histogram children, looked up once per command name (`.labels` is not free)."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.errors = REDIS_ERRORS.labels(service=service)
        self._children: dict[object, Histogram] = {}

    def of(self, name: object) -> Histogram:
        child = self._children.get(name)
        if child is None:
            child = REDIS_COMMAND_DURATION.labels(service=self.service, command=_command_name(name))
            self._children[name] = child
        return child


def _timed_command(send: _Send, timers: _Timers) -> _Send:
    async def execute_command(*args: Any, **options: Any) -> Any:
        start = time.perf_counter()
        try:
            return await send(*args, **options)
        except _UNHEALTHY as exc:
            if not isinstance(exc, PoolExhausted):  # overload in this process, not Redis failing
                timers.errors.inc()
            raise
        finally:
            timers.of(args[0]).observe(time.perf_counter() - start)

    return execute_command


def _timed_pipelines(build: Callable[..., Pipeline], timers: _Timers) -> Callable[..., Pipeline]:
    def pipeline(transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        pipe = build(transaction, shard_hint)
        timer = timers.of("MULTI" if transaction else "PIPELINE")
        run = pipe.execute

        async def execute(raise_on_error: bool = True) -> list[Any]:
            result: list[Any] = await _observe(timers, timer, run(raise_on_error))
            return result

        pipe.execute = execute  # type: ignore[method-assign]
        return pipe

    return pipeline


async def _observe(timers: _Timers, timer: Histogram, call: Awaitable[Any]) -> Any:
    start = time.perf_counter()
    try:
        return await call
    except _UNHEALTHY as exc:
        if not isinstance(exc, PoolExhausted):  # overload in this process, not Redis failing
            timers.errors.inc()
        raise
    finally:
        timer.observe(time.perf_counter() - start)


def _command_name(name: object) -> str:
    """`XREADGROUP`, `XINFO GROUPS`…: redis-py passes the command as the first argument, str or bytes."""
    text = name.decode() if isinstance(name, bytes) else str(name)
    return text.upper()
