"""The account pool of a bench run: minted on the simulator, registered with the gateway.

Kimi allows one stream per account, so the direct path gives each load coroutine its own account (and access
token), and the gateway's pool holds twice the highest concurrency: a lease is released only after the worker
has published `Done`, so a client's next request may start before its previous account is free again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import aiohttp
import msgspec

#: Minted refresh tokens live this long; far beyond any run.
ACCOUNT_EXP_S = 30 * 86400
#: Parallel control-API calls while setting up; enough to hide latency, few enough not to flood the services.
SETUP_CONCURRENCY = 16
_T = TypeVar("_T")


class MintedAccount(msgspec.Struct):
    token: str
    sub: str = ""


class RefreshReply(msgspec.Struct):
    access_token: str


_minted_decoder = msgspec.json.Decoder(MintedAccount)
_refresh_decoder = msgspec.json.Decoder(RefreshReply)


class SetupError(RuntimeError):
    pass


async def _bounded(items: Iterable[_T], call: Callable[[_T], Awaitable[str]]) -> list[str]:
    semaphore = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(item: _T) -> str:
        async with semaphore:
            return await call(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


async def mint_refresh_tokens(session: aiohttp.ClientSession, sim_url: str, count: int) -> list[str]:
    """`count` fresh refresh_token accounts from the simulator's control API."""
    body = {"kind": "refresh_token", "exp_in_s": ACCOUNT_EXP_S}

    async def mint(_: int) -> str:
        async with session.post(f"{sim_url}/__sim/accounts", json=body) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise SetupError(f"minting an account: HTTP {resp.status} {payload[:200]!r}")
        return _minted_decoder.decode(payload).token

    return await _bounded(range(count), mint)


async def access_tokens(session: aiohttp.ClientSession, sim_url: str, refresh_tokens: list[str]) -> list[str]:
    """Exchange each refresh token once, as a direct client would before its first chat."""

    async def refresh(token: str) -> str:
        headers = {"Authorization": f"Bearer {token}"}
        async with session.get(f"{sim_url}/api/auth/token/refresh", headers=headers) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise SetupError(f"refreshing a token on the simulator: HTTP {resp.status}")
        return _refresh_decoder.decode(payload).access_token

    return await _bounded(refresh_tokens, refresh)


async def register(
    session: aiohttp.ClientSession, gateway_url: str, token_service_url: str, tokens: list[str]
) -> None:
    """Add every token to the pool: the gateway's `/auth/save`, else the token service's `/admin/accounts`."""

    async def save(token: str) -> str:
        async with session.post(f"{gateway_url}/auth/save", json={"token": token}) as resp:
            payload = await resp.read()
            if resp.status < 300:
                return ""
        if resp.status in (404, 405):
            async with session.post(f"{token_service_url}/admin/accounts", json={"token": token}) as resp:
                payload = await resp.read()
                if resp.status < 300:
                    return ""
        raise SetupError(f"saving an account: HTTP {resp.status} {payload[:300]!r}")

    await _bounded(tokens, save)
