"""`create_app(settings)`: the gateway's aiohttp application, its resources, routes and error middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters import gemini, openai
from adapters.base import Dialect, RequestContext
from gateway.auth import authenticate_local
from gateway.middleware import ERROR_DIALECT, error_middleware
from gateway.relay import REQUEST_ID, handle_chat
from gateway.resources import SETTINGS, account_pool, http_session, redis_clients, reply_reader
from gateway.routes import CHAT_ROUTES, LOCAL_ROUTES, SERVICE_ROUTES, ChatRoute, LocalRow
from shared.settings import GatewaySettings
from token_service.admin import add_admin_routes

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
    app.cleanup_ctx.extend([redis_clients, reply_reader, http_session, account_pool])
    for chat in CHAT_ROUTES:
        app.router.add_route(chat.method, chat.path, _chat_handler(chat))
    for row in LOCAL_ROUTES:
        app.router.add_route(row.method, row.path, _local_handler(row))
    for method, path, handler in SERVICE_ROUTES:
        app.router.add_route(method, path, handler)
    add_admin_routes(app)  # /auth/*, /token/check, /admin/accounts: the token service's own handlers
    return app


def _chat_handler(route: ChatRoute) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await handle_chat(request, route)

    return handler


def _local_handler(row: LocalRow) -> _Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        answer = row.answer
        if row.gemini_answer is not None and gemini.is_gemini_caller(request.headers, request.query):
            request[ERROR_DIALECT] = gemini.DIALECT
            answer = row.gemini_answer
        authenticate_local(request, request.app[SETTINGS])
        ctx = RequestContext(
            request.get(REQUEST_ID, ""), path_model=request.match_info.get("model"), query=dict(request.query)
        )
        status, headers, body = answer(await request.read(), ctx)
        return web.Response(status=status, headers=headers, body=body)

    return handler
