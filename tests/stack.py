"""The full stack for SDK tests: real Redis, the Kimi simulator, a gateway on TCP and a worker in-process.

`stack_factory(**gateway_overrides)` starts one (e.g. `keepalive_interval_s=0.5`); everything it started is
stopped at teardown. Use it by importing the fixture into a test module: `from tests.stack import stack_factory`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest_asyncio
import redis.asyncio as aioredis
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from shared.settings import CommonSettings, GatewaySettings, PoolSettings, WorkerSettings
from tests.kimi_sim.fixtures import SimServer
from token_service.kimi_auth import KimiAuthClient
from token_service.pool import AccountPool
from upstream_worker.resources import open_worker


@dataclass
class Stack:
    sim: SimServer
    redis: aioredis.Redis
    url: str
    settings: GatewaySettings

    async def add(self, kind: str = "kimi_auth") -> str:
        """A simulator account saved in the pool; its account id."""
        async with aiohttp.ClientSession() as session:
            pool = AccountPool(self.redis, PoolSettings(), KimiAuthClient(session, self.sim.url))
            account, _ = await pool.add(self.sim.state.add_account(kind).token)  # type: ignore[arg-type]
        return account.id

    async def sim_state(self) -> dict[str, Any]:
        """The simulator's `GET /__sim/state`: chats, deleted chats, streams."""
        async with aiohttp.ClientSession() as session, session.get(f"{self.sim.url}/__sim/state") as resp:
            state: dict[str, Any] = await resp.json()
        return state

    async def sim_requests(self, path: str = "") -> list[dict[str, Any]]:
        """The simulator's request log, only requests whose path contains `path`."""
        url = f"{self.sim.url}/__sim/requests"
        async with aiohttp.ClientSession() as session, session.get(url, params={"path": path}) as resp:
            log: list[dict[str, Any]] = await resp.json()
        return log

    async def arm(self, name: str, **params: Any) -> None:
        """Arm a simulator fault (tests/kimi_sim/README.md)."""
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{self.sim.url}/__sim/faults", json={"name": name, **params}) as resp,
        ):
            resp.raise_for_status()


StackFactory = Callable[..., Awaitable[Stack]]


@pytest_asyncio.fixture
async def stack_factory(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer
) -> AsyncIterator[StackFactory]:
    async with AsyncExitStack() as exits:

        async def start(**gateway_overrides: Any) -> Stack:
            common = CommonSettings(redis_url=redis_url, kimi_base_url=kimi_sim.url)
            settings = GatewaySettings(
                common=common, keepalive_interval_s=0.5, idle_timeout_s=30.0, request_timeout_s=40.0
            )
            settings = dataclasses.replace(settings, **gateway_overrides)
            server = TestServer(create_app(settings), host="127.0.0.1")
            await server.start_server()
            exits.push_async_callback(server.close)
            worker_settings = WorkerSettings(
                common=common,
                pool=PoolSettings(max_concurrency_per_account=1, lease_ttl_s=30),
                concurrency=4,
                consumer_name=f"sdk-{uuid.uuid4().hex[:6]}",
                heartbeat_interval_s=0.1,
                connect_timeout_s=2.0,
                first_byte_timeout_s=30.0,
                idle_timeout_s=30.0,
            )
            worker = await exits.enter_async_context(open_worker(worker_settings))
            task = asyncio.create_task(worker.run())

            async def stop() -> None:
                worker.stop()
                await asyncio.wait_for(task, 10)

            exits.push_async_callback(stop)
            return Stack(kimi_sim, redis, f"http://127.0.0.1:{server.port}", settings)

        yield start
