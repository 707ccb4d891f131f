"""An account's Kimi region and origin (kimi-web-2026.md §1): read from its token's claims, stored with it,
overridable per account, and used by refresh, probes, /token/check and the credentials a worker leases."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from kimi_sim.server import SimServer
from kimi_sim.tokens import mint_jwt
from shared.errors import BadRequest
from shared.settings import PoolSettings
from tests.stack import sim_regions
from token_service.accounts import Accounts
from token_service.jwt_info import decode_claims
from token_service.prober import check_live, probe
from token_service.regions import Origins, checked_base_url, region_of

ORIGINS = Origins("https://default.example", "https://www.kimi.com", "https://www.kimi.ai")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.mark.parametrize(
    ("claims", "region"),
    [
        ({"aud": ["kimi.ai"], "region": "overseas"}, "global"),
        ({"aud": "kimi.ai"}, "global"),
        ({"region": "overseas"}, "global"),
        ({"aud": ["kimi.com"]}, "cn"),
        ({"aud": ["www.kimi.com"], "region": ""}, "cn"),
        ({"space_id": "x"}, None),
        ({"region": "mainland", "aud": 7}, None),
    ],
)
def test_region_from_claims(claims: dict[str, object], region: str | None) -> None:
    """`aud` naming kimi.ai or `region: overseas` is international, `aud` naming kimi.com China, else unknown."""
    token = mint_jwt({"typ": "access", "app_id": "kimi", "sub": "u", **claims})
    assert region_of(decode_claims(token)) == region


@pytest.mark.parametrize(
    ("region", "base_url", "origin"),
    [
        ("global", "", "https://www.kimi.ai"),
        ("cn", "", "https://www.kimi.com"),
        ("", "", "https://default.example"),
        ("global", "https://proxy.example", "https://proxy.example"),
    ],
)
def test_origin_of_an_account(region: str, base_url: str, origin: str) -> None:
    """The account's own base_url wins, then its region's origin, then KIMI_BASE_URL."""
    assert ORIGINS.for_account(region, base_url) == origin


@pytest.mark.parametrize("bad", ["www.kimi.ai", "ftp://www.kimi.ai", "https://", "https://x?a=1"])
def test_a_base_url_must_be_an_http_origin(bad: str) -> None:
    """An override that is not an http(s) origin is a 400 naming `base_url`."""
    with pytest.raises(BadRequest) as info:
        checked_base_url(bad)
    assert info.value.param == "base_url"


async def test_region_is_stored_and_leased_credentials_carry_the_origin(
    redis: aioredis.Redis, kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """A global refresh_token is stored as `global`, refreshed on the international host, and its leased
    credentials name that origin; an override saved later replaces it, and saving again without one keeps it."""
    pool = Accounts(redis, PoolSettings(**sim_regions(kimi_sim)), session, kimi_sim.url)
    token = kimi_sim.state.add_account("refresh_token", region="global").token
    account, _ = await pool.add(token)
    assert (account.region, account.base_url, account.origin) == ("global", "", kimi_sim.global_url)
    creds = await pool.credentials(await pool.lease())
    assert creds.origin == kimi_sim.global_url
    assert [r.path for r in kimi_sim.state.requests] == [
        "/kimi-ai/api/account.gateway.v1.AuthService/RefreshToken"
    ]
    overridden, _ = await pool.add(token, base_url="https://proxy.example/")
    assert (overridden.base_url, overridden.origin) == ("https://proxy.example", "https://proxy.example")
    kept, _ = await pool.add(token)
    assert kept.origin == "https://proxy.example"


async def test_probes_and_token_check_use_the_accounts_region(
    redis: aioredis.Redis, kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """The prober and /token/check call a global account on the international host, where it is live."""
    pool = Accounts(redis, PoolSettings(**sim_regions(kimi_sim)), session, kimi_sim.url)
    token = kimi_sim.state.add_account("kimi_auth", region="global").token
    account, _ = await pool.add(token)
    assert await probe(pool, account.id) == "ok"
    assert await check_live(pool.auth, token) is True
    assert {r.path for r in kimi_sim.state.requests} == {
        "/kimi-ai/apiv2/kimi.gateway.account.v1.UserService/GetCurrentUser"
    }
    assert await check_live(pool.auth.at(kimi_sim.url), token) is True  # its region decides, not the client's


async def test_a_bad_base_url_is_refused_and_nothing_is_saved(
    redis: aioredis.Redis, kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """Saving with a base_url that is not an http(s) origin is a 400 on `base_url`, and no account is stored."""
    pool = Accounts(redis, PoolSettings(**sim_regions(kimi_sim)), session, kimi_sim.url)
    with pytest.raises(BadRequest) as info:
        await pool.add(kimi_sim.state.add_account("kimi_auth").token, base_url="www.kimi.ai")
    assert (info.value.param, await pool.list()) == ("base_url", [])
