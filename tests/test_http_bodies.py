"""Unary upstream answers are read whole only up to a cap (shared/http_bodies.py), against a real loopback server."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from shared.errors import UpstreamProtocolError
from shared.http_bodies import read_capped


async def _server(size: int) -> TestServer:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(size // 1024):
            await response.write(b"x" * 1024)
        return response

    app = web.Application()
    app.router.add_get("/", answer)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


@pytest.mark.parametrize(("size", "cap", "ok"), [(8 * 1024, 8 * 1024, True), (9 * 1024, 8 * 1024, False)])
async def test_a_body_is_read_whole_up_to_its_cap(size: int, cap: int, ok: bool) -> None:
    """A chunked body of exactly the cap is returned whole; a kilobyte more is a protocol error."""
    server = await _server(size)
    try:
        async with aiohttp.ClientSession() as session, session.get(server.make_url("/")) as resp:
            if ok:
                assert await read_capped(resp, cap) == b"x" * size
            else:
                with pytest.raises(UpstreamProtocolError, match=f"over {cap} bytes"):
                    await read_capped(resp, cap)
    finally:
        await server.close()
