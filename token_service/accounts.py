"""The token service's own view of the pool: what workers do (token_service/pool.py) plus managing accounts.

    accounts = Accounts(redis, settings.pool, session, settings.common.kimi_base_url)
    account, created = await accounts.add(pasted_text)      # any kind the registry recognises
    await accounts.disable(account.id); await accounts.enable(account.id); await accounts.remove(account.id)

The admin API, the CLI and the prober work through it; the gateway and the workers never see it (they import
token_service/client.py). Probes live in token_service/prober.py, which depends on this module, never the
reverse.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import aiohttp
import redis.asyncio as aioredis

from shared.errors import NotFound
from shared.settings import PoolSettings
from token_service.kinds import admit
from token_service.passthrough import PassThroughAccounts
from token_service.pool import AccountPool
from token_service.regions import checked_base_url
from token_service.store import Account, now_ms


class Accounts(AccountPool):
    """Leases, plus adding, listing, enabling, disabling and removing accounts."""

    def __init__(
        self,
        redis: aioredis.Redis,
        settings: PoolSettings,
        session: aiohttp.ClientSession,
        kimi_base_url: str,
    ) -> None:
        super().__init__(redis, settings, session, kimi_base_url)
        self.passthrough = PassThroughAccounts(redis, settings)

    async def add(self, text: str, base_url: str | None = None) -> tuple[Account, bool]:
        """Save the credential in pasted text (BadRequest when no kind recognises it or it has expired);
        what the text left out (an API key's
        base URL) comes from the settings; `base_url` gives a web account its own origin (token_service/regions.py), "" clears it."""
        own = checked_base_url(base_url) if base_url else base_url
        return await self.store.save(admit(text).with_defaults(self.settings), base_url=own)

    async def add_ephemeral(self, tokens: Sequence[str]) -> list[str]:
        """Pass-through tokens as accounts with a TTL, as the gateway stores them."""
        return await self.passthrough.add(tokens)

    async def list(self) -> list[Account]:
        return await self.store.list()

    async def get(self, account_id: str) -> Account:
        account = await self.store.get(account_id)
        if account is None:
            raise NotFound(f"no account {account_id!r}", param="account_id")
        return account

    async def remove(self, account_id: str) -> None:
        if not await self.store.remove(account_id):
            raise NotFound(f"no account {account_id!r}", param="account_id")

    async def clear(self) -> int:
        return await self.store.clear()

    async def disable(self, account_id: str) -> Account:
        await self.get(account_id)
        await self.store.transition(account_id, "disabled", "admin")
        return await self.get(account_id)

    async def enable(self, account_id: str) -> Account:
        account = await self.get(account_id)
        expired = account.exp is not None and account.exp <= time.time()
        await self.store.transition(account_id, "expired" if expired else "active", "admin")
        return await self.get(account_id)

    async def in_flight(self, account_id: str) -> int:
        return await self.scripts.in_flight(account_id, now_ms())

    async def resync(self) -> None:
        """Rebuild the lease zsets from the account hashes (the prober does it every pass, to heal drift)."""
        await self.scripts.rebuild(now_ms())
