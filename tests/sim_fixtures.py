"""pytest fixtures that run the Kimi simulator (`kimi_sim`) as a real HTTP server on a free loopback port."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from kimi_sim.config import SimConfig
from kimi_sim.server import SimServer, start_sim

SimFactory = Callable[..., Awaitable[SimServer]]


@pytest_asyncio.fixture
async def kimi_sim_factory() -> AsyncIterator[SimFactory]:
    """`await kimi_sim_factory(**config_overrides)` → a started SimServer, stopped at teardown."""
    servers: list[SimServer] = []

    async def factory(**overrides: Any) -> SimServer:
        server = await start_sim(dataclasses.replace(SimConfig(), **overrides))
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.aclose()


@pytest_asyncio.fixture
async def kimi_sim(kimi_sim_factory: SimFactory) -> SimServer:
    """A simulator with the default SimConfig."""
    return await kimi_sim_factory()
