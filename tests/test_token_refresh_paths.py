"""Refreshing a Kimi refresh_token through either path (kimi-web-2026.md §2.3): Connect `AuthService/RefreshToken`
first, the REST `GET /api/auth/token/refresh` when Connect gives no verdict; one holder, rotation persisted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from kimi_sim.server import SimServer
from shared.errors import UpstreamAuthError, UpstreamUnavailable
from shared.settings import PoolSettings
from tests.sim_fixtures import SimFactory
from token_service.accounts import Accounts
from token_service.kimi_auth import REFRESH_PATH, REST_REFRESH_PATH, KimiAuthClient, auth_origin

PATHS = (REFRESH_PATH, REST_REFRESH_PATH)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


def refresh_calls(sim: SimServer) -> list[str]:
    """The refresh calls the simulator received, in order (either path)."""
    return [r.path for r in sim.state.requests if r.path in PATHS]


@pytest.mark.parametrize(
    ("base_url", "auth_url"),
    [
        ("https://www.kimi.com", "https://auth.kimi.com"),
        ("https://www.kimi.ai/", "https://auth.kimi.ai"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("http://127.0.0.1:9000/kimi-ai", "http://127.0.0.1:9000/kimi-ai"),
    ],
)
def test_auth_origin_is_the_regions_auth_host(base_url: str, auth_url: str) -> None:
    """`www.` hosts refresh on their region's `auth.` host; any other origin serves the RPC itself."""
    assert auth_origin(base_url) == auth_url


async def test_connect_alone_refreshes(kimi_sim: SimServer, session: aiohttp.ClientSession) -> None:
    """With REST refresh broken, Connect RefreshToken alone refreshes: token in the body, no Authorization."""
    kimi_sim.state.faults.arm("http_500", count=5, path=REST_REFRESH_PATH)
    account = kimi_sim.state.add_account("refresh_token")
    result = await KimiAuthClient(session, kimi_sim.url).refresh(account.token)
    assert kimi_sim.state.account_for_access(result.access_token).sub == account.sub
    assert result.refresh_token is not None and result.refresh_token != account.token
    assert refresh_calls(kimi_sim) == [REFRESH_PATH]
    [call] = [r for r in kimi_sim.state.requests if r.path == REFRESH_PATH]
    assert call.body == {"refresh_token": account.token} and "Authorization" not in call.headers
    assert call.headers["Connect-Protocol-Version"] == "1"


async def test_rest_alone_refreshes_after_connect_fails(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """With Connect RefreshToken answering 500, the REST refresh is asked once and its pair is used."""
    kimi_sim.state.faults.arm("http_500", count=1, path=REFRESH_PATH)
    account = kimi_sim.state.add_account("refresh_token")
    result = await KimiAuthClient(session, kimi_sim.url).refresh(account.token)
    assert kimi_sim.state.account_for_access(result.access_token).sub == account.sub
    assert refresh_calls(kimi_sim) == [REFRESH_PATH, REST_REFRESH_PATH]
    rest = next(r for r in kimi_sim.state.requests if r.path == REST_REFRESH_PATH)
    assert rest.method == "GET" and rest.headers["Authorization"] == f"Bearer {account.token}"


async def test_a_dead_token_is_not_asked_of_rest(
    kimi_sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    """A refresh token rotated away answers Connect 401: that is the verdict, REST is not tried."""
    sim = await kimi_sim_factory(rotate_refresh_tokens=True)
    account = sim.state.add_account("refresh_token")
    client = KimiAuthClient(session, sim.url)
    await client.refresh(account.token)
    with pytest.raises(UpstreamAuthError):
        await client.refresh(account.token)
    assert refresh_calls(sim) == [REFRESH_PATH, REFRESH_PATH]


async def test_without_the_fallback_connect_is_the_only_path(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """KIMI_REFRESH_REST_FALLBACK=false: a failed Connect refresh fails the refresh, REST is never called."""
    kimi_sim.state.faults.arm("http_500", count=1, path=REFRESH_PATH)
    account = kimi_sim.state.add_account("refresh_token")
    with pytest.raises(UpstreamUnavailable):
        await KimiAuthClient(session, kimi_sim.url, rest_fallback=False).refresh(account.token)
    assert refresh_calls(kimi_sim) == [REFRESH_PATH]


@pytest.mark.parametrize("broken", [None, REFRESH_PATH], ids=["connect", "rest-fallback"])
async def test_one_holder_refreshes_and_the_rotation_is_persisted(
    redis: aioredis.Redis, kimi_sim_factory: SimFactory, session: aiohttp.ClientSession, broken: str | None
) -> None:
    """Four concurrent leases share one refresh (on either path); the rotated token is stored, the old one dies."""
    sim = await kimi_sim_factory(rotate_refresh_tokens=True)
    if broken:
        sim.state.faults.arm("http_500", count=1, path=broken)
    pool = Accounts(redis, PoolSettings(max_concurrency_per_account=4), session, sim.url)
    original = sim.state.add_account("refresh_token").token
    account, _ = await pool.add(original)
    leases = [await pool.lease() for _ in range(4)]
    creds = await asyncio.gather(*(pool.credentials(lease) for lease in leases))
    assert len({c.access_token for c in creds}) == 1
    assert refresh_calls(sim) == ([REFRESH_PATH, REST_REFRESH_PATH] if broken else [REFRESH_PATH])
    stored = await pool.store.credential(account.id)
    assert stored is not None and stored.secret != original
    assert (await pool.get(account.id)).counters["refreshes"] == 1
    with pytest.raises(UpstreamAuthError):  # the old token is no one's any more
        await pool.auth.refresh(original)
    fresh = await pool.refresher.access_token(
        account.id, force=True
    )  # the stored (rotated) token still works
    assert sim.state.account_for_access(fresh).sub == (await pool.get(account.id)).user_id


async def test_a_second_holder_logs_the_gateway_out(
    redis: aioredis.Redis, kimi_sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    """The README's warning: when the browser refreshes the same session first, the gateway's next refresh is
    refused and the account becomes invalid (`refresh_rejected`), not retried on REST or the other region."""
    sim = await kimi_sim_factory(rotate_refresh_tokens=True)
    pool = Accounts(redis, PoolSettings(), session, sim.url)
    token = sim.state.add_account("refresh_token").token
    account, _ = await pool.add(token)
    await KimiAuthClient(session, sim.url).refresh(token)  # the browser tab, still open, refreshes first
    with pytest.raises(UpstreamAuthError):
        await pool.credentials(await pool.lease())
    invalid = await pool.get(account.id)
    assert (invalid.state, invalid.state_reason) == ("invalid", "refresh_rejected")
    assert refresh_calls(sim) == [REFRESH_PATH, REFRESH_PATH]
