"""Stored Responses API responses: kept after a finished `POST /v1/responses` (`store`, the default), read by
`GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, removed by `DELETE`, continued by a request
that names one as `previous_response_id`.

A stored response is one JSON value under `stored_response_key` for `STORED_RESPONSE_TTL_S`: the owner (the
request's `client_id`), the response object, its input items, and the conversation so far as canonical
messages (text only: attachments are not kept). It answers its owner only: anyone else gets the same 404 as
for an unknown id. A continuation is replayed as history (the earlier turns before the new input, after the
new request's instructions); Kimi's chat is not kept between turns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from adapters.base import JSON_CONTENT_TYPE, Parsed
from adapters.responses import ResponsesReply
from gateway.auth import check_client, client_id
from gateway.resources import REDIS, SETTINGS
from shared.errors import NotFound, ServiceUnavailable
from shared.keys import STORED_RESPONSE_TTL_S, stored_response_key
from shared.logging import get_logger
from shared.schema import Message, ToolCall


class _Stored(msgspec.Struct):
    owner: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    #: The conversation through this response's output, without any instructions.
    history: list[Message]


log = get_logger(__name__)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Stored)


@asynccontextmanager
async def redis_errors() -> AsyncIterator[None]:
    """Translate redis-py failures at the boundary (as gateway/relay.py does; imported there, so not from it)."""
    try:
        yield
    except RedisError as exc:
        raise ServiceUnavailable("Redis is unreachable; try again shortly.") from exc


def _missing(response_id: str) -> NotFound:
    return NotFound(f"Response with id '{response_id}' not found.", param="response_id")


async def _load(request: web.Request, response_id: str, owner: str) -> _Stored:
    async with redis_errors():
        raw = await request.app[REDIS].get(stored_response_key(response_id))
    stored = _decoder.decode(raw) if raw else None
    if stored is None or stored.owner != owner:
        raise _missing(response_id)
    return stored


def _owner(request: web.Request) -> str:
    return client_id(request, check_client(request, request.app[SETTINGS]))


async def continue_from(request: web.Request, parsed: Parsed) -> Parsed:
    """The request with the history of the response it names as `previous_response_id` before its input."""
    reply = parsed.reply
    previous = reply.echo.get("previous_response_id") if isinstance(reply, ResponsesReply) else None
    if not previous:
        return parsed
    chat = parsed.request
    stored = await _load(request, previous, chat.client_id)
    lead = 1 if reply.echo.get("instructions") else 0  # type: ignore[attr-defined]
    messages = [*chat.messages[:lead], *stored.history, *chat.messages[lead:]]
    return Parsed(msgspec.structs.replace(chat, messages=messages), reply)


async def keep(request: web.Request, parsed: Parsed) -> None:
    """Store the finished response when the request asked for it (`store`, the default)."""
    reply = parsed.reply
    if not isinstance(reply, ResponsesReply) or not reply.sink or not reply.echo.get("store"):
        return
    response = reply.sink[-1]
    lead = 1 if reply.echo.get("instructions") else 0
    history = [_text_only(m) for m in parsed.request.messages[lead:]]
    history.append(_output_message(response["output"]))
    stored = _Stored(parsed.request.client_id, response, reply.input_items, history)
    try:  # the reply has been sent (a stream's bytes are out): a failure here is logged, never an error reply
        await request.app[REDIS].set(
            stored_response_key(response["id"]), _encoder.encode(stored), ex=STORED_RESPONSE_TTL_S
        )
    except RedisError as exc:
        log.warning("response_not_stored", response_id=response["id"], error=str(exc))


def _text_only(message: Message) -> Message:
    if isinstance(message.content, str):
        return message
    return msgspec.structs.replace(message, content=message.text())


def _output_message(output: list[dict[str, Any]]) -> Message:
    """The response's output as one assistant message: its text and its calls (reasoning is not replayed)."""
    text = "".join(
        part["text"]
        for item in output
        if item["type"] == "message"
        for part in item["content"]
        if "text" in part
    )
    calls = [
        ToolCall(item["call_id"], item["name"], item["arguments"])
        for item in output
        if item["type"] == "function_call"
    ]
    return Message(role="assistant", content=text, tool_calls=calls or None)


def _json(value: Any) -> web.Response:
    return web.Response(status=200, body=_encoder.encode(value), content_type=JSON_CONTENT_TYPE)


async def get_response(request: web.Request) -> web.StreamResponse:
    """`GET /v1/responses/{response_id}`: the stored response object."""
    stored = await _load(request, request.match_info["response_id"], _owner(request))
    return _json(stored.response)


async def delete_response(request: web.Request) -> web.StreamResponse:
    """`DELETE /v1/responses/{response_id}`: forget it; `{"id", "object": "response", "deleted": true}`."""
    response_id = request.match_info["response_id"]
    await _load(request, response_id, _owner(request))
    async with redis_errors():
        await request.app[REDIS].delete(stored_response_key(response_id))
    return _json({"id": response_id, "object": "response", "deleted": True})


async def list_input_items(request: web.Request) -> web.StreamResponse:
    """`GET /v1/responses/{response_id}/input_items`: the request's input items, one page (`order`: asc/desc)."""
    stored = await _load(request, request.match_info["response_id"], _owner(request))
    items = stored.input_items if request.query.get("order") == "asc" else stored.input_items[::-1]
    first = items[0]["id"] if items else None
    last = items[-1]["id"] if items else None
    return _json({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": False})
