"""The admin token API, served by the token service alone (`add_admin_routes(app)`); the gateway forwards
every route of `ADMIN_ROUTES` to it (gateway/admin_proxy.py).

    POST /auth/extract        {"cookies": …}            → {success, token (whole), token_info}
    POST /auth/save           {"cookies"|"token": …, "base_url"?} → {success, account_id, token_info}
    GET  /auth/status                                   → {has_token, accounts: […]}
    POST /auth/clear (GET kept for compatibility)       → {success, removed}
    POST /token/check         {"token": …}              → {"live": bool}   (not admin-protected)
    GET  /admin/accounts                                → {accounts: […]}
    POST /admin/accounts      {"token"|"tokens"|"text", "base_url"?} → {added: […], errors: […]}
    DELETE /admin/accounts/{id};  POST /admin/accounts/{id}/enable | /disable | /probe
    POST /admin/accounts/probe                          → {results: {id: verdict}}

The host app stores an `AdminContext` under `ADMIN_CONTEXT` (from a cleanup_ctx, next to its Accounts).
Protection: ADMIN_API_KEY as `Authorization: Bearer` or `X-Admin-Key`, compared in constant time; without a
key only loopback callers are served (others get 401): a loopback peer that sent no Forwarded /
X-Forwarded-For / X-Real-IP header, so a remote caller relayed by a proxy on this host (the gateway adds the
caller's address) is never taken for a local one. Only /auth/extract answers a whole token (its purpose is to hand
the admin back the token found in what they pasted, as kimi-free-api-fix does); every other response shows masked
previews.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import msgspec
from aiohttp import web

from shared.errors import AuthenticationFailed, BadRequest, GatewayError, PayloadTooLarge
from shared.logging import get_logger
from shared.secret import Secret
from token_service import prober
from token_service.accounts import Accounts
from token_service.jwt_info import decode_claims, extract_jwt, token_info
from token_service.kinds import IN_SERVICE, name_of
from token_service.store import Account

log = get_logger("token_service.admin")


@dataclass(frozen=True, slots=True)
class AdminContext:
    accounts: Accounts
    admin_api_key: Secret | None
    max_body_bytes: int


ADMIN_CONTEXT: web.AppKey[AdminContext] = web.AppKey("admin_context", AdminContext)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
T = TypeVar("T")
#: Headers a proxy adds for the caller it relays; any of them means the peer is not the caller.
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


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
    await _ctx(request).accounts.remove(request.match_info["account_id"])
    return _ok({"success": True})


async def enable_account(request: web.Request) -> web.Response:
    return _ok(
        {
            "success": True,
            "account": _public(await _ctx(request).accounts.enable(request.match_info["account_id"])),
        }
    )


async def disable_account(request: web.Request) -> web.Response:
    account = await _ctx(request).accounts.disable(request.match_info["account_id"])
    return _ok({"success": True, "account": _public(account)})


async def probe_account(request: web.Request) -> web.Response:
    accounts = _ctx(request).accounts
    account_id = request.match_info["account_id"]
    result = await prober.probe(accounts, account_id)
    return _ok({"result": result, "account": _public(await accounts.get(account_id))})


async def probe_all(request: web.Request) -> web.Response:
    accounts = _ctx(request).accounts
    results = {
        a.id: await prober.probe_account(accounts, a) for a in await accounts.list() if a.state != "disabled"
    }
    return _ok({"results": results})


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
)


# -- plumbing -----------------------------------------------------------------------------------------------


def _ctx(request: web.Request) -> AdminContext:
    return request.config_dict[ADMIN_CONTEXT]


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
    for marker in ("at `$.", "required field `"):
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
    offered = request.headers.get("X-Admin-Key") or _bearer(request.headers.get("Authorization", ""))
    if not offered or not key.matches(offered):
        raise AuthenticationFailed("admin key missing or wrong (Authorization: Bearer <key> or X-Admin-Key)")


def _bearer(header: str) -> str:
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def is_local_caller(request: web.Request) -> bool:
    """A loopback peer that relays no one: no proxy header says the request came from elsewhere."""
    return is_loopback(request.remote) and not any(name in request.headers for name in FORWARDING_HEADERS)


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
