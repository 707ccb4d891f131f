"""`read_chunks`: Kimi's silence is timed from when the reader waits, one timer per stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.errors import UpstreamTimeout
from upstream_worker.kimi.transport import read_chunks

#: (pause before the chunk, chunk) per route.
SCRIPTS = {
    "/steady": [(0.0, b"a"), (0.1, b"b"), (0.1, b"c")],
    "/late-first": [(0.5, b"a"), (0.05, b"b")],
    "/stall": [(0.0, b"a"), (5.0, b"b")],
}


async def _serve(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    for pause_s, chunk in SCRIPTS[request.path]:
        await asyncio.sleep(pause_s)
        await response.write(chunk)
    return response


@pytest_asyncio.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application()
    for path in SCRIPTS:
        app.router.add_get(path, _serve)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url(""))


async def _read(url: str, first_byte_s: float, idle_s: float, hold_s: float = 0.0) -> list[bytes]:
    """Every chunk, the consumer holding each for `hold_s` (a slow Redis publish)."""
    out = []
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        async for chunk in read_chunks(resp, first_byte_s, idle_s):
            out.append(chunk)
            await asyncio.sleep(hold_s)
    return out


async def test_a_steady_stream_reads_whole(base: str) -> None:
    assert b"".join(await _read(base + "/steady", 1.0, 0.3)) == b"abc"


async def test_a_consumer_slower_than_the_idle_deadline_is_not_silence(base: str) -> None:
    """Time spent with a chunk is the consumer's: 0.4 s per chunk against a 0.3 s idle deadline still reads all."""
    assert b"".join(await _read(base + "/steady", 1.0, 0.3, hold_s=0.4)) == b"abc"


async def test_the_first_chunk_has_the_first_byte_deadline(base: str) -> None:
    """0.5 s before the first chunk passes a 1 s first-byte deadline though the idle deadline is 0.2 s."""
    assert b"".join(await _read(base + "/late-first", 1.0, 0.2)) == b"ab"
    with pytest.raises(UpstreamTimeout, match=r"^Kimi went silent for 0.2 s$"):
        await _read(base + "/late-first", 0.2, 0.2)


async def test_silence_mid_stream_times_out_on_time(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"^Kimi went silent for 0.3 s$"):
        await _read(base + "/stall", 1.0, 0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
