"""The lease scripts' sorted-set layout: bounded cost per lease, lazy repairs, migration, and the publisher hold."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from kimi_sim.server import SimServer
from shared import keys
from shared.errors import RateLimited, ServiceUnavailable
from shared.schema import Done, Start, TextDelta
from shared.settings import PoolSettings
from tests.test_worker_support import reply_events
from token_service.accounts import Accounts
from token_service.leases import Lease, LeaseScripts
from token_service.store import now_ms
from upstream_worker.publisher import ReplyPublisher


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def make_pool(
    redis: aioredis.Redis, session: aiohttp.ClientSession, url: str, **settings: object
) -> Accounts:
    return Accounts(redis, PoolSettings(**settings), session, url)  # type: ignore[arg-type]


async def add(pool: Accounts, sim: SimServer, n: int) -> list[str]:
    return [(await pool.add(sim.state.add_account("kimi_auth").token))[0].id for _ in range(n)]


async def commands_run(redis: aioredis.Redis) -> int:
    stats = await redis.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


async def test_a_lease_costs_the_same_few_commands_whatever_the_pool_size(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With 150 accounts a lease and a release run under 30 Redis commands each, scripts included."""
    pool = make_pool(redis, session, kimi_sim.url)
    await add(pool, kimi_sim, 150)
    await pool.release(await pool.lease(), "ok")  # the first lease builds the layout once
    before = await commands_run(redis)
    lease = await pool.lease()
    leased = await commands_run(redis)
    await pool.release(lease, "ok")
    released = await commands_run(redis)
    assert leased - before < 30 and released - leased < 30


async def test_least_recently_used_first_across_a_large_pool(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Leases released at once rotate through every account before reusing one (least recently used)."""
    pool = make_pool(redis, session, kimi_sim.url)
    ids = await add(pool, kimi_sim, 12)
    seen = []
    for _ in range(12):
        lease = await pool.lease()
        seen.append(lease.account_id)
        await pool.release(lease, "ok")
        await asyncio.sleep(0.002)  # distinct last-used milliseconds
    assert sorted(seen) == sorted(ids)
    assert (await pool.lease()).account_id == seen[0]


async def test_exclude_walks_past_many_accounts_and_busy_means_all_at_cap(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Excluding 20 of 21 accounts leases the last one; once it is held, the answer is busy, not none."""
    pool = make_pool(redis, session, kimi_sim.url)
    ids = await add(pool, kimi_sim, 21)
    held = await pool.lease(exclude=set(ids[:20]))
    assert held.account_id == ids[20]
    with pytest.raises(RateLimited, match="busy"):
        await pool.lease(exclude=set(ids[:20]))
    with pytest.raises(ServiceUnavailable):
        await pool.lease(exclude=set(ids))


async def test_cooling_answer_is_the_soonest_not_excluded(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With every account cooling, RateLimited says when the soonest non-excluded one is back."""
    pool = make_pool(redis, session, kimi_sim.url)
    a, b, c = await add(pool, kimi_sim, 3)
    await pool.cool(a, "rate_limited", 5)
    await pool.cool(b, "rate_limited", 50)
    await pool.cool(c, "rate_limited", 500)
    with pytest.raises(RateLimited, match="cooling") as soonest:
        await pool.lease()
    assert soonest.value.retry_after_s == pytest.approx(5, abs=0.5)
    with pytest.raises(RateLimited, match="cooling") as without_a:
        await pool.lease(exclude={a})
    assert without_a.value.retry_after_s == pytest.approx(50, abs=0.5)


async def test_cooldown_over_returns_the_account_and_marks_it_active(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A cooling account is leased once its time has come, and the lease makes it active again."""
    pool = make_pool(redis, session, kimi_sim.url)
    [account] = await add(pool, kimi_sim, 1)
    await pool.cool(account, "rate_limited", 0.05)
    with pytest.raises(RateLimited, match="cooling"):
        await pool.lease()
    await asyncio.sleep(0.06)
    assert (await pool.lease()).account_id == account
    assert (await pool.get(account)).state == "active"


async def test_an_account_whose_exp_passed_is_dropped_when_it_reaches_the_head(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """An `exp` that passed while the account sat in `ready` makes the lease skip it and take it out."""
    pool = make_pool(redis, session, kimi_sim.url)
    stale, fresh = await add(pool, kimi_sim, 2)
    await redis.hset(keys.account_key(stale), "exp", str(int(time.time()) - 1))
    await redis.zadd(keys.ACCOUNT_READY, {stale: 0})  # at the head
    assert (await pool.lease()).account_id == fresh
    assert await redis.zscore(keys.ACCOUNT_READY, stale) is None


async def test_data_of_the_old_layout_is_migrated_by_the_first_lease(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Without the zsets (data of the per-account layout), a lease builds them and keeps live leases."""
    pool = make_pool(redis, session, kimi_sim.url)
    a, b = await add(pool, kimi_sim, 2)
    held = await pool.lease(only={a})
    await redis.delete(keys.ACCOUNT_READY, keys.ACCOUNT_COOLING, keys.ACCOUNT_LEASES, keys.ACCOUNT_LAYOUT)
    assert (await pool.lease()).account_id == b
    with pytest.raises(RateLimited, match="busy"):
        await pool.lease()
    await pool.release(held, "ok")
    assert (await pool.lease()).account_id == a


async def test_resync_heals_a_lost_ready_set(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """The prober's resync rebuilds `ready` from the hashes, in-flight counts included."""
    pool = make_pool(redis, session, kimi_sim.url, max_concurrency_per_account=2)
    a, b = await add(pool, kimi_sim, 2)
    await pool.lease(only={a})
    await redis.delete(keys.ACCOUNT_READY)
    await pool.resync()
    scores = dict(await redis.zrange(keys.ACCOUNT_READY, 0, -1, withscores=True))
    assert scores[a.encode()] >= 1e13 > scores[b.encode()]
    assert (await pool.lease()).account_id == b


async def test_release_of_a_removed_account_writes_nothing(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Releasing a lease of an account removed meanwhile leaves no partial hash behind."""
    pool = make_pool(redis, session, kimi_sim.url)
    [account] = await add(pool, kimi_sim, 1)
    lease = await pool.lease()
    await pool.remove(account)
    await pool.release(lease, "upstream_error", detail="chat: HTTP 500")
    assert not await redis.exists(keys.account_key(account))


async def test_held_start_rides_with_the_next_event(redis: aioredis.Redis) -> None:
    """A held Start leaves first in the same entry as the next event, not in an entry of its own."""
    publisher = ReplyPublisher(redis, keys.reply_key("h1"))
    publisher.hold(Start(account_id="a1"), 5.0)
    await asyncio.sleep(0.05)
    assert await redis.xlen(keys.reply_key("h1")) == 0
    publisher.publish(TextDelta(text="hi"))
    await publisher.aclose()
    entries = await redis.xrange(keys.reply_key("h1"))
    assert len(entries) == 1
    assert await reply_events(redis, "h1") == [Start(account_id="a1"), TextDelta(text="hi")]


async def test_held_start_leaves_alone_after_its_window(redis: aioredis.Redis) -> None:
    """With nothing else to publish, a held Start goes out by itself once its window passes."""
    publisher = ReplyPublisher(redis, keys.reply_key("h2"))
    publisher.hold(Start(), 0.02)
    for _ in range(100):
        if await redis.xlen(keys.reply_key("h2")):
            break
        await asyncio.sleep(0.005)
    assert await reply_events(redis, "h2") == [Start()]
    await publisher.aclose()


async def test_the_ending_entry_sets_the_ttl(redis: aioredis.Redis) -> None:
    """The entry carrying Done renews the reply stream's TTL itself, before the publisher is closed."""
    publisher = ReplyPublisher(redis, keys.reply_key("h3"))
    publisher.publish(TextDelta(text="a"))
    for _ in range(100):
        if await redis.xlen(keys.reply_key("h3")):
            break
        await asyncio.sleep(0.005)
    await redis.persist(keys.reply_key("h3"))
    publisher.publish(Done())
    for _ in range(100):
        if await redis.xlen(keys.reply_key("h3")) == 2:
            break
        await asyncio.sleep(0.005)
    assert 0 < await redis.ttl(keys.reply_key("h3")) <= keys.REPLY_TTL_S
    await publisher.aclose()


async def test_every_account_pool_key_shares_one_cluster_slot(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Hashes, index, zsets and per-account lease keys are all `kimi:acct:{pool}:…`, one Redis Cluster slot."""
    pool = make_pool(redis, session, kimi_sim.url, max_concurrency_per_account=2)
    first, second = await add(pool, kimi_sim, 2)
    held = await pool.lease(only={first})
    await pool.release(await pool.lease(only={second}), "rate_limited", retry_after_s=60)
    written = {k.decode() for k in await redis.keys("kimi:acct*")}
    assert written == {
        keys.account_key(first),
        keys.account_key(second),
        keys.lease_key(first),
        *keys.ACCOUNT_POOL_KEYS,
    }
    assert all(key.startswith("kimi:acct:{pool}:") for key in written)
    assert {key_slot(key.encode()) for key in [*written, keys.refresh_lock_key(first)]} == {key_slot(b"pool")}
    await pool.release(held, "ok")


async def test_each_kind_has_its_own_cap(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """With caps kimi_auth 2 and refresh_token 1, a pool of one of each gives exactly three leases, then busy."""
    pool = make_pool(redis, session, kimi_sim.url)
    k = (await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id
    r = (await pool.add(kimi_sim.state.add_account("refresh_token").token))[0].id
    scripts = LeaseScripts(redis, {"kimi_auth": 2, "refresh_token": 1})
    picks = [
        await scripts.take(now_ms=now_ms(), ttl_ms=60_000, exclude=set(), only=None, fields=["kind"])
        for _ in range(4)
    ]
    leased = [p.lease for p in picks[:3]]
    assert sorted((lease.account_id, lease.kind) for lease in leased if lease is not None) == sorted(
        [(k, "kimi_auth"), (k, "kimi_auth"), (r, "refresh_token")]
    )
    assert (picks[3].status, picks[3].lease) == ("busy", None)
    assert picks[0].fields == {"kind": picks[0].lease.kind if picks[0].lease else ""}


async def test_an_unknown_kind_is_walked_past_and_left_for_processes_that_know_it(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A process whose caps lack a kind never leases nor moves its accounts; one that knows it still can."""
    pool = make_pool(redis, session, kimi_sim.url)
    k = (await pool.add(kimi_sim.state.add_account("kimi_auth").token))[0].id
    await pool.release(await pool.lease(), "ok")  # the layout is built by a process that knows every kind
    unaware = LeaseScripts(redis, {"refresh_token": 1})
    for only in (None, {k}):
        picked = await unaware.take(now_ms=now_ms(), ttl_ms=60_000, exclude=set(), only=only, fields=["kind"])
        assert (picked.status, picked.lease) == ("none", None)
    await unaware.rebuild(now_ms())
    assert await redis.zscore(keys.ACCOUNT_READY, k) is not None
    assert (await pool.lease()).account_id == k


async def test_accounts_stored_before_the_kind_registry_still_lease_and_list(
    redis: aioredis.Redis, session: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """Hashes with a bare sealed token and zsets scored by in-flight count (the previous layout) list and lease
    as they did: a held lease still counts against the cap, and both kinds give working credentials."""
    now = now_ms()
    kimi_auth, refresh = kimi_sim.state.add_account("kimi_auth"), kimi_sim.state.add_account("refresh_token")
    held_id, idle_id = "a0a0a0a0a0a0", "b1b1b1b1b1b1"
    for account_id, account, used in ((held_id, kimi_auth, now - 5000), (idle_id, refresh, now - 9000)):
        await redis.hset(
            keys.account_key(account_id),
            mapping={
                "kind": account.kind,
                "sub": account.sub,
                "exp": str(account.exp),
                "iat": "",
                "state": "active",
                "state_reason": "added",
                "cooling_until_ms": "0",
                "ephemeral": "0",
                "created_ms": str(now - 10_000),
                "preview": "eyJhbG…abcd",
                "device_id": "1234567890123456789",
                "session_id": "9876543210987654321",
                "secret": f"p:{account.token}",
                "last_used_ms": str(used),
            },
        )
        await redis.sadd(keys.ACCOUNT_INDEX, account_id)
    await redis.zadd(keys.lease_key(held_id), {"oldlease": now + 60_000})
    await redis.zadd(keys.ACCOUNT_LEASES, {f"{held_id}:oldlease": now + 60_000})
    await redis.zadd(keys.ACCOUNT_READY, {held_id: 1e13 + now - 5000, idle_id: now - 9000})
    await redis.set(keys.ACCOUNT_LAYOUT, "1")

    pool = make_pool(redis, session, kimi_sim.url)
    listed = {a.id: (a.kind, a.state, a.user_id, a.exp) for a in await pool.list()}
    assert listed == {
        held_id: ("kimi_auth", "active", kimi_auth.sub, kimi_auth.exp),
        idle_id: ("refresh_token", "active", refresh.sub, refresh.exp),
    }
    idle = await pool.lease()
    assert (idle.account_id, idle.kind) == (idle_id, "refresh_token")
    with pytest.raises(RateLimited, match="busy"):
        await pool.lease()  # the lease held under the old layout still fills its account's one slot
    creds = await pool.credentials(idle)
    assert creds.access_token != refresh.token and creds.user_id == refresh.sub
    await pool.release(Lease(account_id=held_id, lease_id="oldlease", kind="kimi_auth"), "ok")
    held = await pool.lease()
    held_creds = await pool.credentials(held)
    assert (held.account_id, held_creds.access_token, held_creds.user_id) == (
        held_id,
        kimi_auth.token,
        kimi_auth.sub,
    )
    # The refresh rotated the refresh_token (the simulator does): it was written back in the tagged layout.
    stored = await redis.hget(keys.account_key(idle_id), "secret")
    assert stored is not None and stored.startswith(b'p:{"kind":"refresh_token","token":"eyJ')
