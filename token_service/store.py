"""Accounts in Redis: one hash per account (`kimi:acct:{pool}:<id>`), the index set, and state transitions.

Hash fields (all strings): kind, sub, exp, iat, state, state_reason, cooling_until_ms, ephemeral, created_ms,
last_used_ms, last_ok_ms, last_error, last_error_ms, preview, device_id, session_id, secret (sealed token),
access (sealed access token of a refresh_token account), access_exp, and counters `n_<name>`.
Secrets are sealed by `SecretBox` and never leave this module except through `secret()` / `access()`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Literal

import msgspec
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from shared.errors import BadRequest
from shared.keys import (
    ACCOUNT_COOLING,
    ACCOUNT_INDEX,
    ACCOUNT_PREFIX,
    ACCOUNT_READY,
    account_key,
    lease_key,
    refresh_lock_key,
)
from shared.logging import get_logger
from shared.secret import mask
from token_service import metrics
from token_service.crypto import SecretBox
from token_service.jwt_info import AccountKind, Claims, account_id_for, decode_claims, iso, kind_of
from token_service.leases import PLACE_LUA, LeaseScripts, place_keys

AccountState = Literal["active", "cooling", "invalid", "expired", "disabled"]
STATES: tuple[AccountState, ...] = ("active", "cooling", "invalid", "expired", "disabled")
COUNTERS = ("leases", "ok", "rate_limited", "quota", "overloaded", "auth_failed", "errors", "refreshes")

Fields = dict[FieldT, EncodableT]
#: The hash fields a Kimi call needs (the lease script answers them too, in this order).
IN_USE_FIELDS = ["kind", "sub", "device_id", "session_id", "secret", "access", "access_exp"]

log = get_logger("token_service.store")

# Sets the state atomically (only from the listed states, when ARGV[4] is not empty) and returns the
# previous one, so each real change is logged exactly once and a worker never revives a disabled account.
# The account then moves to the lease zsets its new state belongs in (ARGV: …, prefix, id, now_ms).
# KEYS: the pool's (ACCOUNT_POOL_KEYS), then KEYS[6] the account hash, KEYS[7] its lease zset.
_TRANSITION = (
    PLACE_LUA
    + """
if redis.call('EXISTS', KEYS[6]) == 0 then return false end
local prev = redis.call('HGET', KEYS[6], 'state') or 'active'
if ARGV[4] ~= '' and not string.find(',' .. ARGV[4] .. ',', ',' .. prev .. ',', 1, true) then
  return {prev, 0}
end
redis.call('HSET', KEYS[6], 'state', ARGV[1], 'state_reason', ARGV[2], 'cooling_until_ms', ARGV[3])
place(ARGV[5], ARGV[6], tonumber(ARGV[7]))
return {prev, 1}
"""
)


class Account(msgspec.Struct, frozen=True):
    """One account as the admin API and the CLI show it: no secret, only a masked preview."""

    id: str
    kind: AccountKind
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


class InUse(msgspec.Struct, frozen=True):
    """An account as a Kimi call needs it: ids, and its kimi-auth token or cached access token (opened)."""

    kind: AccountKind
    user_id: str
    device_id: str
    session_id: str
    #: kimi_auth: the stored token; refresh_token: the cached access token, if any.
    token: str | None = None
    #: refresh_token: the cached access token's `exp`.
    token_exp: int | None = None


class NewToken(msgspec.Struct, frozen=True):
    """A decoded, checked token ready to store."""

    token: str
    claims: Claims
    kind: AccountKind
    account_id: str


def now_ms() -> int:
    return int(time.time() * 1000)


def check_token(token: str, now: float | None = None) -> NewToken:
    """Decode and classify a token; BadRequest when it is garbage, of an unknown type or already expired."""
    token = token.strip()
    claims = decode_claims(token)
    kind = kind_of(claims)
    current = time.time() if now is None else now
    if claims.exp is not None and claims.exp <= current:
        raise BadRequest(f"token is already expired (exp {iso(claims.exp)})", param="token")
    return NewToken(token=token, claims=claims, kind=kind, account_id=account_id_for(token, claims))


class AccountStore:
    """CRUD of accounts and their state machine, on Redis directly."""

    def __init__(self, redis: aioredis.Redis, box: SecretBox) -> None:
        self.redis = redis
        self.box = box
        self._transition = redis.register_script(_TRANSITION)
        self.scripts = LeaseScripts(redis)

    async def save(self, new: NewToken, *, ephemeral_ttl_s: int | None = None) -> tuple[Account, bool]:
        """Store (or replace the secret of) an account; returns it and whether it is new."""
        key = account_key(new.account_id)
        created = not await self.redis.exists(key)
        fields = _fields_of(new, ephemeral=ephemeral_ttl_s is not None)
        if not created:
            for field in ("created_ms", "device_id", "session_id", "state", "state_reason"):
                fields.pop(field)
            fields["state"] = "active"
            fields["state_reason"] = "saved"
        fields["secret"] = self.box.seal(new.token)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            if not created:
                pipe.hdel(key, "access", "access_exp")
            if ephemeral_ttl_s is not None:
                pipe.expire(key, ephemeral_ttl_s)
            else:
                pipe.persist(key)  # saving a pass-through token makes it a stored account
            pipe.sadd(ACCOUNT_INDEX, new.account_id)
            await pipe.execute()
        await self.scripts.place(new.account_id, now_ms())
        if created:
            log.info(
                "account_added",
                account_id=new.account_id,
                kind=new.kind,
                ephemeral=ephemeral_ttl_s is not None,
            )
            metrics.TRANSITIONS.labels(from_state="none", to_state="active", reason="added").inc()
        account = await self.get(new.account_id)
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
        return _account_from(account_id, {_str(k): _str(v) for k, v in raw.items()}) if raw else None

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
        raw = await self.redis.hmget(account_key(account_id), IN_USE_FIELDS)
        return self.in_use([_str(v) if v else "" for v in raw])

    def in_use(self, fields: Sequence[str]) -> InUse | None:
        """`IN_USE_FIELDS` values ("" when absent) as an InUse, its token opened; None without a kind."""
        kind, sub, device_id, session_id, sealed, access, access_exp = fields
        if not kind:
            return None
        if kind != "refresh_token":
            token = self.box.open(sealed) if sealed else None
            return InUse("kimi_auth", sub, device_id, session_id, token)
        if not (access and access_exp):
            return InUse("refresh_token", sub, device_id, session_id)
        return InUse("refresh_token", sub, device_id, session_id, self.box.open(access), int(access_exp))

    async def secret(self, account_id: str) -> str | None:
        stored = await self.redis.hget(account_key(account_id), "secret")
        return self.box.open(_str(stored)) if stored else None

    async def access(self, account_id: str) -> tuple[str, int] | None:
        """The cached access token of a refresh_token account and its `exp`."""
        stored, exp = await self.redis.hmget(account_key(account_id), ["access", "access_exp"])
        if not stored or not exp:
            return None
        return self.box.open(_str(stored)), int(exp)

    async def set_access(self, account_id: str, access: str, exp: int, rotated: str | None) -> None:
        fields: Fields = {"access": self.box.seal(access), "access_exp": str(exp)}
        if rotated:
            fields["secret"] = self.box.seal(rotated)
            fields["preview"] = mask(rotated)
            rotated_exp = decode_claims(rotated).exp
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
        reply = await self._transition(
            keys=place_keys(account_id),
            args=[to_state, reason, until_ms, ",".join(only_from), ACCOUNT_PREFIX, account_id, now_ms()],
        )
        if not reply or not int(reply[1]):
            return False
        prev = _str(reply[0])
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


def _fields_of(new: NewToken, *, ephemeral: bool) -> Fields:
    claims = new.claims
    return {
        "kind": new.kind,
        "sub": claims.sub,
        "exp": str(claims.exp) if claims.exp is not None else "",
        "iat": str(claims.iat) if claims.iat is not None else "",
        "state": "active",
        "state_reason": "added",
        "cooling_until_ms": "0",
        "ephemeral": "1" if ephemeral else "0",
        "created_ms": str(now_ms()),
        "preview": mask(new.token),
        "device_id": claims.device_id or _random_19_digits(),
        "session_id": claims.ssid or _random_19_digits(),
    }


def _random_19_digits() -> str:
    return str(secrets.randbelow(9 * 10**18) + 10**18)


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _account_from(account_id: str, h: dict[str, str]) -> Account:
    exp = _opt_int(h.get("exp"))
    now = time.time()
    left = exp - int(now) if exp is not None else None
    cooling_ms = _opt_int(h.get("cooling_until_ms")) or 0
    return Account(
        id=account_id,
        kind="refresh_token" if h.get("kind") == "refresh_token" else "kimi_auth",
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
