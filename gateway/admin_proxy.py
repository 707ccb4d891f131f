"""The admin API on the gateway's port: every route of the token service's `ADMIN_ROUTES` (`/auth/*`, the JSON
routes under `/admin/`, `/token/check`) is forwarded to TOKEN_SERVICE_URL, which alone implements them.

Per request: method, path, query and body (at most `ADMIN_MAX_BODY_BYTES`) go over the app's one admin
ClientSession with the headers the token service decides on (`FORWARDED_HEADERS`); a caller whose peer is not
loopback is appended to X-Forwarded-For, so the token service never takes a remote caller for a loopback one.
The answer's status, content type and body come back unchanged. A token service that is down or slower than
`FORWARD_TIMEOUT_S` is a 503 in the admin error shape; so is every other failure here in its own status.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from gateway.resources import SETTINGS
from shared.errors import GatewayError, PayloadTooLarge, ServiceUnavailable
from shared.logging import get_logger
from token_service.client import ADMIN_MAX_BODY_BYTES, ADMIN_ROUTES

#: The slowest admin route, POST /admin/accounts/probe, calls Kimi once per account (each call ≤ 15 s).
FORWARD_TIMEOUT_S = 120.0
#: The token service is on the same host or network: a connection that takes longer is not coming.
CONNECT_TIMEOUT_S = 5.0
#: What the token service decides on: the admin key, the body's type, and who the caller is.
FORWARDED_HEADERS = (
    "Authorization",
    "X-Admin-Key",
    "Content-Type",
    "Host",
    "Origin",
    "Forwarded",
    "X-Forwarded-For",
    "X-Real-IP",
)

log = get_logger("gateway.admin_proxy")
_json = msgspec.json.Encoder()


class AdminForwarder:
    """Relays one admin request to the token service and its answer back."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        token_service_url: str,
        *,
        timeout_s: float = FORWARD_TIMEOUT_S,
        max_body_bytes: int = ADMIN_MAX_BODY_BYTES,
    ) -> None:
        self.session = session
        self.base_url = token_service_url.rstrip("/")
        self.timeout_s = timeout_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=min(timeout_s, CONNECT_TIMEOUT_S))
        self.max_body_bytes = max_body_bytes

    async def forward(self, request: web.Request) -> web.Response:
        try:
            body = await _read_capped(request, self.max_body_bytes)
            return await self._relay(request, body)
        except GatewayError as exc:
            return _error(exc)

    async def _relay(self, request: web.Request, body: bytes) -> web.Response:
        started = time.monotonic()
        url = URL(self.base_url + request.raw_path, encoded=True)
        try:
            async with self.session.request(
                request.method,
                url,
                headers=forwarded_headers(request),
                data=body or None,
                timeout=self.timeout,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
        except TimeoutError:
            self._failed(request, "timeout", started)
            raise ServiceUnavailable(
                f"the token service did not answer within {self.timeout_s:g} s; try again shortly"
            ) from None
        except aiohttp.ClientError as exc:
            self._failed(request, type(exc).__name__, started)
            raise ServiceUnavailable(
                "the token service is unreachable (TOKEN_SERVICE_URL); try again shortly"
            ) from None
        content_type = answer.headers.get("Content-Type")
        return web.Response(
            status=answer.status,
            body=payload,
            headers={"Content-Type": content_type} if content_type else None,
        )

    @staticmethod
    def _failed(request: web.Request, error: str, started: float) -> None:
        route = request.match_info.route.resource
        log.warning(
            "admin_forward_failed",
            route=route.canonical if route is not None else "-",
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000, 2),
        )


FORWARDER = web.AppKey("admin_forwarder", AdminForwarder)


async def admin_forwarder(app: web.Application) -> AsyncIterator[None]:
    """The forwarder and its own ClientSession; no cookie jar, so nothing of one caller reaches another."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        app[FORWARDER] = AdminForwarder(session, app[SETTINGS].token_service_url)
        yield


def add_admin_routes(app: web.Application) -> None:
    """Register every admin route of the token service on `app`, each forwarded by `app[FORWARDER]`."""
    for method, path in ADMIN_ROUTES:
        app.router.add_route(method, path, _forward)


async def _forward(request: web.Request) -> web.Response:
    return await request.app[FORWARDER].forward(request)


def forwarded_headers(request: web.Request) -> CIMultiDict[str]:
    """The caller's headers the token service decides on, its peer added to X-Forwarded-For unless loopback."""
    headers: CIMultiDict[str] = CIMultiDict()
    for name in FORWARDED_HEADERS:
        for value in request.headers.getall(name, []):
            headers.add(name, value)
    peer = request.remote
    if not _is_loopback(peer):
        relayed = [*request.headers.getall("X-Forwarded-For", []), peer or "unknown"]
        headers["X-Forwarded-For"] = ", ".join(relayed)
    return headers


def _is_loopback(peer: str | None) -> bool:
    try:
        return peer is not None and ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The whole body, or PayloadTooLarge as soon as it passes `limit` bytes (declared or read)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"body larger than {limit} bytes")
    raw = bytearray()
    while chunk := await request.content.read(limit + 1 - len(raw)):
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"body larger than {limit} bytes")
    return bytes(raw)


def _error(exc: GatewayError) -> web.Response:
    """An error in the token service's own admin shape, so a client sees one shape whoever answered."""
    body = {"success": False, "error": exc.message, "type": exc.kind, "param": exc.param}
    return web.Response(status=exc.status, body=_json.encode(body), content_type="application/json")
