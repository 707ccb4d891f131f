"""Official API keys in the token service: the probe against the simulator's official API, and keys added
through the admin API (kind and base URL shown, the key never)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from kimi_sim.server import SimServer
from shared.errors import UpstreamAuthError, UpstreamQuotaExhausted
from shared.settings import CommonSettings, PoolSettings, TokenServiceSettings
from tests.test_admin_api import AUTH, Bodies, ClientFactory, settings_for
from token_service import api_keys
from token_service.app import create_app
from token_service.kimi_auth import KimiAuthClient
from token_service.kinds import API_KEY, ApiKeyCredential

Client = TestClient[web.Request, web.Application]


async def test_the_probe_reads_the_balance_of_a_live_key(kimi_sim: SimServer) -> None:
    """A live key passes the probe, which is one `GET /v1/users/me/balance` with the key as Bearer."""
    key = kimi_sim.state.official.mint("cn").key
    async with aiohttp.ClientSession() as session:
        credential = ApiKeyCredential(key, f"{kimi_sim.url}/moonshot-cn")
        await API_KEY.probe(KimiAuthClient(session, kimi_sim.url), credential, credential.secret)
    calls = [r for r in kimi_sim.state.requests if r.path.startswith("/moonshot-cn/")]
    assert [(r.method, r.path, r.headers.get("Authorization")) for r in calls] == [
        ("GET", "/moonshot-cn/v1/users/me/balance", f"Bearer {key}")
    ]


@pytest.mark.parametrize(
    ("change", "region", "error"),
    [
        ({}, "moonshot-cn", UpstreamAuthError),  # a global key on the China platform
        ({"revoked": True}, "moonshot", UpstreamAuthError),
        ({"balance": 0.0}, "moonshot", UpstreamQuotaExhausted),
    ],
)
async def test_the_probe_refuses_a_key_of_another_region_a_revoked_one_and_an_empty_balance(
    kimi_sim: SimServer, change: dict[str, object], region: str, error: type[Exception]
) -> None:
    """Another region's key and a revoked key fail as auth errors, a used-up balance as quota; no key in them."""
    minted = kimi_sim.state.official.mint("global")
    for name, value in change.items():
        setattr(minted, "cash_balance" if name == "balance" else name, value)
    async with aiohttp.ClientSession() as session:
        with pytest.raises(error) as caught:
            await api_keys.probe(session, f"{kimi_sim.url}/{region}", minted.key)
    assert minted.key not in str(caught.value)


@pytest.fixture
async def client(aiohttp_client: ClientFactory, redis_url: str, kimi_sim: SimServer) -> Client:
    settings = settings_for(redis_url, kimi_sim.url)
    pool = PoolSettings(moonshot_base_url=f"{kimi_sim.url}/moonshot")
    settings = TokenServiceSettings(
        common=CommonSettings(
            redis_url=redis_url, kimi_base_url=kimi_sim.url, admin_api_key=settings.common.admin_api_key
        ),
        pool=pool,
        max_body_bytes=4096,
    )
    return await aiohttp_client(create_app(settings, background=False))


async def test_keys_are_added_listed_and_probed_through_the_admin_api(
    client: Client, kimi_sim: SimServer
) -> None:
    """/auth/save and /admin/accounts take a key alone (MOONSHOT_BASE_URL) or with `@base`; the list shows the
    kind and base URL, the probe passes, and no answer ever holds a key."""
    bodies = Bodies()
    global_key = kimi_sim.state.official.mint("global").key
    cn_key = kimi_sim.state.official.mint("cn").key
    saved = await bodies.json(client, "POST", "/auth/save", json={"token": global_key}, headers=AUTH)
    text = f"# keys\n{cn_key}@{kimi_sim.url}/moonshot-cn\n"
    added = await bodies.json(client, "POST", "/admin/accounts", json={"text": text}, headers=AUTH)
    assert added["errors"] == [] and [a["kind"] for a in added["added"]] == ["api_key"]
    listed = await bodies.json(client, "GET", "/admin/accounts", headers=AUTH)
    shown = {a["id"]: (a["kind"], a["base_url"], a["state"], a["preview"]) for a in listed["accounts"]}
    assert shown == {
        saved["account_id"]: (
            "api_key",
            f"{kimi_sim.url}/moonshot",
            "active",
            f"{global_key[:6]}…{global_key[-4:]}",
        ),
        added["added"][0]["account_id"]: (
            "api_key",
            f"{kimi_sim.url}/moonshot-cn",
            "active",
            f"{cn_key[:6]}…{cn_key[-4:]}",
        ),
    }
    probed = await bodies.json(client, "POST", "/admin/accounts/probe", headers=AUTH)
    assert set(probed["results"].values()) == {"ok"}
    bodies.assert_no_secret(global_key, cn_key)
