"""`create_app(settings)`: the gateway's aiohttp application, its resources, routes and error middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters import gemini, openai
from adapters.base import Dialect, RequestContext
from gateway import admin_proxy
from gateway.auth import authenticate_local
from gateway.middleware import ERROR_DIALECT, error_middleware
from gateway.relay import REQUEST_ID, handle_chat
from gateway.resources import SETTINGS, passthrough_accounts, redis_clients, reply_reader
from gateway.routes import CHAT_ROUTES, LOCAL_ROUTES, SERVICE_ROUTES, LocalRow
from shared.settings import GatewaySettings

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(settings: GatewaySettings) -> web.Application:
    dialect_of: dict[tuple[str, str], Dialect] = {}
    for chat in CHAT_ROUTES:
        dialect_of[(chat.method, chat.path)] = chat.dialect
    for row in LOCAL_ROUTES:
        dialect_of[(row.method, row.path)] = row.dialect
    app = web.Application(
        middlewares=[error_middleware(dialect_of, openai.DIALECT)],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app.cleanup_ctx.extend([redis_clients, reply_reader, passthrough_accounts, admin_proxy.admin_forwarder])
    for chat in CHAT_ROUTES:
        app.router.add_route(chat.method, chat.path, _chat_handler(chat.dialect))
    for row in LOCAL_ROUTES:
        app.router.add_route(row.method, row.path, _local_handler(row))
    for method, path, handler in SERVICE_ROUTES:
        app.router.add_route(method, path, handler)
    admin_proxy.add_admin_routes(app)  # /auth/*, /token/check, /admin/*: forwarded to the token service
    return app


def _chat_handler(dialect: Dialect) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle_chat(request, dialect)

    return handler


def _local_handler(row: LocalRow) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        answer = row.answer
        if row.gemini_answer is not None and gemini.is_gemini_caller(request.headers, request.query):
            request[ERROR_DIALECT] = gemini.GENERATE
            answer = row.gemini_answer
        authenticate_local(request, request.app[SETTINGS])
        ctx = RequestContext(
            request.get(REQUEST_ID, ""), path_model=request.match_info.get("model"), query=dict(request.query)
        )
        status, headers, body = answer(await request.read(), ctx)
        return web.Response(status=status, headers=headers, body=body)

    return handler
