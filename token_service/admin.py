"""The admin token API, served by the token service alone (`add_admin_routes(app)`); the gateway forwards
every route of `ADMIN_ROUTES` to it (gateway/admin_proxy.py).

    POST /auth/extract        {"cookies": …}            → {success, token (whole), token_info}
    POST /auth/save           {"cookies"|"token": …, "base_url"?} → {success, account_id, token_info}
    GET  /auth/status                                   → {has_token, accounts: […]}
    POST /auth/clear                                    → {success, removed}
    GET  /auth/clear                                    → 405: no state changes on GET (kimi-free-api-fix
                                                          cleared on GET; any web page's <img> could do it)
    POST /token/check         {"token": …}              → {"live": bool}   (not admin-protected)
    GET  /admin/accounts                                → {accounts: […]}
    POST /admin/accounts      {"token"|"tokens"|"text", "base_url"?} → {added: […], errors: […]}
    DELETE /admin/accounts/{id};  POST /admin/accounts/{id}/enable | /disable | /probe
    POST /admin/accounts/probe                          → {results: {id: verdict}}
    POST /admin/keys          {name, models?, limits?, expires_s?, enabled?} → {success, key, secret (once)}
    GET  /admin/keys                                    → {keys: […]}
    GET|PATCH|DELETE /admin/keys/{id};  POST /admin/keys/{id}/revoke | /rotate (→ the new secret, once)
    GET  /admin/keys/{id}/usage?days=7                  → {key, days: {day: {model: counters}}}
    GET  /admin/requests?limit&before&key&status&model  → {requests: […], next: before-id | null}
    GET  /admin/system                                  → {jobs, workers: […], accounts, stale_after_s, now_ms}
                                                          (token_service/system.py: queue, heartbeats, pool)

The gateway's `GET /admin` page (gateway/pages.py) is a client of these routes and nothing else.

The host app stores an `AdminContext` under `ADMIN_CONTEXT` (from a cleanup_ctx, next to its Accounts).
Protection: ADMIN_API_KEY as `Authorization: Bearer` or `X-Admin-Key`, compared in constant time; without a
key only local callers are served (others get 401): a loopback peer that sent no Forwarded / X-Forwarded-For /
X-Real-IP header (a remote caller relayed by a proxy on this host — the gateway adds the caller's address — is
never taken for a local one), whose `Host` is a loopback name (DNS rebinding) and whose `Origin`, if any, is
the origin of that Host (a page of another origin is refused). Bodies must be `application/json`, so a web page
cannot send one without a CORS preflight; path ids are checked against the index. Only /auth/extract answers a
whole token (its purpose is to hand the admin back the token found in what they pasted, as kimi-free-api-fix
does); every other response shows masked previews.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, NamedTuple, TypeVar
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from shared.client_keys import ClientKey, ClientKeys, key_usage, read_requests
from shared.errors import (
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    NotFound,
    PayloadTooLarge,
)
from shared.logging import get_logger
from shared.secret import Secret
from token_service import prober
from token_service.accounts import Accounts
from token_service.jwt_info import decode_claims, extract_jwt, token_info
from token_service.kinds import IN_SERVICE, name_of
from token_service.store import Account
from token_service.system import WORKER_STALE_S, system_snapshot

log = get_logger("token_service.admin")


@dataclass(frozen=True, slots=True)
class AdminContext:
    accounts: Accounts
    admin_api_key: Secret | None
    max_body_bytes: int
    #: The managed client keys (shared/client_keys.py).
    keys: ClientKeys | None = None
    #: A worker heartbeat older than this is dead (GET /admin/system), as for the gateway's /readyz.
    worker_stale_s: float = WORKER_STALE_S


ADMIN_CONTEXT: web.AppKey[AdminContext] = web.AppKey("admin_context", AdminContext)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
#: Headers a proxy adds for the caller it relays; any of them means the peer is not the caller.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")
#: Host names that only ever resolve to this machine (RFC 6761 §6.3), besides loopback addresses.
LOOPBACK_NAMES = ("localhost",)
#: What an account id looks like (12 hex chars today; room for a longer id of a later kind).
ACCOUNT_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
#: A client key's id (16 hex chars).
KEY_ID = re.compile(r"[0-9a-f]{16}")
Positive = Annotated[int, msgspec.Meta(ge=1)]
KeyName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_.@-]+$")]
ModelId = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Window = Annotated[int, msgspec.Meta(ge=1, le=60)]


class ExtractBody(msgspec.Struct, forbid_unknown_fields=False):
    cookies: str


class SaveBody(msgspec.Struct, forbid_unknown_fields=False):
    cookies: str | None = None
    token: str | None = None
    #: The account's own Kimi origin (token_service/regions.py); absent: its region's.
    base_url: str | None = None


class CheckBody(msgspec.Struct, forbid_unknown_fields=False):
    token: str


class AddBody(msgspec.Struct, forbid_unknown_fields=False):
    token: str | None = None
    tokens: list[str] | None = None
    text: str | None = None
    base_url: str | None = None


class KeyCreateBody(msgspec.Struct, forbid_unknown_fields=True):
    name: KeyName
    models: list[ModelId] | None = None
    requests_per_minute: Positive | None = None
    tokens_per_minute: Positive | None = None
    tokens_per_day: Positive | None = None
    concurrent_requests: Positive | None = None
    expires_s: Annotated[float, msgspec.Meta(gt=0)] | None = None
    enabled: bool = True
    window_s: Window = 60


#: PATCH: only the fields sent change; `null` clears a limit, the model list or the expiry.
_PATCHABLE = {f: t for f, t in KeyCreateBody.__annotations__.items()}


_json = msgspec.json.Encoder()


def add_admin_routes(app: web.Application) -> None:
    """Register every admin route on `app`; the app must hold an `AdminContext` under `ADMIN_CONTEXT`."""
    for route in ADMIN_ROUTES:
        handler = _admin(route.handler) if route.protected else _errors(route.handler)
        app.router.add_route(route.method, route.path, handler)


# -- handlers -----------------------------------------------------------------------------------------------


async def extract(request: web.Request) -> web.Response:
    """The token found in pasted cookies, whole (kimi-web-connect.md §4.6): the admin asked for it back."""
    body = await _body(request, ExtractBody)
    token = extract_jwt(body.cookies)
    if token is None:
        return _ok({"success": False, "error": "No kimi-auth token found in the provided cookies string"})
    return _ok({"success": True, "token": token, "token_info": _info_or_error(token)})


async def save(request: web.Request) -> web.Response:
    body = await _body(request, SaveBody)
    raw = body.token or body.cookies
    if not raw:
        raise BadRequest("give the token as `token` or `cookies`", param="token")
    account, created = await _ctx(request).accounts.add(raw, body.base_url)
    info = _info_or_error(extract_jwt(raw) or raw.strip())
    return _ok({"success": True, "account_id": account.id, "created": created, "token_info": info})


async def status(request: web.Request) -> web.Response:
    accounts = [a for a in await _ctx(request).accounts.list() if not a.ephemeral]
    usable = any(a.state in IN_SERVICE for a in accounts)
    return _ok({"has_token": usable, "accounts": [_public(a) for a in accounts]})


async def clear(request: web.Request) -> web.Response:
    if request.method != "POST":
        raise BadRequest("GET /auth/clear changes nothing here: use POST /auth/clear", status=405)
    removed = await _ctx(request).accounts.clear()
    return _ok({"success": True, "removed": removed, "message": f"removed {removed} account(s)"})


async def check(request: web.Request) -> web.Response:
    body = await _body(request, CheckBody)
    return _ok({"live": await prober.check_live(_ctx(request).accounts.auth, body.token)})


async def list_accounts(request: web.Request) -> web.Response:
    return _ok({"accounts": [_public(a) for a in await _ctx(request).accounts.list()]})


async def add_accounts(request: web.Request) -> web.Response:
    body = await _body(request, AddBody)
    candidates = [*(body.tokens or []), *([body.token] if body.token else []), *_lines(body.text)]
    if not candidates:
        raise BadRequest("give `token`, `tokens` or `text` (one token per line)", param="token")
    added: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for line, candidate in enumerate(candidates, start=1):
        try:
            account, created = await _ctx(request).accounts.add(candidate, body.base_url)
            added.append({"account_id": account.id, "created": created, "kind": account.kind})
        except BadRequest as exc:
            errors.append({"line": line, "error": exc.message})
    return _ok({"success": not errors, "added": added, "errors": errors})


async def remove_account(request: web.Request) -> web.Response:
    await _ctx(request).accounts.remove(await _account_id(request))
    return _ok({"success": True})


async def enable_account(request: web.Request) -> web.Response:
    account = await _ctx(request).accounts.enable(await _account_id(request))
    return _ok({"success": True, "account": _public(account)})


async def disable_account(request: web.Request) -> web.Response:
    account = await _ctx(request).accounts.disable(await _account_id(request))
    return _ok({"success": True, "account": _public(account)})


async def probe_account(request: web.Request) -> web.Response:
    accounts = _ctx(request).accounts
    account_id = await _account_id(request)
    result = await prober.probe(accounts, account_id)
    return _ok({"result": result, "account": _public(await accounts.get(account_id))})


async def probe_all(request: web.Request) -> web.Response:
    accounts = _ctx(request).accounts
    results = {
        a.id: await prober.probe_account(accounts, a) for a in await accounts.list() if a.state != "disabled"
    }
    return _ok({"results": results})


async def create_key(request: web.Request) -> web.Response:
    body = await _body(request, KeyCreateBody)
    template = ClientKey(id="", name=body.name, secret_hash="", created_s=time.time())
    template = msgspec.structs.replace(template, **_fields(body))
    key, secret = await _keys(request).create(template)
    log.info("client_key_created", key_id=key.id, name=key.name)
    return _ok({"success": True, "key": key.public(), "secret": secret}, 201)


async def list_keys(request: web.Request) -> web.Response:
    return _ok({"keys": [k.public() for k in await _keys(request).list()]})


async def get_key(request: web.Request) -> web.Response:
    return _ok({"key": (await _client_key(request)).public()})


async def update_key(request: web.Request) -> web.Response:
    key = await _client_key(request)
    raw = await _read_capped(request, _ctx(request).max_body_bytes)
    if request.content_type != "application/json":
        raise BadRequest("admin bodies are JSON: send Content-Type: application/json", status=415)
    try:
        sent = msgspec.json.decode(raw or b"{}")
    except msgspec.DecodeError:
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(sent, dict):
        raise BadRequest("the body is a JSON object")
    for name in sent:
        if name not in _PATCHABLE:
            raise BadRequest(f"unknown field {name!r}", param=str(name))
    # Validate the merged key through the create schema: one set of rules for both.
    merged = {f: getattr(key, f) for f in _PATCHABLE} | sent
    try:
        body = msgspec.convert(merged, KeyCreateBody)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}", param=_field_of(str(exc))) from None
    updated = msgspec.structs.replace(key, name=body.name, **_fields(body))
    await _keys(request).save(updated)
    return _ok({"success": True, "key": updated.public()})


async def revoke_key(request: web.Request) -> web.Response:
    key = msgspec.structs.replace(await _client_key(request), revoked=True, enabled=False)
    await _keys(request).save(key)
    log.info("client_key_revoked", key_id=key.id, name=key.name)
    return _ok({"success": True, "key": key.public()})


async def rotate_key(request: web.Request) -> web.Response:
    key, secret = await _keys(request).rotate(await _client_key(request))
    log.info("client_key_rotated", key_id=key.id, name=key.name)
    return _ok({"success": True, "key": key.public(), "secret": secret})


async def delete_key(request: web.Request) -> web.Response:
    await _keys(request).delete(await _client_key(request))
    return _ok({"success": True})


async def usage_of_key(request: web.Request) -> web.Response:
    key = await _client_key(request)
    days = _int_query(request, "days", 7, 1, 35)
    usage = await key_usage(_keys(request).redis, key.id, days, time.time())
    return _ok({"key": key.public(), "days": usage})


async def list_requests(request: web.Request) -> web.Response:
    """The request log, newest first, a page at a time, filtered by key name, status and model."""
    limit = _int_query(request, "limit", 50, 1, 1000)
    status = _int_query(request, "status", 0, 100, 599) if "status" in request.query else None
    before = request.query.get("before")
    if before is not None and not re.fullmatch(r"\d{1,20}-\d{1,20}", before):
        raise BadRequest("`before` is a request log id such as 1700000000000-0", param="before")
    found, next_id = await read_requests(
        _keys(request).redis,
        limit=limit,
        before=before,
        key=request.query.get("key"),
        status=status,
        model=request.query.get("model"),
    )
    return _ok({"requests": found, "next": next_id})


async def system(request: web.Request) -> web.Response:
    """The job stream, the workers' heartbeats and the pool by state and kind (token_service/system.py)."""
    ctx = _ctx(request)
    accounts = await ctx.accounts.list()
    return _ok(await system_snapshot(ctx.accounts.store.redis, accounts, ctx.worker_stale_s))


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"`{name}` is a whole number from {low} to {high}", param=name)
    return int(raw)


def _fields(body: KeyCreateBody) -> dict[str, Any]:
    return {f: getattr(body, f) for f in _PATCHABLE if f != "name"}


class AdminRoute(NamedTuple):
    method: str
    path: str
    handler: Handler
    #: Needs the admin key (or a loopback caller when none is set).
    protected: bool = True


#: The admin HTTP surface, in one place: the token service serves it, the gateway forwards it.
ADMIN_ROUTES: tuple[AdminRoute, ...] = (
    AdminRoute("POST", "/auth/extract", extract),
    AdminRoute("POST", "/auth/save", save),
    AdminRoute("GET", "/auth/status", status),
    AdminRoute("POST", "/auth/clear", clear),
    AdminRoute("GET", "/auth/clear", clear),
    AdminRoute("POST", "/token/check", check, protected=False),
    AdminRoute("GET", "/admin/accounts", list_accounts),
    AdminRoute("POST", "/admin/accounts", add_accounts),
    AdminRoute("POST", "/admin/accounts/probe", probe_all),
    AdminRoute("DELETE", "/admin/accounts/{account_id}", remove_account),
    AdminRoute("POST", "/admin/accounts/{account_id}/enable", enable_account),
    AdminRoute("POST", "/admin/accounts/{account_id}/disable", disable_account),
    AdminRoute("POST", "/admin/accounts/{account_id}/probe", probe_account),
    AdminRoute("POST", "/admin/keys", create_key),
    AdminRoute("GET", "/admin/keys", list_keys),
    AdminRoute("GET", "/admin/keys/{key_id}", get_key),
    AdminRoute("PATCH", "/admin/keys/{key_id}", update_key),
    AdminRoute("DELETE", "/admin/keys/{key_id}", delete_key),
    AdminRoute("POST", "/admin/keys/{key_id}/revoke", revoke_key),
    AdminRoute("POST", "/admin/keys/{key_id}/rotate", rotate_key),
    AdminRoute("GET", "/admin/keys/{key_id}/usage", usage_of_key),
    AdminRoute("GET", "/admin/requests", list_requests),
    AdminRoute("GET", "/admin/system", system),
)


# -- plumbing -----------------------------------------------------------------------------------------------


def _ctx(request: web.Request) -> AdminContext:
    return request.config_dict[ADMIN_CONTEXT]


async def _account_id(request: web.Request) -> str:
    """The path's account id: 400 unless it looks like one, 404 unless the index holds it (never a bare
    Redis key such as the index itself)."""
    account_id = request.match_info["account_id"]
    if not ACCOUNT_ID.fullmatch(account_id):
        raise BadRequest("an account id is 1 to 64 letters, digits, - or _", param="account_id")
    if not await _ctx(request).accounts.store.indexed(account_id):
        raise NotFound(f"no account {account_id!r}", param="account_id")
    return account_id


def _keys(request: web.Request) -> ClientKeys:
    keys = _ctx(request).keys
    if keys is None:
        raise NotFound("this service keeps no client keys")
    return keys


async def _client_key(request: web.Request) -> ClientKey:
    """The path's key: 400 unless its id looks like one, 404 unless it exists."""
    key_id = request.match_info["key_id"]
    if not KEY_ID.fullmatch(key_id):
        raise BadRequest("a key id is 16 hex characters", param="key_id")
    key = await _keys(request).get(key_id)
    if key is None:
        raise NotFound(f"no client key {key_id!r}", param="key_id")
    return key


def _ok(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(payload), status=status, content_type="application/json")


def _public(account: Account) -> dict[str, Any]:
    """An account as the API shows it (the Struct has no secret; only the masked preview)."""
    shown: dict[str, Any] = msgspec.to_builtins(account)
    for internal in ("access_exp", "cooling_until_ms", "last_used_ms", "device_id", "session_id"):
        shown.pop(internal, None)
    return shown


def _info_or_error(token: str) -> dict[str, object]:
    try:
        return token_info(decode_claims(token), name_of(token))
    except BadRequest:
        return {"valid": False, "error": "Failed to decode JWT payload"}


def _lines(text: str | None) -> list[str]:
    return [line for line in (text or "").splitlines() if line.strip() and not line.lstrip().startswith("#")]


async def _body(request: web.Request, schema: type[T]) -> T:
    limit = _ctx(request).max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    raw = await _read_capped(request, limit)
    if raw and request.content_type != "application/json":
        raise BadRequest("admin bodies are JSON: send Content-Type: application/json", status=415)
    try:
        return msgspec.json.decode(raw or b"{}", type=schema)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"invalid body: {exc}", param=_field_of(str(exc))) from None
    except msgspec.DecodeError:
        raise BadRequest("the body is not valid JSON") from None


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The whole body (it may arrive in many TCP writes), or PayloadTooLarge once it passes `limit` bytes."""
    raw = bytearray()
    while chunk := await request.content.read(limit + 1 - len(raw)):
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(raw)


def _field_of(message: str) -> str | None:
    """msgspec says `… - at `$.cookies`` or `Object missing required field `cookies``."""
    for marker in ("at `$.", "required field `", "unknown field `"):
        if marker in message:
            return message.split(marker, 1)[1].split("`")[0].split(".")[0].split("[")[0]
    return None


def _admin(handler: Handler) -> Handler:
    return _errors(_protected(handler))


def _protected(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        authorize(request, _ctx(request).admin_api_key)
        return await handler(request)

    return guarded


def authorize(request: web.Request, key: Secret | None) -> None:
    """Raise unless the caller shows the admin key (or, with no key configured, calls from loopback)."""
    if key is None:
        if not is_local_caller(request):
            raise AuthenticationFailed(
                "ADMIN_API_KEY is not set, so admin routes answer only to loopback callers;"
                " set it and send it as Authorization: Bearer <key> or X-Admin-Key"
            )
        return
    if not admin_key_offered(request, key):
        raise AuthenticationFailed("admin key missing or wrong (Authorization: Bearer <key> or X-Admin-Key)")


def admin_key_offered(request: web.Request, key: Secret | None) -> bool:
    """Whether the request shows the admin key (never true while none is configured)."""
    offered = request.headers.get("X-Admin-Key") or _bearer(request.headers.get("Authorization", ""))
    return key is not None and bool(offered) and key.matches(offered)


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def is_local_caller(request: web.Request) -> bool:
    """A loopback peer that relays no one (no proxy header), addressed by a loopback Host, and sent by no
    page but one of that Host's own origin."""
    if not is_loopback(request.remote) or any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    host = request.headers.get("Host", "")
    if not _is_loopback_host(host):
        return False
    origin = request.headers.get("Origin")
    return origin is None or _same_origin(origin, host)


def _is_loopback_host(host: str) -> bool:
    """`localhost`, `x.localhost`, `127.0.0.1`, `[::1]`, with or without a port."""
    try:
        name = urlsplit(f"//{host}").hostname or ""
    except ValueError:
        return False
    return name in LOOPBACK_NAMES or name.endswith(".localhost") or is_loopback(name)


def _same_origin(origin: str, host: str) -> bool:
    """Whether a browser's Origin is the page of the Host it addressed: a loopback name, the same port."""
    try:
        parts = urlsplit(origin)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        host_port = urlsplit(f"//{host}").port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return False
    return _is_loopback_host(parts.netloc) and port == host_port


def is_loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


def _errors(handler: Handler) -> Handler:
    async def rendered(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            log.info("admin_error", path=request.path, kind=exc.kind, status=exc.status)
            return _ok(
                {"success": False, "error": exc.message, "type": exc.kind, "param": exc.param}, exc.status
            )

    return rendered
