"""`create_app(settings)`: the gateway's aiohttp application, its resources, routes and error middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.base import RequestContext
from gateway import admin_proxy
from gateway.attachments.intake import attachment_body_bytes
from gateway.auth import authenticate_local
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

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: GatewaySettings) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(ROWS, DEFAULT_DIALECT)],
        # The larger cap of requests with attachments; the relay holds the others to MAX_BODY_BYTES.
        client_max_size=attachment_body_bytes(settings.max_body_bytes, settings.attachments),
    )
    app[SETTINGS] = settings
    app[ROUTE_SUMMARIES] = SUMMARIES
    app.cleanup_ctx.extend(
        [redis_clients, reply_reader, passthrough_accounts, attachment_intake, admin_proxy.admin_forwarder]
    )
    for chat in CHAT_ROUTES:
        app.router.add_route(chat.method, chat.path, _chat_handler(chat))
    for row in LOCAL_ROUTES:
        app.router.add_route(row.method, row.path, _local_handler(row))
    for service in SERVICE_ROUTES:
        app.router.add_route(service.method, service.path, service.handler)
    admin_proxy.add_admin_routes(app)  # /auth/*, /token/check, /admin/*: forwarded to the token service
    return app


def _chat_handler(route: ChatRoute) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle_chat(request, route)

    return handler


def _local_handler(row: LocalRow) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        _, answer = row.serving(request.headers, request.query)
        authenticate_local(request, request.app[SETTINGS])
        ctx = RequestContext(
            request.get(REQUEST_ID, ""), path_model=request.match_info.get("model"), query=dict(request.query)
        )
        status, headers, body = answer(await request.read(), ctx)
        return web.Response(status=status, headers=headers, body=body)

    return handler
