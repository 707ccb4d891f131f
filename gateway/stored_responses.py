"""Stored Responses API responses: kept after a finished `POST /v1/responses` (`store`, the default), read by
`GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, removed by `DELETE`, continued by a request
that names one as `previous_response_id`.

A stored response is one JSON value under `stored_response_key` for `STORED_RESPONSE_TTL_S`: the owner (the
request's `client_id`), the response object, its input items, the conversation so far as canonical messages
(text only: attachments are not kept), and the Kimi conversation its turn ran in when the chat was kept (a
web lane with `store`). It answers its owner only: anyone else gets the same 404 as for an unknown id.

A kept chat is also a member of `CHATS_SWEEP`, scored by when its latest stored response lapses plus
`REQUEST_TIMEOUT_S` (a continuation that claimed the chat just before then has ended by that time, and a
stored continuation moves the score later): the workers' sweeper (upstream_worker/sweeper.py) then deletes the
chat from its Kimi account, so a loop of `responses.create` does not fill the account's chat history. Deleting
the chat's latest response makes the chat due at once.

A continuation (`Turn`) runs one of two ways:
- natively: the request has `store`, the previous response has a kept chat whose record still exists, it was
  answered on the same web lane (`_same_lane`), and it is still that chat's latest turn
  (`response_chat_head_key`, claimed atomically, so two continuations of one response never both append to
  its chat). The job continues the chat (`conversation_id`) with only the new input (and the instructions,
  when they changed);
- by replay, otherwise: the stored history goes before the new input, in a new chat. A native continuation
  that the worker refuses before the first byte (the chat or its account gone: `NotFound`,
  `ServiceUnavailable`; its account rate-limited, still streaming, or refused by Kimi: `UpstreamRateLimited`,
  `UpstreamAuthError`, which another account may not be) is run once more this way, as a new job.
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from adapters.base import JSON_CONTENT_TYPE, Parsed
from adapters.responses import ResponsesReply
from gateway.auth import check_client, client_credential, client_id
from gateway.client_keys import any_managed_keys, managed_key, owner_id
from gateway.resources import REDIS, SETTINGS
from shared.errors import GatewayError, NotFound, ServiceUnavailable, UpstreamAuthError, UpstreamRateLimited
from shared.keys import (
    CHATS_SWEEP,
    CONVERSATION_TTL_S,
    conversation_key,
    response_chat_head_key,
    stored_response_key,
)
from shared.logging import get_logger
from shared.models import resolve_model
from shared.schema import Message, ToolCall


class _Stored(msgspec.Struct):
    owner: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    #: The conversation through this response's output, without any instructions.
    history: list[Message]
    #: The kept Kimi conversation this response's turn ran in; "" when none was kept (API key, `store: false`).
    conversation: str = ""


log = get_logger(__name__)
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_Stored)
#: Error kinds of a native continuation refused before the first byte that a replay can still answer: the
#: chat (or its record) is gone, or its account cannot serve (disabled, removed, Kimi unreachable for it, rate
#: limited or still streaming another turn, its token refused): the pinned job could not fail over, a replay
#: in a new chat may take any account.
_REPLAYABLE: Final = frozenset(
    {NotFound.kind, ServiceUnavailable.kind, UpstreamRateLimited.kind, UpstreamAuthError.kind}
)
#: Sweep a deleted response's chat now, only while the response is the chat's head (a newer turn or one in
#: flight keeps it); dropping the head also stops a continuation claiming it meanwhile. KEYS: head, sweep set;
#: ARGV: response id, conversation, now (ms).
_SWEEP_NOW_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  return 1
end
return 0
"""
#: Claim a chat's head for a continuation: only while the head is the previous response and the chat's
#: conversation record exists. KEYS: head, conversation record; ARGV: previous id, claim, ttl.
_CLAIM_LUA: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


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


async def _owner(request: web.Request) -> str:
    """Who asks, as the chat routes name the owner (gateway/relay.py): `ck:<id>` for a managed key, else the
    hash of a static key or of a pass-through token set; raises AuthenticationFailed as they do."""
    key = await managed_key(request, client_credential(request))
    if key is not None:
        return owner_id(key)
    settings = request.app[SETTINGS]
    managed = not settings.api_keys and await any_managed_keys(request)
    return client_id(request, check_client(request, settings, managed_keys=managed))


@dataclass(slots=True)
class Turn:
    """One `POST /v1/responses` around its job: what runs (`parsed`), and what the stored response keeps."""

    request: web.Request
    #: The request as the client sent it: its input only.
    original: Parsed
    #: What the job runs: the original, a native continuation, or the stored history replayed before it.
    parsed: Parsed
    #: The stored conversation before this request's input ([] without `previous_response_id`).
    earlier: list[Message] = field(default_factory=list)
    #: The job continues the previous response's Kimi chat.
    native: bool = False

    def replay_instead(self, exc: GatewayError) -> bool:
        """After a native continuation refused before the first byte (`exc`): run the replay as a new job
        (a new request id: the refused job's reply stream is spent). False when there is nothing to retry."""
        if not self.native or exc.kind not in _REPLAYABLE:
            return False
        log.info("native_continuation_refused", request_id=self.parsed.request.request_id, error=exc.kind)
        if isinstance(self.original.reply, ResponsesReply):  # the refused run may have adopted the old chat
            self.original.reply.kept_chat.clear()
            self.original.reply.sink.clear()
        replay = _replayed(self.original, self.earlier)
        chat = msgspec.structs.replace(replay.request, request_id=uuid.uuid4().hex)
        self.parsed, self.native = Parsed(chat, replay.reply), False
        return True

    async def keep(self) -> None:
        """Store the finished response when the request asked for it (`store`, the default)."""
        reply = self.parsed.reply
        if not isinstance(reply, ResponsesReply) or not reply.sink or not reply.echo.get("store"):
            return
        response = reply.sink[-1]
        history = [*self.earlier, *(_text_only(m) for m in _input(self.original))]
        history.append(_output_message(response["output"]))
        conversation = reply.kept_chat[-1] if reply.kept_chat else ""
        stored = _Stored(self.original.request.client_id, response, reply.input_items, history, conversation)
        settings = self.request.app[SETTINGS]
        ttl_ms = round(settings.stored_response_ttl_s * 1000)
        try:  # the reply has been sent (a stream's bytes are out): a failure here is logged, never an error reply
            pipe = self.request.app[REDIS].pipeline(transaction=False)
            pipe.set(stored_response_key(response["id"]), _encoder.encode(stored), px=ttl_ms)
            if conversation:
                pipe.set(response_chat_head_key(conversation), response["id"], ex=CONVERSATION_TTL_S)
                due_ms = time.time() * 1000 + ttl_ms + settings.request_timeout_s * 1000
                pipe.zadd(CHATS_SWEEP, {conversation: round(due_ms)})
            await pipe.execute()
        except RedisError as exc:
            log.warning("response_not_stored", response_id=response["id"], error=str(exc))


async def begin(request: web.Request, parsed: Parsed) -> Turn:
    """The turn of a request: with `previous_response_id`, the stored response's continuation (404 when it is
    unknown or another client's), natively when it can be, else by replay."""
    reply = parsed.reply
    previous = reply.echo.get("previous_response_id") if isinstance(reply, ResponsesReply) else None
    if not previous:
        return Turn(request, parsed, parsed)
    stored = await _load(request, previous, parsed.request.client_id)
    if await _claim(request, parsed, previous, stored):
        return Turn(request, parsed, _continued(parsed, stored), stored.history, native=True)
    return Turn(request, parsed, _replayed(parsed, stored.history), stored.history)


async def _claim(request: web.Request, parsed: Parsed, previous: str, stored: _Stored) -> bool:
    """Whether the previous response's chat can be continued natively, and if so, claim its head."""
    chat = parsed.request
    if not chat.options.keep_chat or not stored.conversation:
        return False
    if not _same_lane(str(stored.response.get("model", "")), chat.model):
        return False
    keys = (response_chat_head_key(stored.conversation), conversation_key(stored.conversation))
    async with redis_errors():
        claimed = await request.app[REDIS].eval(
            _CLAIM_LUA, 2, *keys, previous, f"pending:{chat.request_id}", CONVERSATION_TTL_S
        )
    return bool(claimed)


def _same_lane(previous: str, model: str) -> bool:
    """Whether `model` can continue a chat `previous` answered in: the same web lane (protocol, scenario, Kimi+
    agent), e.g. a thinking and an instant K2.5, whose turns differ only in options Kimi takes per message."""
    before, after = resolve_model(previous), resolve_model(model)
    if before is None or after is None:
        return False
    lane = operator.attrgetter("protocol", "scenario", "kimiplus_id", "agent_mode")
    return bool(lane(before) == lane(after))


def _continued(parsed: Parsed, stored: _Stored) -> Parsed:
    """The request as the next turn of the stored response's Kimi chat: its own input only, and its
    instructions only when they differ from those the chat already holds."""
    chat, reply = parsed.request, parsed.reply
    messages = _input(parsed)
    instructions = reply.echo.get("instructions")  # type: ignore[attr-defined]
    if instructions and instructions != stored.response.get("instructions"):
        messages = [chat.messages[0], *messages]
    options = msgspec.structs.replace(chat.options, conversation_id=stored.conversation, keep_chat=True)
    return Parsed(msgspec.structs.replace(chat, messages=messages, options=options), reply)


def _replayed(parsed: Parsed, earlier: list[Message]) -> Parsed:
    """The request with the stored history before its input, after its own instructions, in a new chat."""
    chat = parsed.request
    lead = _lead(parsed)
    messages = [*chat.messages[:lead], *earlier, *chat.messages[lead:]]
    return Parsed(msgspec.structs.replace(chat, messages=messages), parsed.reply)


def _lead(parsed: Parsed) -> int:
    """How many messages before the input: the instructions' system message, when there are instructions."""
    reply = parsed.reply
    return 1 if isinstance(reply, ResponsesReply) and reply.echo.get("instructions") else 0


def _input(parsed: Parsed) -> list[Message]:
    return parsed.request.messages[_lead(parsed) :]


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
    stored = await _load(request, request.match_info["response_id"], await _owner(request))
    return _json(stored.response)


def _now_ms() -> int:
    return round(time.time() * 1000)


async def delete_response(request: web.Request) -> web.StreamResponse:
    """`DELETE /v1/responses/{response_id}`: forget it; `{"id", "object": "response", "deleted": true}`. When it
    is its kept chat's latest turn, nothing can reach that chat any more: it is due for the sweep at once."""
    response_id = request.match_info["response_id"]
    stored = await _load(request, response_id, await _owner(request))
    async with redis_errors():
        redis = request.app[REDIS]
        await redis.delete(stored_response_key(response_id))
        if stored.conversation:
            head = response_chat_head_key(stored.conversation)
            await redis.eval(
                _SWEEP_NOW_LUA, 2, head, CHATS_SWEEP, response_id, stored.conversation, _now_ms()
            )
    return _json({"id": response_id, "object": "response", "deleted": True})


async def list_input_items(request: web.Request) -> web.StreamResponse:
    """`GET /v1/responses/{response_id}/input_items`: the request's input items, one page (`order`: asc/desc)."""
    stored = await _load(request, request.match_info["response_id"], await _owner(request))
    items = stored.input_items if request.query.get("order") == "asc" else stored.input_items[::-1]
    first = items[0]["id"] if items else None
    last = items[-1]["id"] if items else None
    return _json({"object": "list", "data": items, "first_id": first, "last_id": last, "has_more": False})
