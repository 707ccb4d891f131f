"""The account pool library against a real Redis and the Kimi simulator: leases, refresh, state machine."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
import structlog

from kimi_sim.server import SimServer
from kimi_sim.tokens import decode_claims as sim_claims
from kimi_sim.tokens import mint_jwt
from shared.errors import AuthenticationFailed, BadRequest, RateLimited, ServiceUnavailable
from shared.keys import account_key
from shared.settings import PoolSettings
from tests.sim_fixtures import SimFactory
from token_service.accounts import Accounts
from token_service.kimi_auth import REFRESH_PATH
from token_service.prober import probe_due, refresh_due

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make_pool(
    redis: aioredis.Redis, session: aiohttp.ClientSession, url: str, **settings: object
) -> Accounts:
    return Accounts(redis, PoolSettings(**settings), session, url)  # type: ignore[arg-type]


def refreshes(sim: SimServer) -> int:
    return sum(1 for r in sim.state.requests if r.path == REFRESH_PATH)


async def test_both_kinds_are_saved_and_listed_with_their_expiry(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A kimi-auth and a refresh_token account are stored with kind, user id and the token's own exp."""
    pool = make_pool(redis, session, kimi_sim.url)
    kimi_auth = kimi_sim.state.add_account("kimi_auth", exp_in_s=7200)
    refresh = kimi_sim.state.add_account("refresh_token", exp_in_s=90 * 86400)
    await pool.add(kimi_auth.token)
    await pool.add(refresh.token)
    listed = {a.kind: a for a in await pool.list()}
    assert listed["kimi_auth"].exp == kimi_auth.exp and listed["refresh_token"].exp == refresh.exp
    assert listed["kimi_auth"].user_id == kimi_auth.sub and listed["refresh_token"].user_id == refresh.sub
    assert 7190 <= (listed["kimi_auth"].seconds_left or 0) <= 7200
    assert listed["kimi_auth"].hours_left == pytest.approx(2.0, abs=0.01)
    assert all(a.state == "active" for a in listed.values())
    assert kimi_auth.token not in str(listed) and refresh.token not in str(listed)


async def test_expired_token_is_refused(redis: aioredis.Redis, session: aiohttp.ClientSession) -> None:
    """Saving a token whose exp has passed raises BadRequest and stores nothing."""
    pool = make_pool(redis, session, "http://127.0.0.1:9")
    token = mint_jwt(
        {"typ": "access", "app_id": "kimi", "sub": "u1", "jti": "j", "exp": int(time.time()) - 5}
    )
    with pytest.raises(BadRequest, match="already expired"):
        await pool.add(token)
    assert await pool.list() == []


async def test_secrets_are_encrypted_at_rest_with_a_key(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With a TOKEN_ENCRYPTION_KEY passphrase the Redis hash holds salted Fernet ciphertext, and credentials
    still decrypt."""
    from shared.secret import Secret

    pool = make_pool(redis, session, kimi_sim.url, token_encryption_key=Secret("passphrase"))
    token = kimi_sim.state.add_account("kimi_auth").token
    account, _ = await pool.add(token)
    assert token not in repr(await redis.hgetall(account_key(account.id)))
    stored = await redis.hget(account_key(account.id), "secret")
    assert isinstance(stored, bytes) and stored.startswith(b"s:") and b":gAAAAA" in stored
    creds = await pool.credentials(await pool.lease())
    assert creds.access_token == token


async def test_no_account_says_how_to_add_one(redis: aioredis.Redis, session: aiohttp.ClientSession) -> None:
    """An empty pool raises ServiceUnavailable that names POST /auth/save."""
    pool = make_pool(redis, session, "http://127.0.0.1:9")
    with pytest.raises(ServiceUnavailable, match="POST /auth/save"):
        await pool.lease()


async def test_lease_prefers_least_in_flight_then_least_recently_used(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With cap 2, leases spread over accounts before any account gets a second one, LRU first."""
    pool = make_pool(redis, session, kimi_sim.url, max_concurrency_per_account=2)
    ids = [(await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id for _ in range(3)]
    first = [await pool.lease() for _ in range(3)]
    assert sorted(lease.account_id for lease in first) == sorted(ids)
    await pool.release(first[1], "ok")
    again = await pool.lease()
    assert again.account_id == first[1].account_id  # the only one with nothing in flight
    fourth = await pool.lease()
    assert fourth.account_id == first[0].account_id  # all at 1 in flight: least recently used


async def test_cap_holds_and_release_frees_the_slot(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With the default cap of 1 a second lease is refused as busy until the first is released."""
    pool = make_pool(redis, session, kimi_sim.url)
    await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    lease = await pool.lease()
    with pytest.raises(RateLimited, match="busy") as caught:
        await pool.lease()
    assert caught.value.retry_after_s == 1.0
    waiter = asyncio.create_task(pool.lease(wait_s=2.0))
    await asyncio.sleep(0.1)
    await pool.release(lease, "ok")
    second = await waiter
    assert second.account_id == lease.account_id and second.lease_id != lease.lease_id
    assert await pool.in_flight(lease.account_id) == 1


async def test_exclude_and_only_steer_the_choice(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """`exclude` makes a retry take another account; `only` restricts the choice; nothing left → 503."""
    pool = make_pool(redis, session, kimi_sim.url, max_concurrency_per_account=5)
    a = (await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id
    b = (await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id
    assert (await pool.lease(exclude={a})).account_id == b
    assert (await pool.lease(only={a})).account_id == a
    with pytest.raises(ServiceUnavailable):
        await pool.lease(exclude={a, b})


async def test_lease_ttl_frees_a_forgotten_lease_and_extend_keeps_one(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """An unreleased lease expires after lease_ttl_s; an extended one does not."""
    pool = make_pool(redis, session, kimi_sim.url, lease_ttl_s=1)
    await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    kept = await pool.lease()
    await asyncio.sleep(0.6)
    assert await pool.extend(kept)
    await asyncio.sleep(0.6)
    with pytest.raises(RateLimited):
        await pool.lease()
    await asyncio.sleep(0.5)
    assert not await pool.extend(kept)
    assert (await pool.lease()).account_id == kept.account_id


async def test_lease_held_by_a_killed_process_comes_back(
    redis: aioredis.Redis, redis_url: str, kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """A process that leases and is SIGKILLed holds the slot only until the lease TTL passes."""
    pool = make_pool(redis, session, kimi_sim.url, lease_ttl_s=1)
    account, _ = await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    script = (
        "import asyncio, sys, aiohttp, redis.asyncio as r\n"
        "from shared.logging import configure_logging\n"
        "from shared.settings import PoolSettings\n"
        "from token_service.client import AccountPool\n"
        "async def main():\n"
        "    configure_logging('INFO', 'json', service='test')  # logs on stderr, the lease id alone on stdout\n"
        "    client = r.Redis.from_url(sys.argv[1])\n"
        "    async with aiohttp.ClientSession() as s:\n"
        "        pool = AccountPool(client, PoolSettings(lease_ttl_s=1), s, 'http://127.0.0.1:9')\n"
        "        lease = await pool.lease()\n"
        "        print(lease.account_id, flush=True)\n"
        "        await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, redis_url, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=10)
        assert line.decode().strip() == account.id
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        with pytest.raises(RateLimited, match="busy"):
            await pool.lease()
        await asyncio.sleep(1.1)
        assert (await pool.lease()).account_id == account.id
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_twenty_concurrent_leases_cause_one_refresh_and_persist_the_rotation(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """20 concurrent credential requests on one refresh_token account make exactly one refresh call."""
    sim = await kimi_sim_factory(rotate_refresh_tokens=True)
    original = sim.state.add_account("refresh_token").token
    pool = make_pool(redis, session, sim.url, max_concurrency_per_account=20)
    account, _ = await pool.add(original)
    leases = await asyncio.gather(*(pool.lease() for _ in range(20)))
    # Two pools (as two processes would have) share the work through Redis.
    other = make_pool(redis, session, sim.url, max_concurrency_per_account=20)
    creds = await asyncio.gather(
        *((pool if i % 2 else other).credentials(lease) for i, lease in enumerate(leases))
    )
    assert refreshes(sim) == 1
    assert len({c.access_token for c in creds}) == 1
    stored = await pool.store.credential(account.id)
    assert stored is not None and stored.secret != original
    assert sim_claims(stored.secret)["typ"] == "refresh"
    # The rotated token is the live one: the old one is dead in the simulator, a forced refresh still works.
    await pool.refresher.access_token(account.id, force=True)
    assert refreshes(sim) == 2
    assert (await pool.get(account.id)).state == "active"


async def test_access_token_is_reused_until_near_its_own_exp(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """The cached access token is used until exp - refresh_margin_s (read from the token), then renewed."""
    sim = await kimi_sim_factory(access_ttl_s=3)
    pool = make_pool(redis, session, sim.url, refresh_margin_s=1)
    account, _ = await pool.add(sim.state.add_account("refresh_token").token)
    lease = await pool.lease()
    first = await pool.credentials(lease)
    assert first.user_id == account.user_id and first.device_id == sim_claims(first.access_token)["device_id"]
    stored = await pool.get(account.id)
    assert stored.access_exp == sim_claims(first.access_token)["exp"]
    assert (await pool.credentials(lease)).access_token == first.access_token
    assert refreshes(sim) == 1
    await asyncio.sleep(max(0.0, (stored.access_exp or 0) - 1 - time.time()) + 0.05)
    renewed = await pool.credentials(lease)
    assert renewed.access_token != first.access_token
    assert refreshes(sim) == 2


async def test_rate_limited_account_cools_then_the_prober_returns_it(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A 429 release cools the account for Retry-After; after it the prober's probe makes it active again."""
    pool = make_pool(redis, session, kimi_sim.url)
    account, _ = await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    await pool.release(await pool.lease(), "rate_limited", retry_after_s=0.3)
    cooling = await pool.get(account.id)
    assert (cooling.state, cooling.state_reason, cooling.counters["rate_limited"]) == (
        "cooling",
        "rate_limited",
        1,
    )
    with pytest.raises(RateLimited, match="cooling") as caught:
        await pool.lease()
    assert 0.0 < (caught.value.retry_after_s or 0) <= 0.3
    assert await probe_due(pool) == {}  # not due yet
    await asyncio.sleep(0.35)
    assert await probe_due(pool) == {account.id: "ok"}
    assert (await pool.get(account.id)).state == "active"
    assert any(r.path.endswith("GetCurrentUser") for r in kimi_sim.state.requests)


async def test_default_cooldowns_apply_without_retry_after(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Without Retry-After, 429 cools for cooldown_429_s and a quota for quota_window_s."""
    pool = make_pool(redis, session, kimi_sim.url, max_concurrency_per_account=2)
    a = (await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id
    b = (await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id
    await pool.release(await pool.lease(only={a}), "rate_limited")
    await pool.release(await pool.lease(only={b}), "quota")
    now_ms = time.time() * 1000
    assert (await pool.get(a)).cooling_until_ms == pytest.approx(now_ms + 60_000, abs=1000)
    assert (await pool.get(b)).cooling_until_ms == pytest.approx(now_ms + 3 * 3600_000, abs=1000)


async def test_auth_failure_tries_one_refresh_then_marks_invalid(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A 401 on a refresh_token account makes one refresh attempt; a rejected one → invalid, not leased."""
    pool = make_pool(redis, session, kimi_sim.url)
    account, _ = await pool.add(kimi_sim.state.add_account("refresh_token").token)
    lease = await pool.lease()
    await pool.credentials(lease)
    kimi_sim.state.faults.arm("http_401", count=1, path=REFRESH_PATH)
    await pool.release(lease, "auth_failed", detail="chat: HTTP 401")
    assert refreshes(kimi_sim) == 2
    invalid = await pool.get(account.id)
    assert (invalid.state, invalid.state_reason) == ("invalid", "refresh_rejected")
    assert invalid.last_error is not None and "401" in invalid.last_error
    with pytest.raises(ServiceUnavailable):
        await pool.lease()
    # The fault is spent: the prober finds the account works again, so it is not lost.
    assert await probe_due(pool) == {account.id: "ok"}
    assert (await pool.get(account.id)).state == "active"


async def test_auth_failure_with_a_good_refresh_keeps_the_account(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """When the one refresh after a 401 succeeds, the account stays active with a new access token."""
    pool = make_pool(redis, session, kimi_sim.url)
    account, _ = await pool.add(kimi_sim.state.add_account("refresh_token").token)
    lease = await pool.lease()
    before = (await pool.credentials(lease)).access_token
    await pool.release(lease, "auth_failed")
    assert (await pool.get(account.id)).state == "active"
    assert (await pool.credentials(await pool.lease())).access_token != before


async def test_kimi_auth_account_goes_invalid_on_auth_failure(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A kimi-auth account cannot refresh: a 401 makes it invalid at once, with no Kimi call."""
    pool = make_pool(redis, session, kimi_sim.url)
    account, _ = await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    await pool.release(await pool.lease(), "auth_failed")
    assert (await pool.get(account.id)).state == "invalid"
    assert list(kimi_sim.state.requests) == []


async def test_prober_marks_expired_accounts(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """An account whose exp passes is skipped by leases and marked expired by the prober."""
    pool = make_pool(redis, session, kimi_sim.url)
    account, _ = await pool.add(kimi_sim.state.add_account("kimi_auth", exp_in_s=1).token)
    await asyncio.sleep(1.05)
    with pytest.raises(ServiceUnavailable):
        await pool.lease()
    assert await probe_due(pool) == {account.id: "expired"}
    assert (await pool.get(account.id)).state == "expired"


async def test_disabled_account_is_not_leased_until_enabled(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """disable takes an account out of the pool and a worker's outcome cannot revive it; enable returns it."""
    pool = make_pool(redis, session, kimi_sim.url, max_concurrency_per_account=2)
    account, _ = await pool.add(kimi_sim.state.add_account("kimi_auth").token)
    lease = await pool.lease()
    await pool.disable(account.id)
    await pool.release(lease, "rate_limited")
    assert (await pool.get(account.id)).state == "disabled"
    with pytest.raises(ServiceUnavailable):
        await pool.lease()
    await pool.enable(account.id)
    assert (await pool.lease()).account_id == account.id


async def test_ephemeral_accounts_are_idempotent_and_only_leased_by_name(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Pass-through tokens become TTL'd accounts with stable ids, leased only through `only`."""
    pool = make_pool(redis, session, kimi_sim.url, ephemeral_ttl_s=50)
    t1 = kimi_sim.state.add_account("refresh_token").token
    t2 = kimi_sim.state.add_account("kimi_auth").token
    ids = await pool.add_ephemeral([t1, t2])
    assert await pool.add_ephemeral([t1, t2]) == ids
    assert 45 <= await redis.ttl(account_key(ids[0])) <= 50
    with pytest.raises(ServiceUnavailable):
        await pool.lease()
    lease = await pool.lease(only=set(ids), exclude={ids[1]})
    assert (lease.account_id, lease.ephemeral, lease.kind) == (ids[0], True, "refresh_token")
    assert (await pool.credentials(lease)).access_token != t1
    with pytest.raises(AuthenticationFailed, match="pass-through token 2 of 2"):
        await pool.add_ephemeral([t1, "garbage"])


async def test_no_log_line_carries_a_token(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """Adding, refreshing, rotating, cooling and invalidating accounts log events but never a token."""
    sim = await kimi_sim_factory(rotate_refresh_tokens=True)
    pool = make_pool(redis, session, sim.url)
    original = sim.state.add_account("refresh_token").token
    kimi_auth = sim.state.add_account("kimi_auth").token
    with structlog.testing.capture_logs() as logs:
        account, _ = await pool.add(original)
        await pool.add(kimi_auth)
        lease = await pool.lease(only={account.id})
        access = (await pool.credentials(lease)).access_token
        await pool.release(lease, "rate_limited", retry_after_s=0.01)
        await asyncio.sleep(0.02)
        sim.state.faults.arm("http_401", count=1, path=REFRESH_PATH)
        await pool.release(await pool.lease(only={account.id}), "auth_failed")
        rotated = await pool.store.credential(account.id)
    events = {entry["event"] for entry in logs}
    assert {"account_added", "token_refreshed", "account_state"} <= events
    text = repr(logs)
    for secret in (original, kimi_auth, access, rotated.secret if rotated else "-"):
        assert secret not in text


async def test_account_log_lines_name_the_account_as_account_id(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Token-service log lines about an account use `account_id=`, the field the gateway and worker log."""
    pool = make_pool(redis, session, kimi_sim.url)
    with structlog.testing.capture_logs() as logs:
        account, _ = await pool.add(kimi_sim.state.add_account("refresh_token").token)
        lease = await pool.lease(only={account.id})
        await pool.credentials(lease)
        await pool.release(lease, "ok")
        await pool.disable(account.id)
        await pool.remove(account.id)
    by_event = {entry["event"]: entry for entry in logs}
    for event in ("account_added", "token_refreshed", "account_state", "account_removed"):
        assert by_event[event]["account_id"] == account.id, event
    assert not [entry for entry in logs if "account" in entry]


async def test_background_refresher_renews_recently_used_tokens(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim_factory: SimFactory
) -> None:
    """refresh_due renews an access token that would pass its margin before the next pass."""
    sim = await kimi_sim_factory(access_ttl_s=40)
    pool = make_pool(redis, session, sim.url, refresh_margin_s=10, probe_interval_s=60)
    account, _ = await pool.add(sim.state.add_account("refresh_token").token)
    await pool.credentials(await pool.lease())
    assert await refresh_due(pool) == 1
    assert refreshes(sim) == 2
    assert (await pool.get(account.id)).counters["refreshes"] == 2


async def test_passthrough_of_a_stored_account_never_gives_it_a_ttl(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A stored account passed as a Bearer token keeps no TTL; once a pass-through token is saved, the next
    pass-through of it is served by the saved account."""
    pool = make_pool(redis, session, kimi_sim.url, ephemeral_ttl_s=50)
    stored, passed = (
        kimi_sim.state.add_account("kimi_auth").token,
        kimi_sim.state.add_account("kimi_auth").token,
    )
    account, _ = await pool.add(stored)
    assert await pool.add_ephemeral([stored]) == [account.id]
    assert await redis.ttl(account_key(account.id)) == -1
    [ephemeral_id] = await pool.add_ephemeral([passed])
    assert 0 < await redis.ttl(account_key(ephemeral_id)) <= 50
    saved, created = await pool.add(passed)
    assert (created, saved.ephemeral) == (True, False) and saved.id != ephemeral_id
    assert await pool.add_ephemeral([passed]) == [saved.id]
    assert await redis.ttl(account_key(saved.id)) == -1
