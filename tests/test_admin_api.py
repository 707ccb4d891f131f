"""The admin token API of the token service, in-process, against a real Redis and the Kimi simulator."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from kimi_sim.server import SimServer
from kimi_sim.tokens import mint_jwt
from shared.secret import Secret, mask
from shared.settings import CommonSettings, PoolSettings, TokenServiceSettings
from token_service.admin import is_loopback
from token_service.app import ACCOUNTS, create_app

KEY = "admin-key-for-tests"
AUTH = {"Authorization": f"Bearer {KEY}"}

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
Client = TestClient[web.Request, web.Application]


def settings_for(redis_url: str, kimi_url: str, key: str | None = KEY) -> TokenServiceSettings:
    common = CommonSettings(
        redis_url=redis_url, kimi_base_url=kimi_url, admin_api_key=Secret(key) if key else None
    )
    return TokenServiceSettings(common=common, pool=PoolSettings(), max_body_bytes=4096)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer) -> Client:
    return await aiohttp_client(create_app(settings_for(redis_url, kimi_sim.url), background=False))


class Bodies:
    """Every response text seen by a test, to check that no token ever leaves the service."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def json(self, client: Client, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        resp = await client.request(method, path, **kw)
        text = await resp.text()
        self.texts.append(text)
        assert resp.status == status, text
        assert resp.content_type == "application/json"
        return await resp.json()

    def assert_no_secret(self, *tokens: str) -> None:
        for token in tokens:
            assert all(token not in text for text in self.texts)


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"X-Admin-Key": "wrong"}, {"Authorization": KEY}],
)
async def test_admin_routes_refuse_a_wrong_or_missing_key(client: Client, headers: dict[str, str]) -> None:
    """Every admin route answers 401 JSON without the right key, in either header."""
    for method, path in [
        ("GET", "/auth/status"),
        ("POST", "/auth/clear"),
        ("GET", "/admin/accounts"),
        ("POST", "/auth/save"),
        ("DELETE", "/admin/accounts/abc"),
    ]:
        resp = await client.request(method, path, headers=headers, json={})
        assert resp.status == 401
        body = await resp.json()
        assert body == {
            "success": False,
            "error": "admin key missing or wrong (Authorization: Bearer <key> or X-Admin-Key)",
            "type": "authentication",
            "param": None,
        }


async def test_admin_key_works_in_both_headers(client: Client) -> None:
    """Authorization: Bearer <key> and X-Admin-Key: <key> are both accepted."""
    assert (await client.get("/auth/status", headers=AUTH)).status == 200
    assert (await client.get("/auth/status", headers={"X-Admin-Key": KEY})).status == 200


async def test_without_a_key_loopback_callers_are_served(
    aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer
) -> None:
    """With ADMIN_API_KEY unset a loopback caller is served; only loopback addresses count as such."""
    client = await aiohttp_client(
        create_app(settings_for(redis_url, kimi_sim.url, key=None), background=False)
    )
    assert (await client.get("/auth/status")).status == 200
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("10.0.0.5") and not is_loopback(None) and not is_loopback("unix")


@pytest.mark.parametrize(
    "relayed",
    [{"X-Forwarded-For": "203.0.113.7"}, {"Forwarded": "for=203.0.113.7"}, {"X-Real-IP": "203.0.113.7"}],
)
async def test_without_a_key_a_relayed_loopback_caller_is_not_local(
    aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer, relayed: dict[str, str]
) -> None:
    """With ADMIN_API_KEY unset, a loopback peer that relays someone (a proxy header) gets 401, not the admin API."""
    client = await aiohttp_client(
        create_app(settings_for(redis_url, kimi_sim.url, key=None), background=False)
    )
    resp = await client.get("/auth/status", headers=relayed)
    assert resp.status == 401
    assert (await resp.json())["error"].startswith("ADMIN_API_KEY is not set, so admin routes answer only")
    assert (await client.post("/token/check", json={"token": "junk"}, headers=relayed)).status == 200


async def test_extract_hands_the_whole_token_back_to_an_admin(client: Client, kimi_sim: SimServer) -> None:
    """/auth/extract finds the token in a Cookie header dump and answers it whole, with token_info (as
    kimi-free-api-fix does); a caller without the admin key gets 401 and no token."""
    token = kimi_sim.state.add_account("kimi_auth", exp_in_s=3600).token
    bodies = Bodies()
    cookies = f"Cookie: _ga=GA1.1; kimi-auth={quote(token, safe='')}; theme=dark"
    body = await bodies.json(client, "POST", "/auth/extract", json={"cookies": cookies}, headers=AUTH)
    assert body["success"] is True and body["token"] == token
    assert body["token_info"]["kind"] == "kimi_auth" and body["token_info"]["remaining_hours"] == 1.0
    missing = await bodies.json(client, "POST", "/auth/extract", json={"cookies": "theme=dark"}, headers=AUTH)
    assert missing == {"success": False, "error": "No kimi-auth token found in the provided cookies string"}
    refused = await client.post("/auth/extract", json={"cookies": cookies})
    assert refused.status == 401 and token not in await refused.text()


async def test_only_extract_answers_a_whole_token(client: Client, kimi_sim: SimServer) -> None:
    """Saving, listing, probing and checking an account never answer its token, only a masked preview."""
    token = kimi_sim.state.add_account("kimi_auth", exp_in_s=3600).token
    bodies = Bodies()
    saved = await bodies.json(
        client, "POST", "/auth/save", json={"cookies": f"kimi-auth={token}"}, headers=AUTH
    )
    account_id = saved["account_id"]
    await bodies.json(client, "POST", "/admin/accounts", json={"token": token}, headers=AUTH)
    status = await bodies.json(client, "GET", "/auth/status", headers=AUTH)
    listed = await bodies.json(client, "GET", "/admin/accounts", headers=AUTH)
    await bodies.json(client, "POST", f"/admin/accounts/{account_id}/probe", headers=AUTH)
    await bodies.json(client, "POST", "/token/check", json={"token": token})
    assert status["accounts"][0]["preview"] == listed["accounts"][0]["preview"] == mask(token)
    bodies.assert_no_secret(token)


async def test_save_and_status_show_both_kinds_with_expiry(client: Client, kimi_sim: SimServer) -> None:
    """Saving a kimi-auth (as cookies) and a refresh_token (as token) lists both with their own exp."""
    kimi_auth = kimi_sim.state.add_account("kimi_auth", exp_in_s=7200)
    refresh = kimi_sim.state.add_account("refresh_token")
    bodies = Bodies()
    saved = await bodies.json(
        client, "POST", "/auth/save", json={"cookies": f"kimi-auth={kimi_auth.token}"}, headers=AUTH
    )
    assert saved["success"] is True and len(saved["account_id"]) == 12
    await bodies.json(client, "POST", "/auth/save", json={"token": f"Bearer {refresh.token}"}, headers=AUTH)
    status = await bodies.json(client, "GET", "/auth/status", headers=AUTH)
    assert status["has_token"] is True
    by_kind = {a["kind"]: a for a in status["accounts"]}
    assert by_kind["kimi_auth"]["user_id"] == kimi_auth.sub and by_kind["kimi_auth"]["exp"] == kimi_auth.exp
    assert by_kind["kimi_auth"]["expires_at"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(kimi_auth.exp)
    )
    assert by_kind["refresh_token"]["exp"] == refresh.exp
    assert by_kind["kimi_auth"]["state"] == "active" and by_kind["kimi_auth"]["hours_left"] == pytest.approx(
        2, 0.01
    )
    assert set(by_kind["kimi_auth"]) >= {
        "id",
        "seconds_left",
        "last_used_at",
        "last_error",
        "counters",
        "preview",
    }
    bodies.assert_no_secret(kimi_auth.token, refresh.token)


async def test_expired_and_garbage_tokens_get_clear_400s(client: Client) -> None:
    """An expired token, a non-JWT and a wrong type each answer 400 with a message naming the problem."""
    expired = mint_jwt(
        {"typ": "access", "app_id": "kimi", "sub": "u", "jti": "j", "exp": int(time.time()) - 60}
    )
    bodies = Bodies()
    body = await bodies.json(client, "POST", "/auth/save", 400, json={"token": expired}, headers=AUTH)
    assert body["error"].startswith("token is already expired (exp ") and body["param"] == "token"
    body = await bodies.json(client, "POST", "/auth/save", 400, json={"token": "not a token"}, headers=AUTH)
    assert body["error"] == "not a JWT: expected three dot-separated parts"
    body = await bodies.json(client, "POST", "/auth/save", 400, json={"cookies": 12}, headers=AUTH)
    assert body["param"] == "cookies" and "Expected `str | null`, got `int`" in body["error"]
    body = await bodies.json(client, "POST", "/auth/extract", 400, json={}, headers=AUTH)
    assert body["param"] == "cookies"
    unknown = mint_jwt({"typ": "id", "sub": "u"})
    body = await bodies.json(client, "POST", "/auth/save", 400, json={"token": unknown}, headers=AUTH)
    assert body == {
        "success": False,
        "error": "unsupported token type 'id': expected a kimi-auth (typ=access, app_id=kimi) or a refresh_token"
        " (typ=refresh) or an official API key (sk-…)",
        "type": "invalid_request",
        "param": "token",
    }
    body = await bodies.json(client, "POST", "/auth/save", 400, data=b"{nope", headers=AUTH)
    assert body["error"] == "the body is not valid JSON"
    body = await bodies.json(client, "POST", "/auth/save", 413, data=b"x" * 5000, headers=AUTH)
    assert body["type"] == "too_large"
    bodies.assert_no_secret(expired)


async def test_clear_removes_every_account_by_post_and_get(client: Client, kimi_sim: SimServer) -> None:
    """POST /auth/clear removes all accounts; GET is kept for compatibility."""
    for _ in range(2):
        await client.post(
            "/auth/save", json={"token": kimi_sim.state.add_account("kimi_auth").token}, headers=AUTH
        )
    assert (await (await client.post("/auth/clear", headers=AUTH)).json())["removed"] == 2
    await client.post(
        "/auth/save", json={"token": kimi_sim.state.add_account("kimi_auth").token}, headers=AUTH
    )
    assert (await (await client.get("/auth/clear", headers=AUTH)).json())["removed"] == 1
    assert await (await client.get("/auth/status", headers=AUTH)).json() == {
        "has_token": False,
        "accounts": [],
    }


async def test_token_check_reports_liveness(client: Client, kimi_sim: SimServer) -> None:
    """/token/check is live for a working refresh_token and kimi-auth, not for garbage or a revoked token."""
    refresh = kimi_sim.state.add_account("refresh_token")
    kimi_auth = kimi_sim.state.add_account("kimi_auth")
    revoked = kimi_sim.state.add_account("kimi_auth")
    revoked.revoked = True
    bodies = Bodies()
    for token, live in [
        (refresh.token, True),
        (kimi_auth.token, True),
        (revoked.token, False),
        ("junk", False),
    ]:
        assert await bodies.json(client, "POST", "/token/check", json={"token": token}) == {"live": live}
    assert nothing_stored(await bodies.json(client, "GET", "/admin/accounts", headers=AUTH))
    bodies.assert_no_secret(refresh.token, kimi_auth.token)


def nothing_stored(listing: dict[str, Any]) -> bool:
    return listing == {"accounts": []}


async def test_admin_accounts_import_disable_enable_probe_remove(client: Client, kimi_sim: SimServer) -> None:
    """A newline-separated import adds many accounts; disable, enable, probe and remove act on one."""
    tokens = [
        kimi_sim.state.add_account("kimi_auth").token,
        kimi_sim.state.add_account("refresh_token").token,
    ]
    text = f"# my accounts\n{tokens[0]}\n\nkimi-auth={tokens[1]}\nnot-a-token\n"
    bodies = Bodies()
    added = await bodies.json(client, "POST", "/admin/accounts", json={"text": text}, headers=AUTH)
    assert [a["kind"] for a in added["added"]] == ["kimi_auth", "refresh_token"]
    assert added["errors"] == [{"line": 3, "error": "not a JWT: expected three dot-separated parts"}]
    first = added["added"][0]["account_id"]
    disabled = await bodies.json(client, "POST", f"/admin/accounts/{first}/disable", headers=AUTH)
    assert disabled["account"]["state"] == "disabled"
    enabled = await bodies.json(client, "POST", f"/admin/accounts/{first}/enable", headers=AUTH)
    assert enabled["account"]["state"] == "active"
    probed = await bodies.json(client, "POST", f"/admin/accounts/{first}/probe", headers=AUTH)
    assert probed["result"] == "ok"
    all_probed = await bodies.json(client, "POST", "/admin/accounts/probe", headers=AUTH)
    assert set(all_probed["results"].values()) == {"ok"} and len(all_probed["results"]) == 2
    await bodies.json(client, "DELETE", f"/admin/accounts/{first}", headers=AUTH)
    missing = await bodies.json(client, "DELETE", f"/admin/accounts/{first}", 404, headers=AUTH)
    assert missing["error"] == f"no account '{first}'"
    listing = await bodies.json(client, "GET", "/admin/accounts", headers=AUTH)
    assert [a["kind"] for a in listing["accounts"]] == ["refresh_token"]
    bodies.assert_no_secret(*tokens)


async def test_expiry_gauge_matches_each_accounts_exp(client: Client, kimi_sim: SimServer) -> None:
    """/metrics exposes each account's token exp as its expiry gauge, and counts accounts by state."""
    accounts = [
        kimi_sim.state.add_account("kimi_auth", exp_in_s=3600),
        kimi_sim.state.add_account("refresh_token"),
    ]
    ids = []
    for account in accounts:
        saved = await (await client.post("/auth/save", json={"token": account.token}, headers=AUTH)).json()
        ids.append(saved["account_id"])
    await client.post(f"/admin/accounts/{ids[1]}/disable", headers=AUTH)
    text = await (await client.get("/metrics")).text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    for account_id, account in zip(ids, accounts, strict=True):
        labels = (("account", account_id), ("kind", account.kind))
        assert samples[("kimi_account_token_expiry_timestamp_seconds", labels)] == account.exp
        assert account.token not in text
    assert samples[("kimi_accounts", (("state", "active"),))] == 1
    assert samples[("kimi_accounts", (("state", "disabled"),))] == 1
    transition = (("from_state", "active"), ("reason", "admin"), ("to_state", "disabled"))
    assert samples[("kimi_account_state_transitions_total", transition)] >= 1


async def test_ephemeral_accounts_stay_out_of_the_account_gauges(client: Client, kimi_sim: SimServer) -> None:
    """Pass-through tokens are stored as ephemeral accounts but never counted nor given an expiry gauge."""
    stored = kimi_sim.state.add_account("kimi_auth", exp_in_s=3600)
    passthrough = kimi_sim.state.add_account("kimi_auth", exp_in_s=1800)
    saved = await (await client.post("/auth/save", json={"token": stored.token}, headers=AUTH)).json()
    [ephemeral_id] = await client.app[ACCOUNTS].add_ephemeral([passthrough.token])
    text = await (await client.get("/metrics")).text()
    expiry = {
        sample.labels["account"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "kimi_account_token_expiry_timestamp_seconds"
    }
    assert expiry == {saved["account_id"]: stored.exp}
    assert ephemeral_id != saved["account_id"]
    assert 'kimi_accounts{state="active"} 1.0' in text


async def raw_exchange(client: Client, head: bytes, parts: list[bytes]) -> tuple[int, Any]:
    """Send the head, then each part as its own TCP write after a short pause; (status, JSON body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        for part in parts:
            await asyncio.sleep(0.05)
            writer.write(part)
            await writer.drain()
        answer = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def request_head(extra: str) -> bytes:
    return (
        "POST /auth/save HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


async def test_a_body_sent_in_several_writes_is_read_whole(client: Client, kimi_sim: SimServer) -> None:
    """A JSON body that arrives in several TCP writes after the headers is read to its end, not cut short."""
    token = kimi_sim.state.add_account("kimi_auth").token
    body = json.dumps({"token": token}).encode()
    parts = [body[:10], body[10:40], body[40:]]
    status, answer = await raw_exchange(client, request_head(f"Content-Length: {len(body)}\r\n"), parts)
    assert status == 200, answer
    assert answer["success"] is True and answer["created"] is True


async def test_a_chunked_body_over_the_cap_is_refused_with_413(client: Client) -> None:
    """A chunked body (no Content-Length) whose writes together pass max_body_bytes answers 413."""
    chunk = b'{"token": "' + b"x" * 2989
    parts = [
        b"%x\r\n%s\r\n" % (len(chunk), chunk),
        b"%x\r\n%s\r\n" % (len(chunk), b"y" * len(chunk)),
        b"0\r\n\r\n",
    ]
    status, answer = await raw_exchange(client, request_head("Transfer-Encoding: chunked\r\n"), parts)
    assert status == 413
    assert answer == {
        "success": False,
        "error": "body larger than 4096 bytes",
        "type": "too_large",
        "param": None,
    }


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (the one its default route leaves from)."""
    candidates: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        probe.connect(("192.0.2.1", 9))  # a UDP connect sends nothing; it only picks the source address
        candidates.append(probe.getsockname()[0])
    with contextlib.suppress(OSError):
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    return next((a for a in candidates if not ipaddress.ip_address(a).is_loopback), None)


async def test_without_a_key_a_remote_caller_gets_401(redis_url: str, kimi_sim: SimServer) -> None:
    """With ADMIN_API_KEY unset, a real request from a non-loopback address gets 401 JSON; loopback gets 200."""
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    runner = web.AppRunner(create_app(settings_for(redis_url, kimi_sim.url, key=None), background=False))
    await runner.setup()
    try:
        remote_site = web.TCPSite(runner, address, 0)
        local_site = web.TCPSite(runner, "127.0.0.1", 0)
        await remote_site.start()
        await local_site.start()
        ports = {host: port for host, port, *_ in runner.addresses}
        remote_port, local_port = ports[address], ports["127.0.0.1"]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{address}:{remote_port}/auth/status") as resp:
                assert resp.status == 401
                assert await resp.json() == {
                    "success": False,
                    "error": "ADMIN_API_KEY is not set, so admin routes answer only to loopback callers;"
                    " set it and send it as Authorization: Bearer <key> or X-Admin-Key",
                    "type": "authentication",
                    "param": None,
                }
            async with session.get(f"http://127.0.0.1:{local_port}/auth/status") as resp:
                assert resp.status == 200
                assert await resp.json() == {"has_token": False, "accounts": []}
    finally:
        await runner.cleanup()
