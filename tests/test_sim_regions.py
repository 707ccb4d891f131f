"""The simulator's two regions (kimi-web-2026.md §1, §10): the root is www.kimi.com, `/kimi-ai` is www.kimi.ai;
tokens say their region in the claims of either issuer, and each region answers the other's tokens 401."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from kimi_sim.server import SimServer
from kimi_sim.tokens import decode_claims

USER = "/api/user"
CURRENT_USER = "/apiv2/kimi.gateway.account.v1.UserService/GetCurrentUser"
CONNECT_REFRESH = "/api/account.gateway.v1.AuthService/RefreshToken"
REST_REFRESH = "/api/auth/token/refresh"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize(
    ("region", "issuer", "expected"),
    [
        ("global", None, {"iss": "account", "aud": ["kimi.ai"], "region": "overseas"}),
        ("global", "user-center", {"iss": "user-center", "region": "overseas"}),
        ("cn", "account", {"iss": "account", "aud": ["kimi.com"]}),
        ("cn", None, {"iss": "user-center"}),
    ],
)
def test_tokens_name_their_region_in_either_issuer_style(
    kimi_sim: SimServer, region: str, issuer: str | None, expected: dict[str, object]
) -> None:
    """International tokens carry `region: overseas` (and `aud: [kimi.ai]` from the new issuer), China ones
    `aud: [kimi.com]` from the new issuer and no region claim from the old one; `space_id` only from the old."""
    account = kimi_sim.state.add_account("kimi_auth", region=region, issuer=issuer)
    claims = decode_claims(account.token)
    assert {k: claims[k] for k in ("iss", "aud", "region") if k in claims} == expected
    assert ("space_id" in claims) is (expected["iss"] == "user-center")
    assert ("code_membership" in claims) is (expected["iss"] == "account")


async def _status(http: aiohttp.ClientSession, method: str, url: str, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with http.request(method, url, headers=headers, data=b"{}") as resp:
        return resp.status


async def test_each_region_refuses_the_others_tokens(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A www.kimi.ai token works under `/kimi-ai` and is 401 on the root, and the other way round, on both APIs."""
    intl = kimi_sim.state.add_account("kimi_auth", region="global").token
    china = kimi_sim.state.add_account("kimi_auth").token
    for path, method in ((USER, "GET"), (CURRENT_USER, "POST")):
        assert await _status(http, method, kimi_sim.global_url + path, intl) == 200
        assert await _status(http, method, kimi_sim.url + path, intl) == 401
        assert await _status(http, method, kimi_sim.url + path, china) == 200
        assert await _status(http, method, kimi_sim.global_url + path, china) == 401
    assert [r.path for r in kimi_sim.state.requests][:2] == ["/kimi-ai" + USER, USER]


async def test_get_current_user_names_the_region(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """GetCurrentUser answers `REGION_OVERSEA` on www.kimi.ai (the 2026-09-15 capture) and `REGION_CN` at home."""
    headers = {"Content-Type": "application/json"}
    for url, region, expected in (
        (kimi_sim.global_url, "global", "REGION_OVERSEA"),
        (kimi_sim.url, "cn", "REGION_CN"),
    ):
        token = kimi_sim.state.add_account("kimi_auth", region=region).token
        async with http.post(
            url + CURRENT_USER, headers={**headers, "Authorization": f"Bearer {token}"}, data=b"{}"
        ) as resp:
            assert (await resp.json())["user"]["region"] == expected


async def test_refresh_is_regional_on_both_paths(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """An international refresh token refreshes under `/kimi-ai` (Connect and REST) into international tokens,
    and the China host answers it 401 "invalid claims" / `auth.token.invalid`."""
    token = kimi_sim.state.add_account("refresh_token", region="global").token
    async with http.post(kimi_sim.url + CONNECT_REFRESH, json={"refreshToken": token}) as resp:
        assert resp.status == 401 and (await resp.json())["message"] == "invalid claims"
    async with http.get(kimi_sim.url + REST_REFRESH, headers={"Authorization": f"Bearer {token}"}) as resp:
        assert resp.status == 401 and (await resp.json())["error_type"] == "auth.token.invalid"
    async with http.post(kimi_sim.global_url + CONNECT_REFRESH, json={"refresh_token": token}) as resp:
        pair = await resp.json()
    assert decode_claims(pair["accessToken"])["aud"] == ["kimi.ai"]
    async with http.get(
        kimi_sim.global_url + REST_REFRESH, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert decode_claims((await resp.json())["access_token"])["region"] == "overseas"


async def test_control_api_mints_an_account_of_a_region(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """`POST /__sim/accounts` takes `region` and `issuer` and says them back; an unknown region is 400."""
    async with http.post(
        f"{kimi_sim.url}/__sim/accounts",
        json={"kind": "kimi_auth", "region": "global", "issuer": "user-center"},
    ) as resp:
        minted = await resp.json()
    assert (minted["region"], minted["issuer"]) == ("global", "user-center")
    assert decode_claims(minted["token"])["region"] == "overseas"
    async with http.post(f"{kimi_sim.url}/__sim/accounts", json={"region": "mars"}) as resp:
        assert resp.status == 400 and (await resp.json()) == {"error": "unknown region 'mars'"}
