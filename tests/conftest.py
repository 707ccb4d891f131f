"""Fixtures shared by every test: a real Redis (one per session, a clean database per test)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from shared.redis_server import RedisHandle, ensure_redis

pytest_plugins = ["tests.sim_fixtures", "tests.browser"]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisHandle]:
    """A real redis-server for the whole session: TEST_REDIS_URL if it answers, else a private one.

    TEST_REDIS_URL (not REDIS_URL) so that a developer's own Redis is never flushed by accident.
    """
    handle = ensure_redis(os.environ.get("TEST_REDIS_URL"))
    yield handle
    handle.stop()


@pytest.fixture
async def redis_url(redis_server: RedisHandle) -> AsyncIterator[str]:
    """The session Redis, its database emptied before the test."""
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushdb()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
