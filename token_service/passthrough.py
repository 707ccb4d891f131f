"""Pass-through accounts: a client that brings its own upstream credentials (`Bearer T1,T2`).

    tokens = passthrough_tokens(credential)   # the parts, when every one is meant as an upstream credential
    check_passthrough(tokens)                 # AuthenticationFailed("pass-through token N of M: …")
    ids = await PassThroughAccounts(redis, settings.pool).add(tokens)

A token that is exactly the stored secret of a pool account (compared in constant time) is served by that
account. Any other token becomes a throwaway account named by a keyed hash of the whole token (the key is
random, kept in Redis, shared by every gateway), so a token that merely copies a stored account's `sub` and
`jti` reaches nothing but itself. Throwaway accounts live `EPHEMERAL_ACCOUNT_TTL_S` (renewed on use), are
never leased but when named in `lease(only=…)`, are never probed in the background, and number at most
`PASSTHROUGH_MAX_ACCOUNTS`; one bearer holds at most `PASSTHROUGH_MAX_TOKENS`. Kimi refusing a client's token
is that client's 401: in the reply (gateway/relay.py), and at once for a bearer whose every account Kimi has
refused already. What counts as a credential is
asked of token_service/kinds.py.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Sequence

import redis.asyncio as aioredis

from shared.errors import AuthenticationFailed, BadRequest, ServiceUnavailable
from shared.keys import ACCOUNT_ID_KEY, ACCOUNT_PASSTHROUGH, account_key
from shared.settings import PoolSettings
from token_service.crypto import SecretBox
from token_service.kinds import Credential, admit, is_credential_shaped, max_in_flight
from token_service.leases import LeaseScripts
from token_service.store import AccountStore

#: The prefix of a throwaway account's id, so an operator tells them from pool accounts at a glance.
THROWAWAY_PREFIX = "t"


def passthrough_tokens(credential: str) -> list[str] | None:
    """The parts of a `T1,T2` client credential, or None when any part is not meant as an upstream one."""
    tokens = [token.strip() for token in credential.split(",") if token.strip()]
    if tokens and all(is_credential_shaped(token) for token in tokens):
        return tokens
    return None


def check_count(tokens: Sequence[str], max_tokens: int) -> None:
    """BadRequest when one bearer holds more tokens than a client with real failover needs."""
    if len(tokens) > max_tokens:
        raise BadRequest(
            f"a pass-through bearer holds at most {max_tokens} Kimi tokens (PASSTHROUGH_MAX_TOKENS);"
            f" got {len(tokens)}",
            param="authorization",
        )


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
    """Maps a client's own tokens to accounts: a pool account whose secret they are, or a throwaway one."""

    def __init__(self, redis: aioredis.Redis, settings: PoolSettings) -> None:
        self.redis = redis
        self.ttl_s = settings.ephemeral_ttl_s
        self.max_tokens = settings.passthrough_max_tokens
        self.max_accounts = settings.passthrough_max_accounts
        scripts = LeaseScripts(redis, max_in_flight(settings))
        self.store = AccountStore(redis, SecretBox(settings.token_encryption_key), scripts)
        self._id_key: bytes | None = None

    async def add(self, tokens: Sequence[str]) -> list[str]:
        """The account ids of the tokens, stored or renewed; raises as `check_count` and `check_passthrough`,
        and AuthenticationFailed when Kimi has refused every one of them already (no job can succeed)."""
        check_count(tokens, self.max_tokens)
        ids = [await self._account_for(credential) for credential in check_passthrough(tokens)]
        states = [await self.redis.hget(account_key(account_id), "state") for account_id in ids]
        if all(state in (b"invalid", "invalid") for state in states):
            which = "the pass-through token" if len(ids) == 1 else f"all {len(ids)} pass-through tokens"
            raise AuthenticationFailed(f"Kimi refused {which}; sign in to Kimi again for a new one.")
        return ids

    async def _account_for(self, credential: Credential) -> str:
        pool_id = credential.identity().account_id
        stored = await self.store.credential(pool_id)
        if stored is not None and _same_secret(stored, credential):
            await self.store.touch_ephemeral(pool_id, self.ttl_s)
            return pool_id
        account_id = await self.throwaway_id(credential.secret)
        if await self.store.touch_ephemeral(account_id, self.ttl_s):
            await self._track(account_id)
        else:
            await self._make_room(account_id)
            await self.store.save(credential, ephemeral_ttl_s=self.ttl_s, account_id=account_id)
        return account_id

    async def throwaway_id(self, token: str) -> str:
        """`t` + 11 hex chars of HMAC-SHA256(the gateway's random id key, the whole token)."""
        digest = hmac.new(await self._key(), token.encode(), hashlib.sha256).hexdigest()
        return THROWAWAY_PREFIX + digest[:11]

    async def _key(self) -> bytes:
        if self._id_key is None:
            await self.redis.set(ACCOUNT_ID_KEY, secrets.token_hex(32), nx=True)
            stored = await self.redis.get(ACCOUNT_ID_KEY)
            assert stored is not None
            self._id_key = stored if isinstance(stored, bytes) else str(stored).encode()
        return self._id_key

    async def _make_room(self, account_id: str) -> None:
        """ServiceUnavailable when PASSTHROUGH_MAX_ACCOUNTS throwaway accounts are alive already."""
        now_ms = int(time.time() * 1000)
        await self.redis.zremrangebyscore(ACCOUNT_PASSTHROUGH, "-inf", now_ms)
        if await self.redis.zcard(ACCOUNT_PASSTHROUGH) >= self.max_accounts:
            raise ServiceUnavailable(
                "the gateway holds as many pass-through accounts as it may (PASSTHROUGH_MAX_ACCOUNTS);"
                " try again later",
                retry_after_s=60,
            )
        await self._track(account_id)

    async def _track(self, account_id: str) -> None:
        lapses_ms = int((time.time() + self.ttl_s) * 1000)
        await self.redis.zadd(ACCOUNT_PASSTHROUGH, {account_id: lapses_ms})


def _same_secret(stored: Credential, offered: Credential) -> bool:
    return type(stored) is type(offered) and hmac.compare_digest(
        stored.secret.encode(), offered.secret.encode()
    )
