"""Managed client keys in the gateway (issue 14; the store is shared/client_keys.py).

A credential that starts with `kgw-` is looked up by its hash before anything else; unknown, disabled, revoked
or expired → 401 at once (no parse, no pool). A known key then passes, after the body parsed: its model list
(403), and one atomic limit check (429 with Retry-After, naming the limit). Its `X-RateLimit-*` headers go on
every response of the request, stream or not, error or not, through the app's `on_response_prepare`.
"""

from __future__ import annotations

import time

from aiohttp import web
from redis.exceptions import RedisError

from gateway.resources import REDIS, SETTINGS
from shared.client_keys import INDEX, SECRET_PREFIX, ClientKey, ClientKeys, Limits
from shared.errors import AuthenticationFailed, PermissionDenied, RateLimited
from shared.redis_client import gateway_error

RATE_HEADERS = web.RequestKey("rate_headers", dict)

_LIMIT_WORDS = {
    "requests_per_minute": "requests per minute",
    "tokens_per_minute": "estimated tokens per minute",
    "tokens_per_day": "estimated tokens per day",
    "concurrent_requests": "concurrent requests",
}


async def managed_key(request: web.Request, credential: str | None) -> ClientKey | None:
    """The managed key `credential` is, None when it cannot be one; raises AuthenticationFailed for a `kgw-`
    secret that is unknown, disabled, revoked or expired."""
    if credential is None or not credential.startswith(SECRET_PREFIX):
        return None
    try:
        key = await ClientKeys(request.app[REDIS]).lookup(credential)
    except RedisError as exc:
        raise gateway_error(exc) from exc
    if key is None:
        raise AuthenticationFailed("Incorrect API key provided.")
    if key.revoked:
        raise AuthenticationFailed("This API key has been revoked.")
    if not key.enabled:
        raise AuthenticationFailed("This API key is disabled.")
    if not key.usable(time.time()):
        raise AuthenticationFailed("This API key has expired.")
    return key


async def any_managed_keys(request: web.Request) -> bool:
    """Whether any managed key exists: then an open gateway (no GATEWAY_API_KEYS) is open no more."""
    try:
        return bool(await request.app[REDIS].scard(INDEX))
    except RedisError as exc:
        raise gateway_error(exc) from exc


def owner_id(key: ClientKey) -> str:
    """The non-secret id under which a managed key owns what it keeps (chats, stored responses)."""
    return f"ck:{key.id}"


def check_model(key: ClientKey, model: str) -> None:
    if key.models is not None and model not in key.models:
        raise PermissionDenied(f"This API key may not use the model {model!r}.", param="model")


async def admit(request: web.Request, key: ClientKey, prompt_tokens: int, slot: str, now_s: float) -> None:
    """Count one request against the key's limits (atomically, shared by every gateway); raises RateLimited."""
    try:
        # A slot counts at most the request's own deadline and a minute: a crashed gateway's slots expire.
        stale_s = int(request.app[SETTINGS].request_timeout_s) + 60
        verdict = await Limits(request.app[REDIS]).check(key, prompt_tokens, slot, now_s, stale_s)
    except RedisError as exc:
        raise gateway_error(exc) from exc
    request[RATE_HEADERS] = verdict.headers()
    if not verdict.allowed:
        words = _LIMIT_WORDS.get(verdict.refused, verdict.refused)
        raise RateLimited(
            f"Rate limit reached for {words}: limit {verdict.limit}; retry in {max(verdict.reset_s, 1)} s.",
            retry_after_s=max(verdict.reset_s, 1),
        )


async def add_rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: the request's `X-RateLimit-*` headers, before they are sent."""
    headers = request.get(RATE_HEADERS)
    if headers:
        response.headers.update(headers)
