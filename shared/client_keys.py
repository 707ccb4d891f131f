"""Managed client keys (issue 14), shared by the token service (admin API, CLI) and the gateway (auth, limits).

Redis layout (every key of one client key carries its id as a hash tag, so a cluster keeps them on one slot):

    kimi:ckeys                          SET   of key ids
    kimi:ckey:{<id>}                    STRING  the key's record (JSON `ClientKey`; no secret, only its hash)
    kimi:ckey:by_hash:<sha256(secret)>  STRING  → id (the lookup of a presented secret)
    kimi:ckey:{<id>}:rpm:<window>       counter of requests in the window (expires with it)
    kimi:ckey:{<id>}:tpm:<window>       estimated tokens in the window
    kimi:ckey:{<id>}:tpd:<day>          estimated tokens that UTC day
    kimi:ckey:{<id>}:conc               ZSET request id → start: requests in flight; a slot older than the
                                        stale time (the request timeout and a minute) no longer counts, so a
                                        crashed gateway leaks nothing for long

A secret is `kgw-` and 40 url-safe characters, shown once at creation (or rotation) and stored only as its
SHA-256. Nothing is cached: every request reads the record, so an update or a revocation holds at once on every
gateway process.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import uuid

import msgspec
import redis.asyncio as aioredis

#: Every managed secret starts with this, so the gateway looks up only credentials that can be one.
SECRET_PREFIX = "kgw-"
INDEX = "kimi:ckeys"
#: How long a concurrency slot counts at most, unless the caller says (a crashed gateway's slots expire).
CONCURRENCY_TTL_S = 900
_DAY_S = 86400


class ClientKey(msgspec.Struct, kw_only=True, omit_defaults=False):
    """One managed client key; the secret itself is never stored."""

    id: str
    name: str
    secret_hash: str
    created_s: float
    #: Model ids (as clients spell them) the key may use; None: every model.
    models: list[str] | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    tokens_per_day: int | None = None
    concurrent_requests: int | None = None
    #: Unix seconds after which the key is refused; None: never.
    expires_s: float | None = None
    enabled: bool = True
    revoked: bool = False
    #: The length of the "minute" windows, 60 s; a test may shorten it (1…60).
    window_s: int = 60

    def usable(self, now_s: float) -> bool:
        return self.enabled and not self.revoked and (self.expires_s is None or now_s < self.expires_s)

    def public(self) -> dict[str, object]:
        """The key as the admin API shows it (no hash: it is not a secret, but nobody needs it)."""
        shown: dict[str, object] = msgspec.to_builtins(self)
        shown.pop("secret_hash")
        return shown


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def record_key(key_id: str) -> str:
    return f"kimi:ckey:{{{key_id}}}"


def hash_key(digest: str) -> str:
    return f"kimi:ckey:by_hash:{digest}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(30)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(ClientKey).decode


class ClientKeys:
    """The store of managed keys over one Redis client."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    async def create(self, key: ClientKey) -> tuple[ClientKey, str]:
        """Store `key` (its id and hash are replaced) under a fresh secret; the key and the secret."""
        secret = new_secret()
        key = msgspec.structs.replace(key, id=uuid.uuid4().hex[:16], secret_hash=secret_hash(secret))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(record_key(key.id), _encode(key))
            pipe.set(hash_key(key.secret_hash), key.id)
            pipe.sadd(INDEX, key.id)
            await pipe.execute()
        return key, secret

    async def get(self, key_id: str) -> ClientKey | None:
        raw = await self.redis.get(record_key(key_id))
        return None if raw is None else _decode(raw)

    async def list(self) -> list[ClientKey]:
        ids = sorted(m.decode() if isinstance(m, bytes) else m for m in await self.redis.smembers(INDEX))
        found = [await self.get(key_id) for key_id in ids]
        return sorted((k for k in found if k is not None), key=lambda k: k.created_s)

    async def save(self, key: ClientKey) -> None:
        await self.redis.set(record_key(key.id), _encode(key))

    async def rotate(self, key: ClientKey) -> tuple[ClientKey, str]:
        """A fresh secret for `key`; the old one stops working at once."""
        secret = new_secret()
        rotated = msgspec.structs.replace(key, secret_hash=secret_hash(secret))
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(hash_key(key.secret_hash))
            pipe.set(hash_key(rotated.secret_hash), key.id)
            pipe.set(record_key(key.id), _encode(rotated))
            await pipe.execute()
        return rotated, secret

    async def delete(self, key: ClientKey) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(hash_key(key.secret_hash), record_key(key.id))
            pipe.srem(INDEX, key.id)
            await pipe.execute()

    async def lookup(self, secret: str) -> ClientKey | None:
        """The key whose secret this is (usable or not), or None."""
        key_id = await self.redis.get(hash_key(secret_hash(secret)))
        if key_id is None:
            return None
        return await self.get(key_id.decode() if isinstance(key_id, bytes) else key_id)


# -- limits -------------------------------------------------------------------------------------------------

#: One check per request, atomic: every limit is tested before any is counted, so a refused request costs
#: nothing. KEYS: rpm, tpm, tpd counters, the conc zset. ARGV: the four limits (-1: none), the estimated tokens,
#: the window's and the day's seconds left, the slots' stale time, now, the request's slot id. Returns {allowed, limit, remaining, reset_s,
#: refused name} where limit/remaining/reset are the tightest limit's (the least remaining after this request).
_LIMIT_SCRIPT = """
local names = {'requests_per_minute', 'tokens_per_minute', 'tokens_per_day', 'concurrent_requests'}
local cost = {1, tonumber(ARGV[5]), tonumber(ARGV[5]), 1}
local reset = {tonumber(ARGV[6]), tonumber(ARGV[6]), tonumber(ARGV[7]), 0}
local best = nil
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[9]) - tonumber(ARGV[8]))
for i = 1, 4 do
  local limit = tonumber(ARGV[i])
  if limit >= 0 then
    local used
    if i == 4 then used = redis.call('ZCARD', KEYS[4]) else used = tonumber(redis.call('GET', KEYS[i]) or '0') end
    local remaining = limit - used - cost[i]
    if remaining < 0 then
      return {0, limit, math.max(limit - used, 0), reset[i], names[i]}
    end
    if best == nil or remaining < best[2] then best = {limit, remaining, reset[i]} end
  end
end
redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]) + 1)
redis.call('INCRBY', KEYS[2], tonumber(ARGV[5])); redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]) + 1)
redis.call('INCRBY', KEYS[3], tonumber(ARGV[5])); redis.call('EXPIRE', KEYS[3], tonumber(ARGV[7]) + 1)
redis.call('ZADD', KEYS[4], tonumber(ARGV[9]), ARGV[10]); redis.call('EXPIRE', KEYS[4], tonumber(ARGV[8]))
if best == nil then return {1, -1, -1, 0, ''} end
return {1, best[1], best[2], best[3], ''}
"""


class LimitVerdict(msgspec.Struct, frozen=True):
    allowed: bool
    #: The tightest limit (-1: the key has none), what is left of it after this request, seconds to its reset.
    limit: int
    remaining: int
    reset_s: int
    #: The limit that refused the request ("" when allowed).
    refused: str

    def headers(self) -> dict[str, str]:
        if self.limit < 0:
            return {}
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(self.remaining, 0)),
            "X-RateLimit-Reset": str(self.reset_s),
        }


class Limits:
    """The per-key limit check and the counters that follow a request's end."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(_LIMIT_SCRIPT)

    @staticmethod
    def _keys(key: ClientKey, now_s: float) -> list[str]:
        base = record_key(key.id)
        window = int(now_s // key.window_s)
        day = int(now_s // _DAY_S)
        return [f"{base}:rpm:{window}", f"{base}:tpm:{window}", f"{base}:tpd:{day}", f"{base}:conc"]

    async def check(
        self,
        key: ClientKey,
        tokens: int,
        slot: str,
        now_s: float | None = None,
        stale_s: int = CONCURRENCY_TTL_S,
    ) -> LimitVerdict:
        """Check and count one request (`slot`: its id, the concurrency slot it takes until `finish`)."""
        now_s = time.time() if now_s is None else now_s
        window_left = max(1, int(key.window_s - now_s % key.window_s + 0.999))
        day_left = max(1, int(_DAY_S - now_s % _DAY_S + 0.999))
        limits = [key.requests_per_minute, key.tokens_per_minute, key.tokens_per_day, key.concurrent_requests]
        args = [-1 if v is None else v for v in limits]
        raw = await self._script(
            keys=self._keys(key, now_s),
            args=[*args, tokens, window_left, day_left, stale_s, now_s, slot],
        )
        allowed, limit, remaining, reset_s, refused = raw
        name = refused.decode() if isinstance(refused, bytes) else str(refused)
        return LimitVerdict(bool(allowed), int(limit), int(remaining), int(reset_s), name)

    async def finish(self, key: ClientKey, slot: str, started_s: float, completion_tokens: int) -> None:
        """Free the request's concurrency slot; count its completion tokens in the windows it started in."""
        _, tpm, tpd, conc = self._keys(key, started_s)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(conc, slot)
            if completion_tokens > 0:
                pipe.incrby(tpm, completion_tokens)
                pipe.expire(tpm, key.window_s + 1)
                pipe.incrby(tpd, completion_tokens)
                pipe.expire(tpd, _DAY_S + 1)
            await pipe.execute()


# -- usage and the request log ------------------------------------------------------------------------------

#: Usage per key, per UTC day, per model: one hash a day, `<model>|<counter>` → number, kept USAGE_TTL_DAYS.
USAGE_COUNTERS = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "estimated_prompt_tokens",
    "estimated_completion_tokens",
    "ttft_ms_sum",
    "ttft_count",
)
USAGE_TTL_DAYS = 35
#: The request log: the last REQUEST_LOG_MAX requests of every client (approximately: XADD MAXLEN ~).
REQUEST_LOG = "kimi:requests"
REQUEST_LOG_MAX = 10_000


def usage_key(key_id: str, day: str) -> str:
    return f"{record_key(key_id)}:usage:{day}"


def day_of(now_s: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now_s))


class RequestRecord(msgspec.Struct, kw_only=True):
    """One line of the request log (never a prompt or an answer); also what usage counts."""

    t: float
    request_id: str
    key: str
    key_id: str
    dialect: str
    model: str
    status: int
    error: str
    account: str
    duration_ms: float
    ttft_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    #: Whether the token counts are the gateway's estimates (not the upstream's own numbers).
    estimated: bool
    #: Only with REQUEST_LOG_BODY_CHARS > 0: the last user message and the answer, redacted and capped.
    prompt: str | None = None
    answer: str | None = None


#: What body capture never stores: keys and tokens of every kind, JWTs, bearer values, e-mail addresses.
_SECRETS = re.compile(
    r"kgw-[\w-]+|sk-[\w-]{8,}|eyJ[\w-]+\.[\w-]+\.[\w-]*|(?i:bearer)\s+\S+|[\w.+-]+@[\w-]+\.[\w.-]+"
)


def redact(text: str, cap: int) -> str:
    """`text` with every secret-looking run replaced by [redacted], cut to `cap` characters."""
    cleaned = _SECRETS.sub("[redacted]", text)
    return cleaned if len(cleaned) <= cap else cleaned[:cap] + "…"


_encode_record = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(RequestRecord).decode


async def record_request(redis: aioredis.Redis, record: RequestRecord) -> None:
    """Count one request in its key's usage (managed keys only) and append it to the request log."""
    async with redis.pipeline(transaction=False) as pipe:
        if record.key_id:
            counts = usage_key(record.key_id, day_of(record.t))
            m = record.model
            pipe.hincrby(counts, f"{m}|requests", 1)
            pipe.hincrby(counts, f"{m}|errors", 1 if record.status >= 400 else 0)
            pipe.hincrby(counts, f"{m}|prompt_tokens", record.prompt_tokens)
            pipe.hincrby(counts, f"{m}|completion_tokens", record.completion_tokens)
            estimated = (record.prompt_tokens, record.completion_tokens) if record.estimated else (0, 0)
            pipe.hincrby(counts, f"{m}|estimated_prompt_tokens", estimated[0])
            pipe.hincrby(counts, f"{m}|estimated_completion_tokens", estimated[1])
            if record.ttft_ms is not None:
                pipe.hincrby(counts, f"{m}|ttft_ms_sum", round(record.ttft_ms))
                pipe.hincrby(counts, f"{m}|ttft_count", 1)
            pipe.expire(counts, USAGE_TTL_DAYS * _DAY_S)
        pipe.xadd(REQUEST_LOG, {"r": _encode_record(record)}, maxlen=REQUEST_LOG_MAX, approximate=True)
        await pipe.execute()


async def key_usage(
    redis: aioredis.Redis, key_id: str, days: int, now_s: float
) -> dict[str, dict[str, object]]:
    """{day: {model: {counter: n, …, "ttft_ms_avg": x | None}}} for the last `days` UTC days (newest first)."""
    out: dict[str, dict[str, object]] = {}
    for back in range(days):
        day = day_of(now_s - back * _DAY_S)
        raw = await redis.hgetall(usage_key(key_id, day))
        models: dict[str, dict[str, float | int | None]] = {}
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else field
            model, _, counter = name.rpartition("|")
            models.setdefault(model, dict.fromkeys(USAGE_COUNTERS, 0))[counter] = int(value)
        for counts in models.values():
            count = counts["ttft_count"] or 0
            counts["ttft_ms_avg"] = round((counts["ttft_ms_sum"] or 0) / count, 2) if count else None
        if models:
            out[day] = dict(models)
    return out


async def read_requests(
    redis: aioredis.Redis,
    *,
    limit: int,
    before: str | None,
    key: str | None,
    status: int | None,
    model: str | None,
) -> tuple[list[dict[str, object]], str | None]:
    """The newest `limit` log lines older than the entry id `before` that match every filter given, and the
    id to pass as `before` for the next page (None: no more)."""
    found: list[dict[str, object]] = []
    upper = f"({before}" if before else "+"
    while len(found) < limit:
        batch = await redis.xrevrange(REQUEST_LOG, max=upper, min="-", count=500)
        if not batch:
            return found, None
        for entry_id, fields in batch:
            entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            upper = f"({entry}"
            record = _decode_record((fields or {})[b"r"])
            if (
                (key is None or record.key == key)
                and (status is None or record.status == status)
                and (model is None or record.model == model)
            ):
                found.append({"id": entry, **msgspec.to_builtins(record)})
                if len(found) == limit:
                    return found, entry
    return found, None
