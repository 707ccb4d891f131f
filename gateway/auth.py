"""Client authentication (../shared/DESIGN.md §3), the same for every dialect.

In order: a key of GATEWAY_API_KEYS → the server's account pool; otherwise a credential that is itself one or
more upstream credentials (`Bearer T1,T2`; what counts as one is the token service's kind registry) → those
tokens as pass-through accounts, one picked per request with failover — when pass-through is on
(ALLOW_PASSTHROUGH_TOKENS: `auto`, the default, turns it on only while no client key is configured, neither
in GATEWAY_API_KEYS nor as a managed key in Redis);
otherwise, when no key is configured, the pool (a single user on localhost); else 401.
A bearer holds at most PASSTHROUGH_MAX_TOKENS tokens (400). `check_client` touches no store: the chat handler
calls it before reading the body and stores the tokens (`store_passthrough`) only once the body has parsed.
"""

from __future__ import annotations

import hashlib

from aiohttp import web

from gateway.resources import SETTINGS
from shared.errors import AuthenticationFailed
from shared.settings import GatewaySettings
from token_service.client import (
    PassThroughAccounts,
    check_passthrough,
    check_passthrough_count,
    passthrough_tokens,
)

#: Where each dialect's SDK puts its key: OpenAI and Anthropic (Claude Code) Bearer, Anthropic x-api-key,
#: Gemini x-goog-api-key or ?key=.
_KEY_HEADERS = ("x-api-key", "x-goog-api-key")


def client_credential(request: web.Request) -> str | None:
    """The credential the client sent, wherever its dialect puts it."""
    authorization = request.headers.get("Authorization", "")
    if authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    for header in _KEY_HEADERS:
        value = request.headers.get(header, "").strip()
        if value:
            return value
    return request.query.get("key") or None


def check_client(
    request: web.Request, settings: GatewaySettings, *, managed_keys: bool = False
) -> list[str] | None:
    """The Kimi tokens of a pass-through credential, None for a key or an open gateway; raises
    AuthenticationFailed. `managed_keys`: whether managed client keys exist (then the gateway is not open,
    and `auto` pass-through is off). Touches no store, so the routes that need no job can call it too."""
    credential = client_credential(request)
    if credential is not None and any(key.matches(credential) for key in settings.api_keys):
        return None
    allowed = settings.passthrough_enabled(managed_keys)
    tokens = passthrough_tokens(credential) if credential is not None and allowed else None
    if tokens is not None:
        check_passthrough_count(tokens, settings.pool.passthrough_max_tokens)
        return tokens
    if settings.api_keys or managed_keys:
        if credential is None:
            raise AuthenticationFailed("You didn't provide an API key (Authorization: Bearer <key>).")
        raise AuthenticationFailed("Incorrect API key provided.")
    return None


async def store_passthrough(tokens: list[str] | None, passthrough: PassThroughAccounts) -> list[str] | None:
    """The account ids `check_client`'s tokens may use, or None for the whole pool; raises
    AuthenticationFailed (a token that is garbage or expired)."""
    return None if tokens is None else await passthrough.add(tokens)


def authenticate_local(
    request: web.Request, settings: GatewaySettings, *, managed_keys: bool = False
) -> None:
    """The same rule for a route that needs no job: pass-through tokens are checked, not stored."""
    check_passthrough(check_client(request, settings, managed_keys=managed_keys) or [])


def client_id(request: web.Request, tokens: list[str] | None) -> str:
    """Who asks, as a non-secret id that owns the conversations it keeps: a hash of the client key or of the
    pass-through token set; "" for a caller of an open gateway (no key to tell callers apart)."""
    if tokens is not None:
        return "pt:" + _digest(",".join(sorted(tokens)))
    credential = client_credential(request)
    if credential is None or not request.app[SETTINGS].api_keys:
        return ""
    return "key:" + _digest(credential)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:24]
