"""The gateway's trust boundary: client credentials, pass-through tokens and their bounds, against a real
Redis (a scripted worker stands in for the upstream where the test is about the gateway alone)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import socket

import aiohttp
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from gateway.app import exposure_warnings
from kimi_sim.server import SimServer
from kimi_sim.tokens import mint_jwt
from shared.errors import BadRequest, ServiceUnavailable
from shared.keys import ACCOUNT_INDEX, JOBS_STREAM, cancel_key
from shared.schema import Done, Start, TextDelta
from shared.secret import Secret
from shared.settings import (
    CommonSettings,
    GatewaySettings,
    PoolSettings,
    TokenServiceSettings,
    WorkerSettings,
)
from tests.test_gateway_relay import HI, ClientFactory, gateway, worker
from token_service.accounts import Accounts
from token_service.client import PassThroughAccounts
from token_service.prober import probe_due

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


def kimi_auth(sub: str | None = None, jti: str | None = None) -> str:
    """A kimi-auth-shaped JWT (the signature is the simulator's, irrelevant to the gateway)."""
    claims = {"typ": "access", "app_id": "kimi", "exp": 4_102_444_800}
    claims |= {"sub": sub or secrets.token_hex(10), "jti": jti or secrets.token_hex(10)}
    return mint_jwt(claims)


def forged(token: str) -> str:
    """The same header and payload under a garbage signature."""
    header, payload, _ = token.split(".")
    return f"{header}.{payload}.Z2FyYmFnZQ"


async def index_size(redis: aioredis.Redis) -> int:
    return int(await redis.scard(ACCOUNT_INDEX))


async def test_a_forged_token_never_reaches_the_stored_account(
    gateway: ClientFactory, redis: aioredis.Redis, kimi_sim: SimServer
) -> None:
    """A token copying a stored account's sub and jti under another signature gets its own throwaway account;
    only the stored token itself is served by the stored account."""
    token = kimi_auth(sub="victim", jti="j1")
    async with aiohttp.ClientSession() as session:
        stored, _ = await Accounts(redis, PoolSettings(), session, kimi_sim.url).add(token)
    client = await gateway(api_keys=(KEY,), allow_passthrough="true")
    used = []
    for bearer in (forged(token), token):
        task = worker(redis, [Start(), TextDelta("x"), Done()])
        resp = await client.post(
            "/v1/chat/completions", json=HI, headers={"Authorization": f"Bearer {bearer}"}
        )
        assert resp.status == 200
        used.append((await task).request.account_ids)
        await redis.delete(JOBS_STREAM)  # the scripted worker reads the stream from its start
    [[throwaway], [real]] = used
    assert real == stored.id
    assert throwaway != stored.id and throwaway.startswith("t") and len(throwaway) == 12


async def test_passthrough_is_off_once_client_keys_are_set(gateway: ClientFactory) -> None:
    """With GATEWAY_API_KEYS and ALLOW_PASSTHROUGH_TOKENS unset (auto), a bearer of Kimi tokens is a 401."""
    client = await gateway(api_keys=(KEY,))
    resp = await client.get("/v1/models", headers={"Authorization": f"Bearer {kimi_auth()}"})
    assert (resp.status, (await resp.json())["error"]["message"]) == (401, "Incorrect API key provided.")
    opened = await gateway(api_keys=(KEY,), allow_passthrough="true")
    assert (await opened.get("/v1/models", headers={"Authorization": f"Bearer {kimi_auth()}"})).status == 200


async def test_a_bearer_of_too_many_tokens_is_a_400_and_stores_nothing(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """`Bearer T1,…,T30` is a 400 naming the bearer and PASSTHROUGH_MAX_TOKENS; no account is stored."""
    client = await gateway()
    bearer = ",".join(kimi_auth() for _ in range(30))
    resp = await client.post("/v1/chat/completions", json=HI, headers={"Authorization": f"Bearer {bearer}"})
    error = (await resp.json())["error"]
    assert (resp.status, error["param"]) == (400, "authorization")
    assert error["message"] == (
        "a pass-through bearer holds at most 8 Kimi tokens (PASSTHROUGH_MAX_TOKENS); got 30"
    )
    assert await index_size(redis) == 0


async def test_passthrough_tokens_are_stored_only_after_the_body_parses(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """A request whose body does not parse stores none of its pass-through tokens."""
    client = await gateway()
    resp = await client.post(
        "/v1/chat/completions", data=b"{not json", headers={"Authorization": f"Bearer {kimi_auth()}"}
    )
    assert resp.status == 400
    assert await index_size(redis) == 0


async def test_throwaway_accounts_are_bounded_in_number(redis: aioredis.Redis) -> None:
    """Beyond PASSTHROUGH_MAX_ACCOUNTS live throwaway accounts a new token gets 503; a known one is renewed."""
    accounts = PassThroughAccounts(redis, PoolSettings(passthrough_max_accounts=2))
    first, second, third = kimi_auth(), kimi_auth(), kimi_auth()
    ids = [*await accounts.add([first]), *await accounts.add([second])]
    with pytest.raises(ServiceUnavailable, match="PASSTHROUGH_MAX_ACCOUNTS"):
        await accounts.add([third])
    assert await accounts.add([first]) == ids[:1]
    assert await index_size(redis) == 2
    with pytest.raises(BadRequest, match="at most 2 Kimi tokens"):
        await PassThroughAccounts(redis, PoolSettings(passthrough_max_tokens=2)).add([first, second, third])


async def test_the_prober_never_calls_kimi_with_a_throwaway_account(
    redis: aioredis.Redis, kimi_sim: SimServer
) -> None:
    """An invalid pass-through account is left alone by the background prober (Kimi never hears of it)."""
    async with aiohttp.ClientSession() as session:
        accounts = Accounts(redis, PoolSettings(), session, kimi_sim.url)
        [account_id] = await accounts.add_ephemeral([kimi_sim.state.add_account("kimi_auth").token])
        await accounts.store.transition(account_id, "invalid", "test")
        calls = len(kimi_sim.state.requests)
        assert await probe_due(accounts) == {}
        assert len(kimi_sim.state.requests) == calls


def test_settings_spell_the_passthrough_switch() -> None:
    """ALLOW_PASSTHROUGH_TOKENS is auto by default: on without client keys (configured or managed), off with
    them; `1` keeps it on whatever keys exist, `0` keeps it off."""
    assert GatewaySettings().passthrough_enabled()
    assert not GatewaySettings().passthrough_enabled(managed_keys=True)
    assert not dataclasses.replace(GatewaySettings(), api_keys=(KEY,)).passthrough_enabled()
    forced = GatewaySettings.from_env({"ALLOW_PASSTHROUGH_TOKENS": "1", "GATEWAY_API_KEYS": "k"})
    assert forced.passthrough_enabled() and forced.passthrough_enabled(managed_keys=True)
    assert not GatewaySettings.from_env({"ALLOW_PASSTHROUGH_TOKENS": "0"}).passthrough_enabled()


async def test_a_client_that_never_reads_is_dropped_at_the_deadline(
    gateway: ClientFactory, redis: aioredis.Redis
) -> None:
    """A streaming client that never reads loses its connection by the request deadline; its job is cancelled
    and its handler ends (in-flight gauge back), instead of waiting on a write forever."""
    client = await gateway(request_timeout_s=2.0, idle_timeout_s=10.0)
    in_flight = REGISTRY.get_sample_value("kimi_gateway_in_flight_requests") or 0.0
    body = json.dumps(HI | {"stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", client.port))
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    await asyncio.get_running_loop().sock_sendall(sock, head + body)
    flood = [[TextDelta("x" * 262_144)] for _ in range(64)]
    task = worker(redis, [Start()], *flood, [Done()])
    job = await task
    try:
        for _ in range(100):
            if await redis.exists(cancel_key(job.request.request_id)):
                break
            await asyncio.sleep(0.1)
        assert await redis.exists(cancel_key(job.request.request_id))
        for _ in range(30):
            if REGISTRY.get_sample_value("kimi_gateway_in_flight_requests") == in_flight:
                break
            await asyncio.sleep(0.1)
        assert REGISTRY.get_sample_value("kimi_gateway_in_flight_requests") == in_flight
    finally:
        sock.close()


async def test_metrics_answer_only_local_callers_allowed_networks_or_the_admin_key(
    gateway: ClientFactory, redis_url: str
) -> None:
    """/metrics is a 401 for a caller relayed by a proxy (not local) unless it shows the admin key or its peer is
    in METRICS_ALLOW; a plain loopback caller reads it."""
    relayed = {"X-Forwarded-For": "203.0.113.7"}
    client = await gateway(common=CommonSettings(redis_url=redis_url, admin_api_key=Secret("adm")))
    assert (await client.get("/metrics")).status == 200
    refused = await client.get("/metrics", headers=relayed)
    assert refused.status == 401
    assert (await client.get("/metrics", headers=relayed | {"Authorization": "Bearer adm"})).status == 200
    assert (await client.get("/metrics", headers=relayed | {"X-Admin-Key": "nope"})).status == 401
    allowed = await gateway(metrics_allow=("127.0.0.0/8",))
    assert (await allowed.get("/metrics", headers=relayed)).status == 200


def test_services_bind_loopback_unless_told_otherwise() -> None:
    """The gateway, the token service and the worker's /metrics listen on 127.0.0.1 by default."""
    assert (GatewaySettings().host, TokenServiceSettings().host, WorkerSettings().host) == ("127.0.0.1",) * 3


def test_an_open_gateway_on_a_public_address_is_warned_about() -> None:
    """Binding a non-loopback address without client keys or an admin key yields one warning for each."""
    assert exposure_warnings(GatewaySettings()) == []
    exposed = dataclasses.replace(GatewaySettings(), host="0.0.0.0")
    assert [w.split(" and ")[1].split(" is not set")[0] for w in exposure_warnings(exposed)] == [
        "GATEWAY_API_KEYS",
        "ADMIN_API_KEY",
    ]
    keyed = dataclasses.replace(exposed, api_keys=(KEY,), common=CommonSettings(admin_api_key=Secret("adm")))
    assert exposure_warnings(keyed) == []


async def test_a_passthrough_token_with_an_out_of_range_exp_is_a_401(gateway: ClientFactory) -> None:
    """A pass-through JWT whose `exp` no datetime can hold is refused as expired (401), never a 500."""
    client = await gateway()
    token = mint_jwt({"typ": "access", "app_id": "kimi", "sub": "u", "jti": "j", "exp": -(10**30)})
    resp = await client.get("/v1/models", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert (await resp.json())["error"]["message"].startswith(
        "pass-through token 1 of 1: token is already expired"
    )
