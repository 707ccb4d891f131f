"""The REST driver: Kimi's classic `/api/...` surface, for refresh_token accounts (kimi-web-rest.md).

One turn: (research quota pre-check) → create a chat unless continuing → completion stream → while Kimi stops
with `length`, a `segment_id` continuation on the same chat, streamed into the same answer. The answer is then
complete, so the turn ends with finish_reason "stop"; only when the continuation budget runs out does it end
with "length". kimi-free-api's side calls (pre-n2s, token_size, suggestion) and decoy requests are
skipped: they add latency and traffic that only a ban heuristic could care about, and the answer does not
depend on them.
Trace cleanup (DELETE the chat) is the caller's, through `cleanup(call)`, after the stream has been relayed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

import aiohttp
import msgspec

from shared.errors import GatewayError, UpstreamProtocolError, UpstreamQuotaExhausted
from shared.logging import get_logger
from shared.models import K1_KIMIPLUS_ID
from shared.schema import Done, Event, FinishReason, Keepalive, Start
from shared.settings import UpstreamTimeouts
from upstream_worker import metrics
from upstream_worker.kimi.call import KimiCredentials, UpstreamCall, origin_of
from upstream_worker.kimi.failures import truncated
from upstream_worker.kimi.files import rest_refs
from upstream_worker.kimi.flatten import flatten_rest
from upstream_worker.kimi.headers import FallbackIds, rest_headers
from upstream_worker.kimi.rest_events import RestStream
from upstream_worker.kimi.sse import SseDecoder
from upstream_worker.kimi.transport import open_stream, read_chunks, request_json

log = get_logger(__name__)
T = TypeVar("T")

#: Length continuations per turn; each one is a full answer segment, so this bounds a runaway loop only.
MAX_CONTINUATIONS = 8
#: Unary calls (create chat, user, usage, delete) are small and fast when Kimi is healthy.
UNARY_TIMEOUT_S = 15.0
KEEPALIVE_EVERY_S = 1.0
NEW_CHAT_NAME = "未命名会话"


class _Id(msgspec.Struct):
    id: str = ""


class _ResearchUsage(msgspec.Struct):
    remain: int = 0
    total: int = 0
    used: int = 0


_id_decoder = msgspec.json.Decoder(_Id)
_usage_decoder = msgspec.json.Decoder(_ResearchUsage)


class RestDriver:
    protocol = "rest"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeouts: UpstreamTimeouts) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeouts = timeouts
        self._ids = FallbackIds.draw()
        #: account id → user id, for accounts whose credentials lack `user_id`.
        self._user_ids: dict[str, str] = {}

    async def chat(self, call: UpstreamCall) -> AsyncIterator[Event]:
        """The canonical events of one turn; failures raise `shared.errors` exceptions."""
        user_id = await self._user_id(call.creds)
        if _research(call):
            await self._check_research_quota(call.creds, user_id)
        if call.chat_id is None:
            call.chat_id = await self._create_chat(call, user_id)
            call.created_chat = True
        chat_id = call.chat_id
        body = self._completion_body(call)
        stream = RestStream(silent=call.spec.silent)
        finish_reason: FinishReason = "length"  # unless a segment ends without `length`
        try:
            for segment in range(MAX_CONTINUATIONS + 1):
                async for event in self._segment(call.creds, user_id, chat_id, body, stream, segment == 0):
                    yield event
                if not (stream.length and stream.segment_id):
                    finish_reason = "stop"
                    break
                body = self._continue_body(call, stream.segment_id)
                stream = stream.next_segment()
            for event in stream.finish():
                yield event
            yield Done(finish_reason=finish_reason, conversation_id=chat_id)
        finally:
            metrics.count_drift(self.protocol, stream.drift.drain())

    async def delete_chat(self, creds: KimiCredentials, chat_id: str) -> bool:
        """DELETE the chat; True when Kimi confirmed. Never raises: cleanup must not fail a finished turn."""
        base = origin_of(creds, self._base)
        user_id = creds.user_id or self._user_ids.get(creds.account_id)
        headers = rest_headers(creds, base, self._ids, user_id)
        try:
            await request_json(
                self._session,
                "DELETE",
                f"{base}/api/chat/{chat_id}",
                headers=headers,
                connect_s=self._timeouts.connect_s,
                timeout_s=UNARY_TIMEOUT_S,
            )
        except GatewayError as exc:
            log.warning("kimi_delete_chat_failed", protocol="rest", account=creds.account_id, error=exc.kind)
            return False
        return True

    async def cleanup(self, call: UpstreamCall) -> bool:
        """Trace cleanup: delete the chat this call created unless the client keeps it."""
        if not call.should_delete or call.chat_id is None:
            return False
        return await self.delete_chat(call.creds, call.chat_id)

    async def _segment(
        self,
        creds: KimiCredentials,
        user_id: str,
        chat_id: str,
        body: dict[str, Any],
        stream: RestStream,
        first: bool,
    ) -> AsyncIterator[Event]:
        base = origin_of(creds, self._base)
        url = f"{base}/api/chat/{chat_id}/completion/stream"
        headers = rest_headers(creds, base, self._ids, user_id, chat_id)
        headers["Accept"] = "text/event-stream"
        first_byte_s = self._timeouts.first_byte_s
        async with open_stream(
            self._session,
            "POST",
            url,
            headers=headers,
            json=body,
            connect_s=self._timeouts.connect_s,
            first_byte_s=first_byte_s,
        ) as resp:
            if first:
                yield Start(conversation_id=chat_id)
            sse = SseDecoder()
            last_ping = time.monotonic()
            async for chunk in read_chunks(resp, first_byte_s, self._timeouts.idle_s):
                quiet = True
                for payload in sse.feed(chunk):
                    event = stream.feed(payload)
                    if event is not None:
                        quiet = False
                        yield event
                if stream.finished:
                    return
                if quiet and (now := time.monotonic()) - last_ping >= KEEPALIVE_EVERY_S:
                    last_ping = now
                    yield Keepalive()
            for payload in sse.close():
                event = stream.feed(payload)
                if event is not None:
                    yield event
        if not stream.finished:
            raise truncated("all_done")

    async def _user_id(self, creds: KimiCredentials) -> str:
        if creds.user_id:
            return creds.user_id
        cached = self._user_ids.get(creds.account_id)
        if cached:
            return cached
        raw = await self._unary(creds, None, "GET", "/api/user")
        user_id = _decode(_id_decoder, raw).id
        if not user_id:
            raise UpstreamProtocolError("Kimi's /api/user answer has no id")
        self._user_ids[creds.account_id] = user_id
        return user_id

    async def _check_research_quota(self, creds: KimiCredentials, user_id: str) -> None:
        usage = _decode(_usage_decoder, await self._unary(creds, user_id, "GET", "/api/chat/research/usage"))
        if usage.total and usage.used >= usage.total:
            raise UpstreamQuotaExhausted(f"Kimi research quota used up ({usage.used}/{usage.total})")

    async def _create_chat(self, call: UpstreamCall, user_id: str) -> str:
        body = {
            "enter_method": "new_chat",
            "is_example": False,
            "kimiplus_id": _agent_id(call) or "kimi",
            "name": NEW_CHAT_NAME,
        }
        chat_id = _decode(_id_decoder, await self._unary(call.creds, user_id, "POST", "/api/chat", body)).id
        if not chat_id:
            raise UpstreamProtocolError("Kimi created a chat without an id")
        return chat_id

    async def _unary(
        self, creds: KimiCredentials, user_id: str | None, method: str, path: str, body: Any = None
    ) -> bytes:
        base = origin_of(creds, self._base)
        headers = rest_headers(creds, base, self._ids, user_id)
        return await request_json(
            self._session,
            method,
            f"{base}{path}",
            headers=headers,
            json=body,
            connect_s=self._timeouts.connect_s,
            timeout_s=UNARY_TIMEOUT_S,
        )

    def _completion_body(self, call: UpstreamCall) -> dict[str, Any]:
        request, spec = call.request, call.spec
        content = flatten_rest(request.messages, continuation=call.is_continuation and not call.created_chat)
        refs, refs_file = rest_refs(call.files)
        return {
            "kimiplus_id": _kimiplus_id(call),
            "messages": [{"role": "user", "content": content}],
            "refs": refs,
            "refs_file": refs_file,
            "use_math": spec.math or request.options.math,
            "use_research": _research(call),
            "use_search": spec.search or request.options.search,
            "extend": {"sidebar": True},
        }

    def _continue_body(self, call: UpstreamCall, segment_id: str) -> dict[str, Any]:
        return {
            "segment_id": segment_id,
            "action": "continue",
            "messages": [{"role": "user", "content": " "}],
            "kimiplus_id": _kimiplus_id(call),
            "extend": {"sidebar": True},
        }


def _research(call: UpstreamCall) -> bool:
    return call.spec.research or call.request.options.research


def _agent_id(call: UpstreamCall) -> str | None:
    kimiplus = call.spec.kimiplus_id
    return kimiplus if kimiplus and kimiplus != K1_KIMIPLUS_ID else None


def _kimiplus_id(call: UpstreamCall) -> str:
    """K1 when asked for (model flag or a thinking request), else the Kimi+ agent, else plain "kimi"."""
    options = call.request.options
    if call.spec.k1 or options.k1 or options.thinking:
        return K1_KIMIPLUS_ID
    return _agent_id(call) or "kimi"


def _decode(decoder: msgspec.json.Decoder[T], raw: bytes) -> T:
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise UpstreamProtocolError("Kimi answered with malformed JSON") from exc
