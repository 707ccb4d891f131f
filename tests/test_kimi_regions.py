"""The web drivers call each account on its own origin (kimi-web-2026.md §1): a www.kimi.ai account's credentials
name the international host and every call goes there, whatever the driver's configured KIMI_BASE_URL; without
that origin the China host refuses the token."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from shared.attachments import digest
from shared.errors import UpstreamAuthError
from shared.schema import AttachmentPart
from tests.driver_helpers import FAST, call_for, collect, text_of
from tests.driver_helpers import session as session  # the fixture
from upstream_worker.kimi import ConnectDriver, Creds, RestDriver
from upstream_worker.kimi.upload_connect import ConnectUploader

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


async def _global_creds(sim: SimServer, session: aiohttp.ClientSession, kind: str) -> Creds:
    """An international account's credentials as the pool leases them: its access token, its origin."""
    account = sim.state.add_account(kind, region="global")  # type: ignore[arg-type]
    token = account.token
    if kind == "refresh_token":
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{sim.global_url}/api/auth/token/refresh", headers=headers) as resp:
            token = (await resp.json())["access_token"]
    return Creds(account.sub[:12], kind, token, account.sub, account.device_id, account.ssid, sim.global_url)


@pytest.mark.parametrize(
    ("driver_type", "kind", "model"),
    [(RestDriver, "refresh_token", "kimi"), (ConnectDriver, "kimi_auth", "kimi-k2.5-instant")],
    ids=["rest", "connect"],
)
async def test_a_global_account_is_called_on_its_origin(
    kimi_sim: SimServer,
    session: aiohttp.ClientSession,
    driver_type: type[RestDriver] | type[ConnectDriver],
    kind: str,
    model: str,
) -> None:
    """Chat, and the chat's deletion, go to the credentials' origin (with its Origin header); without the origin
    the driver's KIMI_BASE_URL (the China host) answers the same token 401."""
    driver = driver_type(session, kimi_sim.url, FAST)
    creds = await _global_creds(kimi_sim, session, kind)
    kimi_sim.state.requests.clear()
    call = call_for(creds, model, "hello")
    assert text_of(await collect(driver, call)) == answer_for("hello")
    assert await driver.cleanup(call) is True
    logged = list(kimi_sim.state.requests)
    assert logged and all(r.path.startswith("/kimi-ai/") for r in logged)
    assert {r.headers["Origin"] for r in logged} == {kimi_sim.global_url}
    with pytest.raises(UpstreamAuthError):
        await collect(driver, call_for(dataclasses.replace(creds, origin=None), model, "hello"))


async def test_a_global_account_uploads_on_its_origin(
    kimi_sim: SimServer, session: aiohttp.ClientSession
) -> None:
    """A Connect upload and its parse polls go to the account's own (international) host."""
    creds = await _global_creds(kimi_sim, session, "kimi_auth")
    uploader = ConnectUploader(session, kimi_sim.url, FAST)
    part = AttachmentPart(
        sha256=digest(PNG), mime="image/png", name="cat.png", size=len(PNG), kind="image", source="inline"
    )
    uploaded = await uploader.upload(creds, PNG, part)
    assert [u["id"] for u in (u.record() for u in kimi_sim.state.uploads)] == [uploaded.id]
    paths = {r.path for r in kimi_sim.state.requests}
    assert paths == {
        "/kimi-ai/apiv2-files/file/upload",
        "/kimi-ai/apiv2-files/kimi.gateway.file.v1.FileService/GetFileParseProgress",
    }
