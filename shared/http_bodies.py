"""Reading an upstream's whole answer with a cap: what a unary call may bring back is bounded like a stream's
frames and lines are (upstream_worker/kimi/envelope.py, sse.py)."""

from __future__ import annotations

import aiohttp

from shared.errors import UpstreamProtocolError

#: The largest answer of a unary call (a chat's creation, a file's detail, a refresh, a probe): they are a few
#: KB; past this an upstream (or whatever answers in its place) only grows our memory.
MAX_UNARY_BYTES = 4 * 1024 * 1024


async def read_capped(resp: aiohttp.ClientResponse, cap_bytes: int = MAX_UNARY_BYTES) -> bytes:
    """The whole body, or `UpstreamProtocolError` once it passes `cap_bytes`."""
    parts: list[bytes] = []
    size = 0
    while chunk := await resp.content.readany():
        size += len(chunk)
        if size > cap_bytes:
            raise UpstreamProtocolError(f"the upstream's answer is over {cap_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)
