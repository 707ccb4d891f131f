"""HTTP plumbing shared by both drivers: open a streaming response with deadlines, read it chunk by chunk.

Deadlines: `connect_s` to open the TCP connection (pool waits excluded), `first_byte_s` until the
response headers and the first body bytes, then `idle_s` between two chunks. aiohttp's own errors are
translated at this
boundary: before the body they mean Kimi is unreachable, inside the body that the stream was cut.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from shared.errors import GatewayError, UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable
from shared.http_bodies import MAX_UNARY_BYTES, read_capped
from upstream_worker.kimi.failures import http_error

#: Turns a non-2xx answer (status, body, Retry-After header) into its exception; each upstream has its own.
HttpErrorMapper = Callable[[int, bytes, str | None], GatewayError]

#: An error body larger than this is not worth reading.
MAX_ERROR_BODY_BYTES = 64 * 1024


@asynccontextmanager
async def open_stream(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    connect_s: float,
    first_byte_s: float,
    data: bytes | None = None,
    json: Any = None,
    error: HttpErrorMapper = http_error,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """A 2xx response whose body is still unread; any other status is raised as its `shared.errors` error."""
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_s)
    try:
        async with asyncio.timeout(first_byte_s):
            resp = await session.request(method, url, headers=headers, data=data, json=json, timeout=timeout)
    except TimeoutError as exc:
        raise UpstreamTimeout(f"Kimi sent no response within {first_byte_s:g} s") from exc
    except aiohttp.ClientError as exc:
        raise UpstreamUnavailable(f"Kimi is unreachable ({type(exc).__name__})") from exc
    try:
        if resp.status >= 300:
            raise error(resp.status, await _error_body(resp), resp.headers.get("Retry-After"))
        yield resp
    finally:
        if resp.content.at_eof():
            resp.release()
        else:
            resp.close()  # a half-read body cannot go back to the pool


async def _error_body(resp: aiohttp.ClientResponse) -> bytes:
    try:
        async with asyncio.timeout(5.0):
            return await resp.content.read(MAX_ERROR_BODY_BYTES)
    except (TimeoutError, aiohttp.ClientError):
        return b""


async def read_chunks(
    resp: aiohttp.ClientResponse, first_byte_s: float, idle_s: float
) -> AsyncIterator[bytes]:
    """The body as it arrives; ends at EOF. Raises UpstreamTimeout when Kimi goes silent too long."""
    content = resp.content
    wait_s = first_byte_s
    while True:
        try:
            async with asyncio.timeout(wait_s):
                chunk = await content.readany()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"Kimi went silent for {wait_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamProtocolError(f"Kimi's stream broke off ({type(exc).__name__})") from exc
        if not chunk:
            return
        wait_s = idle_s
        yield chunk


async def request_json(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    connect_s: float,
    timeout_s: float,
    json: Any = None,
) -> bytes:
    """A unary call: the 2xx body, or the call's error raised."""
    async with open_stream(
        session, method, url, headers=headers, connect_s=connect_s, first_byte_s=timeout_s, json=json
    ) as resp:
        try:
            async with asyncio.timeout(timeout_s):
                return await read_capped(resp, MAX_UNARY_BYTES)
        except TimeoutError as exc:
            raise UpstreamTimeout(f"Kimi did not answer within {timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"Kimi's answer broke off ({type(exc).__name__})") from exc
