"""`create_app(settings)`: the gateway's aiohttp application, its resources, routes and error middleware.

`/metrics` (account ids, models, traffic) answers a loopback caller that relays no one, a caller from a network
of METRICS_ALLOW, or one that shows the admin key; anyone else gets 401.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.base import RequestContext
from gateway import admin_proxy, openapi
from gateway.attachments.intake import attachment_body_bytes
from gateway.auth import authenticate_local, client_credential
from gateway.client_keys import add_rate_headers, any_managed_keys, managed_key
from gateway.cors import Cors
from gateway.docs import ROUTE_SUMMARIES
from gateway.middleware import error_middleware
from gateway.relay import REQUEST_ID, handle_chat
from gateway.resources import SETTINGS, attachment_intake, passthrough_accounts, redis_clients, reply_reader
from gateway.routes import (
    CHAT_ROUTES,
    DEFAULT_DIALECT,
    LOCAL_ROUTES,
    ROWS,
    SERVICE_ROUTES,
    SUMMARIES,
    ChatRoute,
    LocalRow,
)
from shared.settings import GatewaySettings
from token_service.client import admin_key_offered, is_local_caller

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: GatewaySettings) -> web.Application:
    cors = Cors(settings)
    app = web.Application(
        # CORS first: a preflight is answered before routing errors (405 on a POST-only route) are rendered.
        middlewares=[cors.middleware(), error_middleware(ROWS, DEFAULT_DIALECT)],
        # The larger cap of requests with attachments; the relay holds the others to MAX_BODY_BYTES.
        client_max_size=attachment_body_bytes(settings.max_body_bytes, settings.attachments),
    )
    app[SETTINGS] = settings
    app[ROUTE_SUMMARIES] = SUMMARIES
    app.on_response_prepare.append(add_rate_headers)
    app.on_response_prepare.append(cors.on_prepare)
    app.on_startup.append(openapi.on_startup)
    app.cleanup_ctx.extend(
        [redis_clients, reply_reader, passthrough_accounts, attachment_intake, admin_proxy.admin_forwarder]
    )
    for chat in CHAT_ROUTES:
        app.router.add_route(chat.method, chat.path, _chat_handler(chat))
    for row in LOCAL_ROUTES:
        app.router.add_route(row.method, row.path, _local_handler(row))
    for service in SERVICE_ROUTES:
        handler = _metrics_guard(service.handler, settings) if service.path == "/metrics" else service.handler
        app.router.add_route(service.method, service.path, handler)
    admin_proxy.add_admin_routes(app)  # /auth/*, /token/check, /admin/*: forwarded to the token service
    return app


def _chat_handler(route: ChatRoute) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle_chat(request, route)

    return handler


def _local_handler(row: LocalRow) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        _, answer = row.serving(request.headers, request.query)
        key = await managed_key(request, client_credential(request))
        if key is None:
            settings = request.app[SETTINGS]
            managed = not settings.api_keys and await any_managed_keys(request)
            authenticate_local(request, settings, managed_keys=managed)
        ctx = RequestContext(
            request.get(REQUEST_ID, ""),
            path_model=request.match_info.get("model"),
            query=dict(request.query),
            allowed_models=frozenset(key.models) if key is not None and key.models is not None else None,
        )
        status, headers, body = answer(await request.read(), ctx)
        return web.Response(status=status, headers=headers, body=body)

    return handler


def exposure_warnings(settings: GatewaySettings) -> list[str]:
    """What is unsafe about these settings: an open gateway or admin API on a non-loopback address, or an open
    gateway that every website may call through its visitors' browsers."""
    warnings = []
    if "*" in settings.cors_allow_origins and not settings.api_keys:
        warnings.append(
            "CORS_ALLOW_ORIGINS=* and GATEWAY_API_KEYS is not set: any website a user of this gateway visits can"
            " chat on your Kimi accounts through their browser (docs/SECURITY.md)"
        )
    if _is_loopback_host(settings.host):
        return warnings
    if not settings.api_keys:
        warnings.append(
            f"GATEWAY_HOST={settings.host} and GATEWAY_API_KEYS is not set: anyone who reaches this port chats"
            " on your Kimi accounts (docs/SECURITY.md)"
        )
    if settings.common.admin_api_key is None:
        warnings.append(
            f"GATEWAY_HOST={settings.host} and ADMIN_API_KEY is not set: set it before a proxy or tunnel makes"
            " remote callers look local (docs/SECURITY.md)"
        )
    return warnings


def _is_loopback_host(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _metrics_guard(handler: _Handler, settings: GatewaySettings) -> _Handler:
    allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in settings.metrics_allow]
    key = settings.common.admin_api_key

    async def guarded(request: web.Request) -> web.StreamResponse:
        if is_local_caller(request) or _in(request.remote, allowed) or admin_key_offered(request, key):
            return await handler(request)
        return web.Response(
            status=401,
            text="/metrics answers loopback, METRICS_ALLOW networks, or the admin key (Authorization: Bearer)\n",
        )

    return guarded


def _in(remote: str | None, networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    return any(address in network for network in networks)
