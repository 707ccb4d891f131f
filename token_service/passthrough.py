"""Pass-through accounts: a client that brings its own upstream credentials (`Bearer T1,T2`).

    tokens = passthrough_tokens(credential)   # the parts, when every one is meant as an upstream credential
    check_passthrough(tokens)                 # AuthenticationFailed("pass-through token N of M: …")
    ids = await PassThroughAccounts(redis, settings.pool).add(tokens)

Each token becomes an ephemeral account (a TTL, never leased but when named in `lease(only=…)`), so it serves
only the client that sent it; the same token always maps to the same id and only has its TTL renewed. A token
already stored as a pool account keeps no TTL. What counts as a credential is asked of token_service/kinds.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from shared.errors import AuthenticationFailed, BadRequest
from shared.settings import PoolSettings
from token_service.crypto import SecretBox
from token_service.kinds import Credential, admit, is_credential_shaped, max_in_flight
from token_service.leases import LeaseScripts
from token_service.store import AccountStore


def passthrough_tokens(credential: str) -> list[str] | None:
    """The parts of a `T1,T2` client credential, or None when any part is not meant as an upstream one."""
    tokens = [token.strip() for token in credential.split(",") if token.strip()]
    if tokens and all(is_credential_shaped(token) for token in tokens):
        return tokens
    return None


def check_passthrough(tokens: Sequence[str]) -> list[Credential]:
    """Each token's credential; AuthenticationFailed naming the first one that is garbage or expired."""
    credentials = []
    for position, token in enumerate(tokens, start=1):
        try:
            credentials.append(admit(token))
        except BadRequest as exc:
            raise AuthenticationFailed(
                f"pass-through token {position} of {len(tokens)}: {exc.message}"
            ) from None
    return credentials


class PassThroughAccounts:
    """Stores a client's own tokens as ephemeral accounts for `EPHEMERAL_ACCOUNT_TTL_S`."""

    def __init__(self, redis: aioredis.Redis, settings: PoolSettings) -> None:
        self.ttl_s = settings.ephemeral_ttl_s
        scripts = LeaseScripts(redis, max_in_flight(settings))
        self.store = AccountStore(redis, SecretBox(settings.token_encryption_key), scripts)

    async def add(self, tokens: Sequence[str]) -> list[str]:
        """The account ids of the tokens, stored or renewed; raises as `check_passthrough` does."""
        ids = []
        for credential in check_passthrough(tokens):
            account_id = credential.identity().account_id
            if not await self.store.touch_ephemeral(account_id, self.ttl_s):
                await self.store.save(credential, ephemeral_ttl_s=self.ttl_s)
            ids.append(account_id)
        return ids
