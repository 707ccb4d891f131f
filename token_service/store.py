"""Accounts in Redis: one hash per account (`kimi:acct:{pool}:<id>`), the index set, and state transitions.

Hash fields (all strings): kind, sub, exp, iat, state, state_reason, cooling_until_ms, ephemeral, created_ms,
last_used_ms, last_ok_ms, last_error, last_error_ms, preview, device_id, session_id, secret (the sealed
credential: tagged JSON of token_service/kinds.py's union; hashes written before it hold the bare token),
access (sealed access token of a kind that refreshes), access_exp, region (the Kimi region the credential names,
"" when none), base_url (the operator's own origin for the account, "" when none), and counters `n_<name>`.
Secrets are sealed by `SecretBox` and never leave this module except through `credential()` / `access()`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from shared.errors import ServiceUnavailable
from shared.keys import (
    ACCOUNT_COOLING,
    ACCOUNT_INDEX,
    ACCOUNT_READY,
    account_key,
    lease_key,
    refresh_lock_key,
)
from shared.logging import get_logger
from shared.secret import mask
from token_service import metrics
from token_service.crypto import SecretBox
from token_service.jwt_info import iso
from token_service.kinds import (
    STATES,
    AccountState,
    Credential,
    Kind,
    decode_credential,
    encode_credential,
    kind_named,
    kind_of,
)
from token_service.leases import PLACE_LUA, LeaseScripts, place_keys, reply_by_name
from token_service.regions import Origins

COUNTERS = ("leases", "ok", "rate_limited", "quota", "overloaded", "auth_failed", "errors", "refreshes")

Fields = dict[FieldT, EncodableT]
#: The hash fields a call as the account needs; the lease script answers them by name.
IN_USE_FIELDS = (
    "kind",
    "state",
    "ephemeral",
    "sub",
    "device_id",
    "session_id",
    "secret",
    "access",
    "access_exp",
    "region",
    "base_url",
)

log = get_logger("token_service.store")

# Sets the state atomically (only from the states in P.only_from, when that list is not empty) and answers
# the previous one, so each real change is logged exactly once and a worker never revives a disabled account.
# The account then moves to the lease zsets its new state belongs in.
# KEYS: the pool's (ACCOUNT_POOL_KEYS), then KEYS[6] the account hash, KEYS[7] its lease zset.
# P: account_id, to_state, reason, until_ms, only_from. Answers by name: previous_state, written ('1' | '0').
_TRANSITION = (
    PLACE_LUA
    + """
if redis.call('EXISTS', KEYS[6]) == 0 then return {'written', '0'} end
local prev = redis.call('HGET', KEYS[6], 'state') or 'active'
if #P.only_from > 0 then
  local allowed = false
  for _, state in ipairs(P.only_from) do allowed = allowed or state == prev end
  if not allowed then return {'previous_state', prev, 'written', '0'} end
end
redis.call('HSET', KEYS[6], 'state', P.to_state, 'state_reason', P.reason, 'cooling_until_ms', fmt(P.until_ms))
place(P.account_id)
return {'previous_state', prev, 'written', '1'}
"""
)


class Account(msgspec.Struct, frozen=True):
    """One account as the admin API and the CLI show it: no secret, only a masked preview."""

    id: str
    #: A kind's name (token_service/kinds.py), as stored.
    kind: str
    user_id: str
    state: AccountState
    state_reason: str
    preview: str
    ephemeral: bool
    exp: int | None
    expires_at: str | None
    seconds_left: int | None
    hours_left: float | None
    cooling_until: str | None
    created_at: str | None
    last_used_at: str | None
    last_ok_at: str | None
    last_error: str | None
    last_error_at: str | None
    counters: dict[str, int]
    device_id: str = ""
    session_id: str = ""
    access_exp: int | None = None
    cooling_until_ms: int = 0
    last_used_ms: int = 0
    #: The Kimi region its token names ("" when none), its own origin (the operator's, or an API key's platform), and the origin
    #: its calls go to (token_service/regions.py).
    region: str = ""
    base_url: str = ""
    origin: str = ""


@dataclass(frozen=True, slots=True)
class InUse:
    """An account as a call needs it: its kind, its credential (opened) and ids, and any cached access token."""

    kind: Kind[Any]
    credential: Credential
    user_id: str
    device_id: str
    session_id: str
    #: A kind that refreshes: the cached access token and its `exp`, if any.
    access: str | None = None
    access_exp: int | None = None
    region: str = ""
    base_url: str = ""


def now_ms() -> int:
    return int(time.time() * 1000)


class AccountStore:
    """CRUD of accounts and their state machine, on Redis directly."""

    def __init__(
        self, redis: aioredis.Redis, box: SecretBox, scripts: LeaseScripts, origins: Origins | None = None
    ) -> None:
        self.redis = redis
        self.box = box
        self.scripts = scripts
        #: Where each account's calls go; None (pass-through only): its own base_url, else KIMI_BASE_URL.
        self.origins = origins
        self._transition = redis.register_script(_TRANSITION)

    async def save(
        self, credential: Credential, *, ephemeral_ttl_s: int | None = None, base_url: str | None = None
    ) -> tuple[Account, bool]:
        """Store (or replace the credential of) an account; returns it and whether it is new. `base_url` sets
        the account's own origin ("" clears it); None keeps what it had."""
        account_id = credential.identity().account_id
        key = account_key(account_id)
        created = not await self.redis.exists(key)
        fields = _fields_of(credential, ephemeral=ephemeral_ttl_s is not None)
        if not created:
            for field in ("created_ms", "device_id", "session_id", "state", "state_reason"):
                fields.pop(field)
            fields["state"] = "active"
            fields["state_reason"] = "saved"
        if base_url is not None:
            fields["base_url"] = base_url
        fields["secret"] = self.box.seal(encode_credential(credential))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            if not created:
                pipe.hdel(key, "access", "access_exp")
            if ephemeral_ttl_s is not None:
                pipe.expire(key, ephemeral_ttl_s)
            else:
                pipe.persist(key)  # saving a pass-through token makes it a stored account
            pipe.sadd(ACCOUNT_INDEX, account_id)
            await pipe.execute()
        await self.scripts.place(account_id, now_ms())
        if created:
            log.info(
                "account_added",
                account_id=account_id,
                kind=kind_of(credential).name,
                ephemeral=ephemeral_ttl_s is not None,
            )
            metrics.TRANSITIONS.labels(from_state="none", to_state="active", reason="added").inc()
        account = await self.get(account_id)
        assert account is not None
        return account, created

    async def touch_ephemeral(self, account_id: str, ttl_s: int) -> bool:
        """Renew a pass-through account's TTL; False when it does not exist. A stored account keeps no TTL."""
        flag = await self.redis.hget(account_key(account_id), "ephemeral")
        if flag is None:
            return False
        if _str(flag) == "1":
            await self.redis.expire(account_key(account_id), ttl_s)
        return True

    async def get(self, account_id: str) -> Account | None:
        raw = await self.redis.hgetall(account_key(account_id))
        if not raw:
            return None
        fields = {_str(k): _str(v) for k, v in raw.items()}
        origin = self.origin_of(fields.get("region", ""), fields.get("base_url", ""))
        return _account_from(account_id, fields, origin)

    async def ids(self) -> list[str]:
        return sorted(_str(m) for m in await self.redis.smembers(ACCOUNT_INDEX))

    async def list(self) -> list[Account]:
        """Every stored account; index entries whose hash has gone (ephemeral TTL) are dropped."""
        accounts = []
        for account_id in await self.ids():
            account = await self.get(account_id)
            if account is None:
                await self.redis.srem(ACCOUNT_INDEX, account_id)
            else:
                accounts.append(account)
        return accounts

    async def for_use(self, account_id: str) -> InUse | None:
        """What a call as this account needs, in one HMGET; None when the account is gone."""
        raw = await self.redis.hmget(account_key(account_id), list(IN_USE_FIELDS))
        return self.in_use({name: _str(v) if v else "" for name, v in zip(IN_USE_FIELDS, raw, strict=True)})

    def in_use(self, fields: Mapping[str, str]) -> InUse | None:
        """`IN_USE_FIELDS` by name ("" when absent) as an InUse, its secrets opened; None without a kind."""
        kind_name, sealed = fields.get("kind", ""), fields.get("secret", "")
        if not kind_name:
            return None
        if not sealed:
            raise ServiceUnavailable("an account has no stored credential")
        access, access_exp = fields.get("access", ""), fields.get("access_exp", "")
        return InUse(
            kind=kind_named(kind_name),
            credential=decode_credential(self.box.open(sealed), kind_name),
            user_id=fields.get("sub", ""),
            device_id=fields.get("device_id", ""),
            session_id=fields.get("session_id", ""),
            access=self.box.open(access) if access and access_exp else None,
            access_exp=int(access_exp) if access and access_exp else None,
            region=fields.get("region", ""),
            base_url=fields.get("base_url", ""),
        )

    def origin_of(self, region: str, base_url: str) -> str:
        """The origin calls as an account go to; "" when only KIMI_BASE_URL can say (no origins known)."""
        return self.origins.for_account(region, base_url) if self.origins else base_url

    async def origin(self, account_id: str) -> str:
        """Where calls as this account go (token_service/regions.py)."""
        region, base_url = await self.redis.hmget(account_key(account_id), ["region", "base_url"])
        return self.origin_of(_str(region or b""), _str(base_url or b""))

    async def credential(self, account_id: str) -> Credential | None:
        """The account's credential, opened; None when the account (or its credential) is gone."""
        kind_name, sealed = await self.redis.hmget(account_key(account_id), ["kind", "secret"])
        if not sealed:
            return None
        return decode_credential(self.box.open(_str(sealed)), _str(kind_name or b""))

    async def access(self, account_id: str) -> tuple[str, int] | None:
        """The cached access token of an account whose kind refreshes, and its `exp`."""
        stored, exp = await self.redis.hmget(account_key(account_id), ["access", "access_exp"])
        if not stored or not exp:
            return None
        return self.box.open(_str(stored)), int(exp)

    async def set_access(
        self, account_id: str, access: str, exp: int, rotated: Credential | None = None
    ) -> None:
        """Cache a fresh access token; a credential the upstream rotated to replaces the stored one."""
        fields: Fields = {"access": self.box.seal(access), "access_exp": str(exp)}
        if rotated is not None:
            fields["secret"] = self.box.seal(encode_credential(rotated))
            fields["preview"] = mask(rotated.secret)
            rotated_exp = rotated.identity().exp
            if rotated_exp is not None:
                fields["exp"] = str(rotated_exp)
        await self.redis.hset(account_key(account_id), mapping=fields)
        if rotated:
            await self.scripts.place(account_id, now_ms())  # a new `exp` may change where it belongs

    async def drop_access(self, account_id: str) -> None:
        await self.redis.hdel(account_key(account_id), "access", "access_exp")

    async def remove(self, account_id: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(account_key(account_id), lease_key(account_id), refresh_lock_key(account_id))
            pipe.srem(ACCOUNT_INDEX, account_id)
            pipe.zrem(ACCOUNT_READY, account_id)
            pipe.zrem(ACCOUNT_COOLING, account_id)
            deleted, *_ = await pipe.execute()
        if deleted:
            log.info("account_removed", account_id=account_id)
        return bool(deleted)

    async def clear(self) -> int:
        ids = await self.ids()
        for account_id in ids:
            await self.remove(account_id)
        return len(ids)

    async def count(self, account_id: str, counter: str, by: int = 1) -> None:
        await self.redis.hincrby(account_key(account_id), f"n_{counter}", by)

    async def note_ok(self, account_id: str) -> None:
        await self.redis.hset(account_key(account_id), mapping={"last_ok_ms": str(now_ms())})

    async def note_error(self, account_id: str, detail: str) -> None:
        # The detail is operator-facing text from our own code (an error kind and status), never a token.
        text = detail[:200]
        await self.redis.hset(
            account_key(account_id), mapping={"last_error": text, "last_error_ms": str(now_ms())}
        )

    async def transition(
        self,
        account_id: str,
        to_state: AccountState,
        reason: str,
        *,
        until_ms: int = 0,
        only_from: tuple[AccountState, ...] = (),
    ) -> bool:
        """Move an account to a state; logs one line and counts a metric when the state changes.

        Returns whether the state was written (False: no such account, or its state is not in `only_from`).
        """
        params = self.scripts.params(
            now_ms(),
            account_id=account_id,
            to_state=to_state,
            reason=reason,
            until_ms=until_ms,
            only_from=list(only_from),
        )
        reply = reply_by_name(await self._transition(keys=place_keys(account_id), args=[params]))
        if reply["written"] != "1":
            return False
        prev = reply["previous_state"]
        if prev != to_state:
            log.info(
                "account_state",
                account_id=account_id,
                from_state=prev,
                to_state=to_state,
                reason=reason,
                until=iso(until_ms / 1000) if until_ms else None,
            )
            metrics.TRANSITIONS.labels(from_state=prev, to_state=to_state, reason=reason).inc()
        if to_state == "cooling":
            metrics.COOLDOWNS.labels(reason=reason).inc()
        return True


def _fields_of(credential: Credential, *, ephemeral: bool) -> Fields:
    identity = credential.identity()
    fields: Fields = {
        "kind": kind_of(credential).name,
        "sub": identity.user_id,
        "exp": str(identity.exp) if identity.exp is not None else "",
        "iat": str(identity.iat) if identity.iat is not None else "",
        "state": "active",
        "state_reason": "added",
        "cooling_until_ms": "0",
        "ephemeral": "1" if ephemeral else "0",
        "created_ms": str(now_ms()),
        "preview": mask(credential.secret),
        "device_id": identity.device_id or _random_19_digits(),
        "session_id": identity.session_id or _random_19_digits(),
        "region": identity.region,
    }
    # A kind with its own host (an API key's platform) names the account's origin; a web account keeps the
    # operator's own base_url, if any, across saves.
    if (own := credential.origin()) is not None:
        fields["base_url"] = own
    return fields


def _random_19_digits() -> str:
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _account_from(account_id: str, h: dict[str, str], origin: str) -> Account:
    exp = _opt_int(h.get("exp"))
    now = time.time()
    left = exp - int(now) if exp is not None else None
    cooling_ms = _opt_int(h.get("cooling_until_ms")) or 0
    return Account(
        id=account_id,
        kind=h.get("kind", ""),
        user_id=h.get("sub", ""),
        state=_state(h.get("state", "active")),
        state_reason=h.get("state_reason", ""),
        preview=h.get("preview", ""),
        ephemeral=h.get("ephemeral") == "1",
        exp=exp,
        expires_at=iso(exp),
        seconds_left=max(0, left) if left is not None else None,
        hours_left=round(max(0, left) / 3600, 2) if left is not None else None,
        cooling_until=iso(cooling_ms / 1000) if cooling_ms else None,
        created_at=_iso_ms(h.get("created_ms")),
        last_used_at=_iso_ms(h.get("last_used_ms")),
        last_ok_at=_iso_ms(h.get("last_ok_ms")),
        last_error=h.get("last_error") or None,
        last_error_at=_iso_ms(h.get("last_error_ms")),
        counters={name: int(h.get(f"n_{name}", "0")) for name in COUNTERS},
        device_id=h.get("device_id", ""),
        session_id=h.get("session_id", ""),
        access_exp=_opt_int(h.get("access_exp")),
        cooling_until_ms=cooling_ms,
        last_used_ms=_opt_int(h.get("last_used_ms")) or 0,
        region=h.get("region", ""),
        base_url=h.get("base_url", ""),
        origin=origin,
    )


def _state(value: str) -> AccountState:
    for state in STATES:
        if state == value:
            return state
    return "invalid"


def _opt_int(value: str | None) -> int | None:
    return int(value) if value else None


def _iso_ms(value: str | None) -> str | None:
    ms = _opt_int(value)
    return iso(ms / 1000) if ms else None
