"""The Connect driver: `/apiv2/kimi.gateway.chat.v1.ChatService/Chat` (kimi-web-connect.md), for kimi-auth
accounts, the K2.5 lanes, and refresh_token accounts on Connect models (with their refreshed access token).

The body is read through the end-of-stream frame (flag 2), because Kimi may send `done` and then an
error trailer: a trailer with `error` fails the turn even after text has streamed. EOF without a trailer is
tolerated only when `done` was seen and no frame was left half-read (§3.6, strict reading); otherwise the
stream was cut.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp

from shared.errors import GatewayError, UpstreamOverloaded
from shared.logging import get_logger
from shared.schema import Done, Event, Keepalive
from shared.settings import UpstreamTimeouts
from upstream_worker import metrics
from upstream_worker.kimi.call import KimiCredentials, UpstreamCall, origin_of
from upstream_worker.kimi.connect_events import ConnectStream
from upstream_worker.kimi.connect_request import build_request, encode_request
from upstream_worker.kimi.envelope import EnvelopeDecoder
from upstream_worker.kimi.failures import plan_gated, plan_required, truncated
from upstream_worker.kimi.headers import FallbackIds, connect_headers
from upstream_worker.kimi.transport import open_stream, read_chunks, request_json

log = get_logger(__name__)

CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
DELETE_CHAT_PATH = "/apiv2/kimi.chat.v1.ChatService/DeleteChat"
UNARY_TIMEOUT_S = 15.0
KEEPALIVE_EVERY_S = 1.0


class ConnectDriver:
    protocol = "connect"

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeouts: UpstreamTimeouts) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeouts = timeouts
        self._ids = FallbackIds.draw()

    async def chat(self, call: UpstreamCall) -> AsyncIterator[Event]:
        """The canonical events of one turn; failures raise `shared.errors` exceptions."""
        continuing = call.chat_id is not None
        body = encode_request(
            build_request(call.request, call.spec, call.chat_id, call.parent_id, call.files)
        )
        base = origin_of(call.creds, self._base)
        headers = connect_headers(call.creds, base, self._ids, call.chat_id)
        first_byte_s = self._timeouts.first_byte_for(call.spec.is_agent)
        stream = ConnectStream(call.chat_id, silent=call.spec.silent)
        out: list[Event] = []
        try:
            async with open_stream(
                self._session,
                "POST",
                f"{base}{CHAT_PATH}",
                headers=headers,
                data=body,
                connect_s=self._timeouts.connect_s,
                first_byte_s=first_byte_s,
            ) as resp:
                if continuing:
                    stream.start(out)
                frames = EnvelopeDecoder()
                last_ping = time.monotonic()
                async for chunk in read_chunks(resp, first_byte_s, self._timeouts.idle_s):
                    try:
                        self._apply(frames, chunk, stream, out)
                    except GatewayError:
                        self._learn(call, stream, continuing)
                        for event in out:  # what arrived before the error frame still reaches the client
                            yield event
                        raise
                    self._learn(call, stream, continuing)
                    if out:
                        for event in out:
                            yield event
                        out.clear()
                    elif (now := time.monotonic()) - last_ping >= KEEPALIVE_EVERY_S:
                        last_ping = now
                        yield Keepalive()
                    if stream.ended:
                        break
                if not stream.ended and not (stream.done and frames.pending == 0):
                    raise truncated("its end-of-stream frame")
            stream.start(out)
            for event in out:
                yield event
            yield Done(finish_reason="stop", conversation_id=stream.chat_id)
        except UpstreamOverloaded as exc:
            if not plan_gated(call.spec):
                raise
            raise plan_required(call.spec, exc) from exc
        finally:
            metrics.count_drift(self.protocol, stream.drift.drain())

    async def delete_chat(self, creds: KimiCredentials, chat_id: str) -> bool:
        """DeleteChat; True when Kimi confirmed. Never raises: cleanup must not fail a finished turn."""
        base = origin_of(creds, self._base)
        headers = connect_headers(creds, base, self._ids, chat_id, stream=False)
        try:
            await request_json(
                self._session,
                "POST",
                f"{base}{DELETE_CHAT_PATH}",
                headers=headers,
                json={"chat_id": chat_id},
                connect_s=self._timeouts.connect_s,
                timeout_s=UNARY_TIMEOUT_S,
            )
        except GatewayError as exc:
            log.warning(
                "kimi_delete_chat_failed", protocol="connect", account=creds.account_id, error=exc.kind
            )
            return False
        return True

    async def cleanup(self, call: UpstreamCall) -> bool:
        """Trace cleanup: delete the chat this call created unless the client keeps it."""
        if not call.should_delete or call.chat_id is None:
            return False
        return await self.delete_chat(call.creds, call.chat_id)

    @staticmethod
    def _apply(frames: EnvelopeDecoder, chunk: bytes, stream: ConnectStream, out: list[Event]) -> None:
        for frame in frames.feed(chunk):
            stream.feed(frame, out)
            if stream.ended:
                return

    @staticmethod
    def _learn(call: UpstreamCall, stream: ConnectStream, continuing: bool) -> None:
        if not continuing and stream.chat_id is not None and call.chat_id is None:
            call.chat_id = stream.chat_id
            call.created_chat = True
        if stream.assistant_id is not None:
            call.parent_id = stream.assistant_id
