"""The client-key admin routes of the token service and the shared store, against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from kimi_sim.server import SimServer
from shared.client_keys import ClientKey, ClientKeys, Limits, RequestRecord, record_request, secret_hash
from tests.test_admin_api import AUTH, Client, ClientFactory, settings_for
from token_service.app import create_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def client(aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer) -> Client:
    return await aiohttp_client(create_app(settings_for(redis_url, kimi_sim.url), background=False))


async def call(client: Client, method: str, path: str, status: int, **kw: Any) -> Any:
    resp = await client.request(method, path, headers=AUTH, **kw)
    body = await resp.json()
    assert resp.status == status, body
    return body


async def test_create_shows_the_secret_once_and_stores_only_its_hash(
    client: Client, redis: aioredis.Redis
) -> None:
    """POST answers the secret; the list and Redis hold only its SHA-256, and the lookup finds the key."""
    created = await call(client, "POST", "/admin/keys", 201, json={"name": "ci", "requests_per_minute": 5})
    secret, key = created["secret"], created["key"]
    assert secret.startswith("kgw-") and "secret_hash" not in key
    assert (key["name"], key["requests_per_minute"], key["enabled"], key["revoked"]) == ("ci", 5, True, False)
    listed = await call(client, "GET", "/admin/keys", 200)
    assert listed == {"keys": [key]}
    dump = b"".join([await redis.get(k) or b"" for k in await redis.keys("kimi:ckey:*")])
    assert secret.encode() not in dump and secret_hash(secret).encode() in dump
    found = await ClientKeys(redis).lookup(secret)
    assert found is not None and found.id == key["id"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "a b"}, "name"),
        ({"name": "x", "requests_per_minute": 0}, "requests_per_minute"),
        ({"name": "x", "tokens_per_day": "many"}, "tokens_per_day"),
        ({"name": "x", "models": [""]}, "models"),
        ({"name": "x", "window_s": 61}, "window_s"),
        ({"name": "x", "colour": "red"}, "colour"),
    ],
)
async def test_create_validates_every_field(client: Client, body: dict[str, Any], param: str) -> None:
    """A bad field is a 400 whose `param` names it."""
    answer = await call(client, "POST", "/admin/keys", 400, json=body)
    assert (answer["success"], answer["type"], answer["param"]) == (False, "invalid_request", param)


async def test_patch_revoke_rotate_delete(client: Client, redis: aioredis.Redis) -> None:
    """PATCH changes only what it sends; revoke marks the key; rotate retires the old secret; DELETE removes it."""
    created = await call(client, "POST", "/admin/keys", 201, json={"name": "ci", "tokens_per_day": 9})
    key_id, old = created["key"]["id"], created["secret"]
    patched = await call(client, "PATCH", f"/admin/keys/{key_id}", 200, json={"requests_per_minute": 2})
    assert (patched["key"]["requests_per_minute"], patched["key"]["tokens_per_day"]) == (2, 9)
    bad = await call(client, "PATCH", f"/admin/keys/{key_id}", 400, json={"concurrent_requests": -1})
    assert bad["param"] == "concurrent_requests"
    rotated = await call(client, "POST", f"/admin/keys/{key_id}/rotate", 200)
    store = ClientKeys(redis)
    assert await store.lookup(old) is None
    assert (await store.lookup(rotated["secret"])) is not None
    revoked = await call(client, "POST", f"/admin/keys/{key_id}/revoke", 200)
    assert (revoked["key"]["revoked"], revoked["key"]["enabled"]) == (True, False)
    await call(client, "DELETE", f"/admin/keys/{key_id}", 200)
    missing = await call(client, "GET", f"/admin/keys/{key_id}", 404)
    assert missing["param"] == "key_id"
    assert (await call(client, "GET", "/admin/keys/nothex", 400))["param"] == "key_id"


async def test_limit_script_tokens_and_concurrency(redis: aioredis.Redis) -> None:
    """The script refuses past the token and concurrency limits without counting, `finish` frees a slot, and a
    slot older than the stale time no longer counts."""
    template = ClientKey(
        id="", name="t", secret_hash="", created_s=0.0, tokens_per_minute=100, concurrent_requests=2
    )
    key, _ = await ClientKeys(redis).create(template)
    limits = Limits(redis)
    now = 1_000_020.0
    first = await limits.check(key, 30, "a", now)
    assert (first.allowed, first.limit, first.remaining) == (True, 2, 1)
    second = await limits.check(key, 30, "b", now)
    assert (second.allowed, second.limit, second.remaining, second.refused) == (True, 2, 0, "")
    third = await limits.check(key, 30, "c", now)
    assert (third.allowed, third.refused) == (False, "concurrent_requests")
    await limits.finish(key, "a", now, 20)
    big = await limits.check(key, 30, "d", now)
    assert (big.allowed, big.refused, big.limit, big.remaining, big.reset_s) == (
        False,
        "tokens_per_minute",
        100,
        20,
        60,
    )
    fits = await limits.check(key, 20, "e", now)
    assert (fits.allowed, fits.limit, fits.remaining) == (True, 100, 0)
    stale = await limits.check(key, 0, "f", now + 900)
    assert (stale.allowed, stale.limit, stale.remaining) == (True, 2, 1)


async def keys_cli(redis_url: str, *args: str) -> tuple[int, str, str]:
    """`python -m token_service keys …` as a real process against the test's Redis."""
    env = {**os.environ, "REDIS_URL": redis_url, "LOG_FORMAT": "json"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "token_service",
        "keys",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_cli_create_list_usage_requests_revoke(redis_url: str, redis: aioredis.Redis) -> None:
    """The CLI creates a key (secret printed once), lists it, shows its usage and log, and revokes it."""
    code, out, _ = await keys_cli(redis_url, "create", "ops", "--rpm", "3", "--models", "kimi,kimi-k2.5")
    assert code == 0
    created, secret_line = out.splitlines()
    key_id = created.split()[1]
    secret = secret_line.removeprefix("secret (shown once): ")
    assert created == f"created {key_id}  ops" and secret.startswith("kgw-")
    code, out, _ = await keys_cli(redis_url, "list")
    assert (code, out.split()) == (0, [key_id, "ops", "enabled", "kimi,kimi-k2.5", "rpm=3"])
    assert secret not in out
    record = RequestRecord(
        t=1_767_225_600.0,  # 2026-01-01
        request_id="r1",
        key="ops",
        key_id=key_id,
        dialect="openai",
        model="kimi",
        status=200,
        error="",
        account="acc1",
        duration_ms=12.0,
        ttft_ms=5.0,
        prompt_tokens=7,
        completion_tokens=11,
        estimated=False,
    )
    await record_request(redis, record)
    code, out, _ = await keys_cli(redis_url, "requests", "--key", "ops")
    assert (code, [(r["request_id"], r["prompt_tokens"]) for r in json.loads(out)]) == (0, [("r1", 7)])
    code, out, _ = await keys_cli(redis_url, "usage", key_id, "--days", "1")
    assert (code, json.loads(out)["key"]["id"]) == (0, key_id)
    code, out, _ = await keys_cli(redis_url, "revoke", key_id)
    assert (code, out) == (0, f"revoked {key_id}\n")
    found = await ClientKeys(redis).get(key_id)
    assert found is not None and found.revoked
    code, _, err = await keys_cli(redis_url, "create", "bad name")
    assert code == 2 and "name" in err
