"""The gateway's trust boundary: client credentials, pass-through tokens and their bounds, against a real
Redis (a scripted worker stands in for the upstream where the test is about the gateway alone)."""

from __future__ import annotations

import asyncio

import pytest

from shared.secret import Secret
from tests.test_gateway_relay import ClientFactory, gateway

__all__ = ["gateway"]

KEY = Secret("k1")


async def raw_status(port: int, request: bytes) -> int:
    """The status code of one raw HTTP/1.1 exchange (for bytes no client library sends)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe", b"x-api-key: \xc3\x28"])
async def test_a_client_key_with_invalid_utf8_is_401(gateway: ClientFactory, header: bytes) -> None:
    """A client key header whose bytes are not UTF-8 is a 401, not a 500."""
    client = await gateway(api_keys=(KEY,))
    request = b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\nConnection: close\r\n\r\n"
    assert await raw_status(client.port, request) == 401
