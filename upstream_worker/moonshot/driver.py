"""The official API driver: `POST {base}/v1/chat/completions` with an API key (moonshot-official-api.md).

Same shape as the web drivers: `chat(call)` yields canonical events and raises `shared.errors` exceptions;
`cleanup(call)` has nothing to delete (the API keeps no chats). Unlike them it yields a real `Usage`
(`estimated=False`) before `Done`, and native `ToolCallEvent`s. A stream asks for `stream_options.include_usage`;
when the platform refuses that field (a 400 naming it, §3.3 [U]) the call is sent once more without it, and the
usage then comes inside the last choice. A non-stream request is sent as one, and its JSON answer becomes the
same events; since that answer only comes once the model has finished, it gets the long first-byte deadline.
The key goes only into the `Authorization` header: never into a log line or an error.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import aiohttp

from shared.errors import BadRequest, GatewayError, UpstreamProtocolError
from shared.schema import Event, Keepalive, Start
from shared.settings import UpstreamTimeouts
from upstream_worker import metrics
from upstream_worker.kimi.call import reveal
from upstream_worker.kimi.sse import SseDecoder
from upstream_worker.kimi.transport import open_stream, read_chunks
from upstream_worker.moonshot.call import MoonshotCall, api_root
from upstream_worker.moonshot.errors import http_error
from upstream_worker.moonshot.events import CompletionStream
from upstream_worker.moonshot.request import ChatBody, build_request, encode_request

KEEPALIVE_EVERY_S = 1.0
#: A non-stream answer larger than this is not an answer.
MAX_BODY_BYTES = 64 * 1024 * 1024


class MoonshotDriver:
    protocol = "moonshot"

    def __init__(self, session: aiohttp.ClientSession, timeouts: UpstreamTimeouts) -> None:
        self._session = session
        self._timeouts = timeouts

    async def chat(self, call: MoonshotCall) -> AsyncIterator[Event]:
        """The canonical events of one turn; failures raise `shared.errors` exceptions."""
        body = build_request(call.request, call.spec, call.images)
        stream = CompletionStream(max_calls=None if call.request.parallel_tool_calls else 1)
        try:
            if body.stream:
                async for event in self._stream(call, body, stream):
                    yield event
            else:
                async for event in self._complete(call, body, stream):
                    yield event
        finally:
            metrics.count_drift(self.protocol, stream.drift.drain())

    async def cleanup(self, call: MoonshotCall) -> bool:
        """Nothing to clean up: the API keeps no chat of a turn."""
        return False

    async def _stream(
        self, call: MoonshotCall, body: ChatBody, stream: CompletionStream
    ) -> AsyncIterator[Event]:
        sent = False
        try:
            async for event in self._stream_once(call, body, stream):
                sent = True
                yield event
        except BadRequest as exc:
            if sent or body.stream_options is None or "stream_options" not in exc.message:
                raise
            body.stream_options = None  # refused before any event: ask once more without it
            async for event in self._stream_once(call, body, stream):
                yield event

    async def _stream_once(
        self, call: MoonshotCall, body: ChatBody, stream: CompletionStream
    ) -> AsyncIterator[Event]:
        first_byte_s = self._timeouts.first_byte_for(call.spec.is_agent)
        async with self._open(call, body, first_byte_s) as resp:
            yield Start()
            sse = SseDecoder()
            last_ping = time.monotonic()
            async for chunk in read_chunks(resp, first_byte_s, self._timeouts.idle_s):
                out, error = _feed(stream, sse.feed(chunk))
                for event in out:  # what came before an error chunk still reaches the client
                    yield event
                if error is not None:
                    raise error
                if stream.done:
                    return
                if not out and (now := time.monotonic()) - last_ping >= KEEPALIVE_EVERY_S:
                    last_ping = now
                    yield Keepalive()
            out, error = _feed(stream, sse.close())
            for event in out:
                yield event
            if error is not None:
                raise error
        if not stream.done:
            raise UpstreamProtocolError("the official API's stream ended without [DONE]")

    async def _complete(
        self, call: MoonshotCall, body: ChatBody, stream: CompletionStream
    ) -> AsyncIterator[Event]:
        first_byte_s = self._timeouts.agent_first_byte_s  # the answer comes whole, once the model is done
        async with self._open(call, body, first_byte_s) as resp:
            parts: list[bytes] = []
            size = 0
            async for chunk in read_chunks(resp, first_byte_s, self._timeouts.idle_s):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise UpstreamProtocolError(f"the official API's answer is over {MAX_BODY_BYTES} bytes")
                parts.append(chunk)
        out: list[Event] = []
        stream.complete(b"".join(parts), out)
        yield Start()
        for event in out:
            yield event

    def _open(
        self, call: MoonshotCall, body: ChatBody, first_byte_s: float
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        creds = call.creds
        headers = {
            "Authorization": f"Bearer {reveal(creds.api_key)}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if body.stream else "application/json",
        }
        return open_stream(
            self._session,
            "POST",
            f"{api_root(creds.base_url)}/chat/completions",
            headers=headers,
            data=encode_request(body),
            connect_s=self._timeouts.connect_s,
            first_byte_s=first_byte_s,
            error=http_error,
        )


def _feed(stream: CompletionStream, payloads: list[str]) -> tuple[list[Event], GatewayError | None]:
    """The events of some SSE payloads, and the error of an error chunk among them (the events before it kept)."""
    out: list[Event] = []
    try:
        for payload in payloads:
            stream.feed(payload, out)
    except GatewayError as exc:
        return out, exc
    return out, None
