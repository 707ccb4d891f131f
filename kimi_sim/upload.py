"""The REST upload flow (kimi-web-rest.md §4.8): pre-sign URL, object-storage PUT sink, register, parse."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .common import body_of, encoder, json_response, state_of
from .state import SimAccount
from .tokens import new_xid

AuthedHandler = Callable[[web.Request, SimAccount], Awaitable[web.StreamResponse]]


async def pre_sign_url(request: web.Request, account: SimAccount) -> web.StreamResponse:
    name = str(body_of(request).get("name") or "file")
    object_name = f"{account.sub}/{new_xid()}/{name}"
    url = f"{request.scheme}://{request.host}/oss/{object_name}"
    return json_response({"url": url, "object_name": object_name, "file_id": new_xid()})


async def oss_put(request: web.Request) -> web.StreamResponse:
    data = await request.read()
    state_of(request).uploads[request.match_info["object_name"]] = len(data)
    return web.Response(status=200)


async def register_file(request: web.Request, account: SimAccount) -> web.StreamResponse:
    """The first call for an object answers `initialized`, every later one `parsed`."""
    body = body_of(request)
    state = state_of(request)
    key = str(body.get("object_name") or body.get("file_id") or body.get("name") or "")
    known = state.files.get(key)
    if known is not None:
        known["status"] = "parsed"
        return json_response(known)
    file_id = str(body.get("file_id") or "") or new_xid()
    size = state.uploads.get(str(body.get("object_name") or ""), 0)
    detail: dict[str, Any] = {
        "id": file_id,
        "name": str(body.get("name") or ""),
        "size": size,
        "status": "initialized",
        "type": str(body.get("type") or "file"),
    }
    state.files[key] = detail
    return json_response(detail)


async def parse_process(request: web.Request, account: SimAccount) -> web.StreamResponse:
    ids = body_of(request).get("ids") or []
    state = state_of(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    for file_id in ids:
        for detail in state.files.values():
            if detail["id"] == file_id:
                detail["status"] = "parsed"
        event = {"event": "resp", "file_info": {"id": file_id, "status": "parsed"}}
        await response.write(b"data: " + encoder.encode(event) + b"\n\n")
    await response.write_eof()
    return response


def routes(
    authed: Callable[[AuthedHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]],
) -> list[web.RouteDef]:
    return [
        web.post("/api/pre-sign-url", authed(pre_sign_url)),
        web.put("/oss/{object_name:.+}", oss_put),
        web.post("/api/file", authed(register_file)),
        web.post("/api/file/parse_process", authed(parse_process)),
    ]
