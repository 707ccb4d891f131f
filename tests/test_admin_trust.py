"""The admin surface's trust boundary: no state change on GET, JSON bodies only, who counts as a local caller,
path ids, and header bytes that are not UTF-8 — in-process against a real Redis and the Kimi simulator."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from kimi_sim.server import SimServer
from tests.test_admin_api import AUTH, settings_for
from tests.test_gateway_admin_proxy import common, gateway, servers, token_service
from token_service.app import create_app

__all__ = ["servers"]  # the fixture, imported for pytest

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def open_client(aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer) -> Client:
    """A token service with no ADMIN_API_KEY: only local callers are served."""
    return await aiohttp_client(create_app(settings_for(redis_url, kimi_sim.url, key=None), background=False))


@pytest.fixture
async def keyed_client(aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer) -> Client:
    return await aiohttp_client(create_app(settings_for(redis_url, kimi_sim.url), background=False))


async def _save(client: Client, kimi_sim: SimServer) -> str:
    resp = await client.post("/auth/save", json={"token": kimi_sim.state.add_account("kimi_auth").token})
    assert resp.status == 200, await resp.text()
    account_id: str = (await resp.json())["account_id"]
    return account_id


async def test_get_auth_clear_changes_nothing(open_client: Client, kimi_sim: SimServer) -> None:
    """GET /auth/clear (an <img src> on any page) answers 405 and every account stays; POST still clears."""
    await _save(open_client, kimi_sim)
    resp = await open_client.get("/auth/clear")
    assert resp.status == 405
    assert (await resp.json())["error"] == "GET /auth/clear changes nothing here: use POST /auth/clear"
    assert len((await (await open_client.get("/auth/status")).json())["accounts"]) == 1
    assert (await (await open_client.post("/auth/clear")).json())["removed"] == 1


async def test_admin_bodies_must_be_json(open_client: Client, kimi_sim: SimServer) -> None:
    """A text/plain body (what a page may send without a preflight) is a 415 and plants no account."""
    token = kimi_sim.state.add_account("kimi_auth").token
    resp = await open_client.post(
        "/auth/save", data=f'{{"token": "{token}"}}', headers={"Content-Type": "text/plain"}
    )
    assert resp.status == 415
    assert (await resp.json())["error"] == "admin bodies are JSON: send Content-Type: application/json"
    assert (await (await open_client.get("/auth/status")).json())["accounts"] == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example"},
        {"Host": "attacker.example:8001"},
        {"Origin": "http://attacker.example"},
        {"Origin": "http://localhost:3000"},
        {"Origin": "null"},
    ],
)
async def test_without_a_key_a_foreign_host_or_origin_is_not_local(
    open_client: Client, headers: dict[str, str]
) -> None:
    """With no ADMIN_API_KEY, a rebound Host name or another page's Origin gets 401 even from loopback."""
    resp = await open_client.get("/auth/status", headers=headers)
    assert resp.status == 401
    assert (await resp.json())["error"].startswith("ADMIN_API_KEY is not set")


async def test_path_ids_are_checked_against_the_index(
    keyed_client: Client, kimi_sim: SimServer, redis_url: str
) -> None:
    """DELETE /admin/accounts/index is a 404 and the index survives; an id with odd characters is a 400."""
    resp = await keyed_client.post(
        "/auth/save", json={"token": kimi_sim.state.add_account("kimi_auth").token}, headers=AUTH
    )
    account_id = (await resp.json())["account_id"]
    for name in ("index", "ready", "cooling"):
        resp = await keyed_client.delete(f"/admin/accounts/{name}", headers=AUTH)
        assert resp.status == 404, name
        assert (await resp.json())["error"] == f"no account {name!r}"
    resp = await keyed_client.post("/admin/accounts/a:b/disable", headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["param"] == "account_id"
    listed = (await (await keyed_client.get("/admin/accounts", headers=AUTH)).json())["accounts"]
    assert [a["id"] for a in listed] == [account_id]
    assert (await keyed_client.delete(f"/admin/accounts/{account_id}", headers=AUTH)).status == 200


async def _raw_status(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return int(status_line.split()[1])


@pytest.mark.parametrize("header", [b"Authorization: Bearer \xff\xfe", b"X-Admin-Key: \xc3\x28"])
async def test_admin_key_header_with_invalid_utf8_is_401(keyed_client: Client, header: bytes) -> None:
    """An admin key header whose bytes are not UTF-8 is a 401, not a 500."""
    request = b"GET /auth/status HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\nConnection: close\r\n\r\n"
    assert await _raw_status(keyed_client.port, request) == 401


async def test_through_the_gateway_only_its_own_origin_is_local(
    aiohttp_client: ClientFactory, servers: Any, redis_url: str, kimi_sim: SimServer
) -> None:
    """With no ADMIN_API_KEY, a page of the gateway's own origin manages accounts through it; another page's
    Origin, or a rebound Host, gets 401 from the token service behind it."""
    settings = common(redis_url, kimi_sim.url, key=None)
    client = await gateway(aiohttp_client, settings, await token_service(servers, settings))
    own = f"http://127.0.0.1:{client.port}"
    assert (await client.get("/auth/status", headers={"Origin": own})).status == 200
    named = {"Host": f"localhost:{client.port}", "Origin": f"http://localhost:{client.port}"}
    assert (await client.get("/auth/status", headers=named)).status == 200
    for headers in (
        {"Origin": "http://attacker.example"},
        {"Origin": f"http://127.0.0.1:{client.port + 1}"},
        {"Host": f"attacker.example:{client.port}"},
    ):
        resp = await client.post("/auth/clear", headers=headers)
        assert resp.status == 401, headers


def _jwt_with_raw_payload(payload: str) -> str:
    """A JWT-shaped token whose payload is exactly `payload` (numbers no JSON encoder would write)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    header = b64(b'{"alg":"HS512","typ":"JWT"}')
    return f"{header}.{b64(payload.encode())}.c2ln"


ODD_EXP = [
    '{"typ":"access","app_id":"kimi","sub":"u","jti":"j","exp":1000000000000000000000000000000}',
    '{"typ":"refresh","sub":"u","jti":"j","exp":-1000000000000000000000000000000}',
]


@pytest.mark.parametrize("payload", ODD_EXP)
async def test_odd_exp_claims_never_answer_500(keyed_client: Client, payload: str) -> None:
    """A token whose `exp` lies beyond what a datetime holds gets a 200 or a 4xx from /token/check, /auth/save and
    the account listing, never a 500."""
    token = _jwt_with_raw_payload(payload)
    check = await keyed_client.post("/token/check", json={"token": token})
    assert (check.status, await check.json()) == (200, {"live": False})
    saved = await keyed_client.post("/auth/save", json={"token": token}, headers=AUTH)
    assert saved.status in (200, 400), await saved.text()
    assert (await keyed_client.get("/admin/accounts", headers=AUTH)).status == 200
