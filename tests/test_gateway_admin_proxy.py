"""The gateway forwards the admin API to the token service (gateway/admin_proxy.py), which alone serves it.

The token service is the real one, in-process on a loopback port; where a test must see exactly what arrives,
an echo server stands at TOKEN_SERVICE_URL instead.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway import admin_proxy
from gateway.app import create_app
from kimi_sim.server import SimServer
from shared.secret import Secret
from shared.settings import CommonSettings, GatewaySettings, TokenServiceSettings
from tests.test_admin_api import non_loopback_address
from token_service.app import create_app as create_token_service
from token_service.client import ADMIN_MAX_BODY_BYTES

KEY = "admin-key-for-proxy-tests"
AUTH = {"X-Admin-Key": KEY}
Client = TestClient[web.Request, web.Application]
ClientFactory = Callable[..., Awaitable[Client]]


class Echo:
    """A stand-in token service that records each request and answers 207 with a body of its own."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.seen: list[dict[str, Any]] = []
        self.delay_s = delay_s
        self.app = web.Application(client_max_size=4 * ADMIN_MAX_BODY_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self.answer)

    async def answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "raw_path": request.raw_path,
                "headers": request.headers.copy(),
                "body": body,
                "remote": request.remote,
            }
        )
        await asyncio.sleep(self.delay_s)
        return web.Response(status=207, body=b"\x00echoed", headers={"Content-Type": "application/x-echo"})


@pytest.fixture
async def servers() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    """Starts apps on free loopback ports (their URLs); all are closed at teardown."""
    async with AsyncExitStack() as exits:

        async def serve(app: web.Application) -> str:
            server = TestServer(app, host="127.0.0.1")
            await server.start_server()
            exits.push_async_callback(server.close)
            return f"http://127.0.0.1:{server.port}"

        yield serve


def common(redis_url: str, kimi_url: str, key: str | None = KEY) -> CommonSettings:
    return CommonSettings(
        redis_url=redis_url, kimi_base_url=kimi_url, admin_api_key=Secret(key) if key else None
    )


async def token_service(serve: Callable[[web.Application], Awaitable[str]], settings: CommonSettings) -> str:
    return await serve(create_token_service(TokenServiceSettings(common=settings), background=False))


async def gateway(aiohttp_client: ClientFactory, settings: CommonSettings, token_service_url: str) -> Client:
    return await aiohttp_client(
        create_app(GatewaySettings(common=settings, token_service_url=token_service_url))
    )


async def exchange(
    session: aiohttp.ClientSession, method: str, url: str, **kw: Any
) -> tuple[int, str, bytes]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_the_admin_api_answers_through_the_gateway_as_the_token_service_does(
    aiohttp_client: ClientFactory, servers: Any, redis_url: str, kimi_sim: SimServer
) -> None:
    """Every admin answer through the gateway (status, content type, body) is the token service's own, byte for byte."""
    settings = common(redis_url, kimi_sim.url)
    direct = await token_service(servers, settings)
    client = await gateway(aiohttp_client, settings, direct)
    token = kimi_sim.state.add_account("kimi_auth").token
    saved = await client.post("/auth/save", json={"cookies": f"kimi-auth={token}"}, headers=AUTH)
    assert saved.status == 200
    account_id = (await saved.json())["account_id"]
    async with aiohttp.ClientSession() as session:
        for method, path, kw in [
            ("GET", "/admin/accounts", {"headers": AUTH}),
            ("GET", "/auth/status", {"headers": {"Authorization": f"Bearer {KEY}"}}),
            ("GET", "/auth/status", {}),
            ("POST", "/auth/save", {"json": {"token": "not a token"}, "headers": AUTH}),
            ("POST", "/auth/extract", {"data": b"{nope", "headers": AUTH}),
            ("DELETE", "/admin/accounts/nope", {"headers": AUTH}),
            ("POST", f"/admin/accounts/{account_id}/disable", {"headers": AUTH}),
            ("POST", f"/admin/accounts/{account_id}/enable", {"headers": AUTH}),
            ("POST", "/token/check", {"json": {"token": token}}),
            ("GET", "/admin/accounts?verbose=1", {"headers": AUTH}),
        ]:
            via_gateway = await exchange(session, method, str(client.make_url(path)), **kw)
            via_service = await exchange(session, method, direct + path, **kw)
            assert via_gateway == via_service, (method, path)
            assert via_gateway[1] == "application/json"
    assert json.loads(via_gateway[2])["accounts"][0]["state"] == "active"
    listing = await (await client.get("/admin/accounts", headers=AUTH)).json()
    assert [a["id"] for a in listing["accounts"]] == [account_id] and token not in json.dumps(listing)


async def test_method_path_query_body_and_the_deciding_headers_are_forwarded(
    aiohttp_client: ClientFactory, servers: Any, redis_url: str
) -> None:
    """The token service gets the caller's method, raw path + query, body and exactly the headers it decides
    on; the caller gets the token service's status, content type and body unchanged."""
    echo = Echo()
    client = await gateway(aiohttp_client, common(redis_url, "http://127.0.0.1:9"), await servers(echo.app))
    sent = {
        "Authorization": "Bearer caller-key",
        "X-Admin-Key": "admin-key",
        "Content-Type": "application/json",
        "Host": "admin.example:8000",
        "Origin": "https://console.example",
        "Forwarded": "for=198.51.100.1",
        "X-Forwarded-For": "198.51.100.1",
        "X-Real-IP": "198.51.100.1",
        "Cookie": "session=secret",
        "X-Api-Key": "client-key",
        "User-Agent": "caller/1.0",
    }
    resp = await client.post("/admin/accounts/abc123/probe?verbose=1&x=a%20b", data=b'{"a": 1}', headers=sent)
    assert (resp.status, resp.headers["Content-Type"], await resp.read()) == (
        207,
        "application/x-echo",
        b"\x00echoed",
    )
    [seen] = echo.seen
    assert (seen["method"], seen["raw_path"], seen["body"]) == (
        "POST",
        "/admin/accounts/abc123/probe?verbose=1&x=a%20b",
        b'{"a": 1}',
    )
    headers = seen["headers"]
    for name in admin_proxy.FORWARDED_HEADERS:
        assert headers.getall(name) == [sent[name]], name  # a loopback caller adds nothing to X-Forwarded-For
    assert "Cookie" not in headers and "X-Api-Key" not in headers and headers["User-Agent"] != "caller/1.0"
    get = await client.get("/auth/status")
    assert get.status == 207 and echo.seen[1]["method"] == "GET" and echo.seen[1]["body"] == b""
    assert "X-Forwarded-For" not in echo.seen[1]["headers"] and "Authorization" not in echo.seen[1]["headers"]


async def serve_on(app: web.Application, exits: AsyncExitStack, *hosts: str) -> dict[str, int]:
    """Serve `app` on each host (port 0); the port of each."""
    runner = web.AppRunner(app)
    await runner.setup()
    exits.push_async_callback(runner.cleanup)
    for host in hosts:
        await web.TCPSite(runner, host, 0).start()
    return {host: port for host, port, *_ in runner.addresses}


async def test_a_remote_caller_is_never_taken_for_a_loopback_one(
    servers: Any, redis_url: str, kimi_sim: SimServer
) -> None:
    """With ADMIN_API_KEY unset, a loopback caller of the gateway is served; a remote one gets the token
    service's 401, because the gateway appends its address to X-Forwarded-For."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    settings = common(redis_url, kimi_sim.url, key=None)
    echo = Echo()
    async with AsyncExitStack() as exits, aiohttp.ClientSession() as session:
        for service, check in (
            (await token_service(servers, settings), "trust"),
            (await servers(echo.app), "echo"),
        ):
            app = create_app(GatewaySettings(common=settings, token_service_url=service))
            ports = await serve_on(app, exits, address, "127.0.0.1")
            remote = f"http://{address}:{ports[address]}/auth/status"
            local = f"http://127.0.0.1:{ports['127.0.0.1']}/auth/status"
            if check == "trust":
                status, _, body = await exchange(session, "GET", remote)
                assert (status, json.loads(body)) == (
                    401,
                    {
                        "success": False,
                        "error": "ADMIN_API_KEY is not set, so admin routes answer only to loopback callers;"
                        " set it and send it as Authorization: Bearer <key> or X-Admin-Key",
                        "type": "authentication",
                        "param": None,
                    },
                )
                assert await exchange(session, "GET", local) == (
                    200,
                    "application/json",
                    b'{"has_token":false,"accounts":[]}',
                )
                relayed = await exchange(session, "GET", local, headers={"X-Forwarded-For": "127.0.0.1"})
                assert relayed[0] == 401
            else:
                await exchange(session, "GET", remote, headers={"X-Forwarded-For": "198.51.100.1"})
                await exchange(session, "GET", remote)
                assert [seen["headers"].getall("X-Forwarded-For") for seen in echo.seen] == [
                    [f"198.51.100.1, {address}"],
                    [address],
                ]


async def test_a_token_service_that_is_down_is_a_503_in_the_admin_shape(
    aiohttp_client: ClientFactory, redis_url: str, unused_tcp_port: int
) -> None:
    """No token service at TOKEN_SERVICE_URL: every admin route answers 503 `unavailable` in the admin shape."""
    client = await gateway(
        aiohttp_client, common(redis_url, "http://127.0.0.1:9"), f"http://127.0.0.1:{unused_tcp_port}"
    )
    for method, path in [("GET", "/auth/status"), ("POST", "/token/check"), ("DELETE", "/admin/accounts/a")]:
        resp = await client.request(method, path, json={"token": "x"}, headers=AUTH)
        assert (resp.status, resp.content_type, await resp.json()) == (
            503,
            "application/json",
            {
                "success": False,
                "error": "the token service is unreachable (TOKEN_SERVICE_URL); try again shortly",
                "type": "unavailable",
                "param": None,
            },
        )


async def test_a_token_service_slower_than_the_timeout_is_a_503(
    aiohttp_client: ClientFactory, servers: Any
) -> None:
    """A forward that outlives its timeout is given up: 503 `unavailable` saying how long it waited."""
    slow = Echo(delay_s=2.0)
    slow_url = await servers(slow.app)
    app = web.Application()

    async def forwarder(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            app[admin_proxy.FORWARDER] = admin_proxy.AdminForwarder(session, slow_url, timeout_s=0.2)
            yield

    app.cleanup_ctx.append(forwarder)
    admin_proxy.add_admin_routes(app)
    client = await aiohttp_client(app)
    resp = await client.get("/auth/status", headers=AUTH)
    assert (resp.status, await resp.json()) == (
        503,
        {
            "success": False,
            "error": "the token service did not answer within 0.2 s; try again shortly",
            "type": "unavailable",
            "param": None,
        },
    )
    assert len(slow.seen) == 1


async def test_admin_bodies_are_capped_at_the_token_services_limit(
    aiohttp_client: ClientFactory, servers: Any, redis_url: str
) -> None:
    """A body of exactly the admin limit is forwarded whole; one byte more (declared or chunked) is a 413
    in the admin shape, and the token service never sees it."""
    echo = Echo()
    client = await gateway(aiohttp_client, common(redis_url, "http://127.0.0.1:9"), await servers(echo.app))
    full = b"x" * ADMIN_MAX_BODY_BYTES
    assert (await client.post("/admin/accounts", data=full)).status == 207
    assert echo.seen[0]["body"] == full
    too_large = {
        "success": False,
        "error": f"body larger than {ADMIN_MAX_BODY_BYTES} bytes",
        "type": "too_large",
        "param": None,
    }

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * (ADMIN_MAX_BODY_BYTES // 3)

    for body in (io.BytesIO(full + b"x"), chunks()):
        resp = await client.post("/auth/save", data=body)
        assert (resp.status, await resp.json()) == (413, too_large)
    assert len(echo.seen) == 1
    assert ADMIN_MAX_BODY_BYTES == TokenServiceSettings().max_body_bytes == 1024 * 1024
