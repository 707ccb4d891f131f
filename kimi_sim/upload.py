"""The REST upload flow (kimi-web-rest.md §4.8): pre-sign URL, object-storage PUT sink, register, parse.

`POST /api/file` creates the file on its first call for an object (answering `initialized`) and reports its
parse on later calls: `parsed` once `file_parse_polls` calls have passed, `failed` for a file armed with
`parse_failed`, `initialized` for ever with `parse_stalled`. The image path registers by the pre-sign
`file_id` alone; the simulator finds the object through it. `parse_process` streams each file's final status,
and `parsing` events every `PARSING_EVERY_S` for a file whose parse never ends, until the client leaves.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Awaitable, Callable

from aiohttp import web

from .common import body_of, encoder, json_response, state_of
from .state import SimAccount, SimFile
from .tokens import new_xid

AuthedHandler = Callable[[web.Request, SimAccount], Awaitable[web.StreamResponse]]
REST_STATUS = {"processing": "initialized", "ready": "parsed", "failed": "failed"}
PARSING_EVERY_S = 0.5
#: A stalled parse stream gives up after this long even if the client stays.
PARSING_MAX_S = 600.0


async def pre_sign_url(request: web.Request, account: SimAccount) -> web.StreamResponse:
    name = str(body_of(request).get("name") or "file")
    object_name = f"{account.sub}/{new_xid()}/{name}"
    file_id = new_xid()
    state_of(request).presigned[file_id] = object_name
    url = f"{request.scheme}://{request.host}/oss/{object_name}"
    return json_response({"url": url, "object_name": object_name, "file_id": file_id})


async def oss_put(request: web.Request) -> web.StreamResponse:
    """The object-storage sink: no Kimi auth (the pre-signed URL is the credential)."""
    data = await request.read()
    state_of(request).objects[request.match_info["object_name"]] = (data, request.content_type)
    return web.Response(status=200)


async def register_file(request: web.Request, account: SimAccount) -> web.StreamResponse:
    body = body_of(request)
    state = state_of(request)
    if state.faults.take("upload_failed", request.path) is not None:
        return json_response({"error_type": "file.upload.failed", "message": "文件上传失败"}, status=500)
    file_id = str(body.get("file_id") or "")
    object_name = str(body.get("object_name") or "") or state.presigned.get(file_id, "")
    key = object_name or file_id or str(body.get("name") or "")
    known = state.registered.get(key)
    if known is not None:
        sim_file = state.files[known]
        if sim_file.owner != account.sub:
            return json_response({"error_type": "file.not_found", "message": "找不到指定的文件"}, status=404)
        return json_response(_detail(sim_file, sim_file.poll()))
    name = str(body.get("name") or "")
    data, put_type = state.objects.get(object_name, (b"", ""))
    if not put_type or put_type == "application/octet-stream":
        put_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    mime = put_type
    kind = "image" if body.get("type") == "image" else "file"
    sim_file = state.add_file(account.sub, "rest", name, mime, kind, data, request.path)
    state.registered[key] = sim_file.id
    return json_response(_detail(sim_file, sim_file.poll()))


def _detail(sim_file: SimFile, status: str) -> dict[str, object]:
    return {
        "id": sim_file.id,
        "name": sim_file.name,
        "size": sim_file.size,
        "status": REST_STATUS[status],
        "type": sim_file.kind,
    }


async def parse_process(request: web.Request, account: SimAccount) -> web.StreamResponse:
    """Waits each file's parse out: its final status at once, or `parsing` while it never ends."""
    ids = body_of(request).get("ids") or []
    state = state_of(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream; charset=utf-8"})
    await response.prepare(request)
    stalled: list[str] = []
    for file_id in ids:
        sim_file = state.file_for(account.sub, str(file_id))
        if sim_file is not None and sim_file.outcome == "never":
            stalled.append(sim_file.id)
            continue
        if sim_file is not None:
            sim_file.pending_polls = 0
        status = REST_STATUS[sim_file.status] if sim_file is not None else "failed"
        await _event(response, str(file_id), status)
    if stalled:
        await _stall(request, response, stalled)
        return response
    await response.write_eof()
    return response


async def _stall(request: web.Request, response: web.StreamResponse, ids: list[str]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + PARSING_MAX_S
    try:
        while loop.time() < deadline and request.transport is not None and not request.transport.is_closing():
            for file_id in ids:
                await _event(response, file_id, "parsing")
            await asyncio.sleep(PARSING_EVERY_S)
    except ConnectionError:
        return


async def _event(response: web.StreamResponse, file_id: str, status: str) -> None:
    event = {"event": "resp", "file_info": {"id": file_id, "status": status}}
    await response.write(b"data: " + encoder.encode(event) + b"\n\n")


def routes(
    authed: Callable[[AuthedHandler], Callable[[web.Request], Awaitable[web.StreamResponse]]],
) -> list[web.RouteDef]:
    return [
        web.post("/api/pre-sign-url", authed(pre_sign_url)),
        web.put("/oss/{object_name:.+}", oss_put),
        web.post("/api/file", authed(register_file)),
        web.post("/api/file/parse_process", authed(parse_process)),
    ]
