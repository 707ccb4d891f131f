"""Writing a streamed body the way faults ask: split, coalesced, paced, and noticing a client that left."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .common import SIM_STATE
from .state import StreamRecord, StreamStatus


class ClientGone(Exception):
    """The client closed the connection mid-stream."""


def _utf8_cut(data: bytes) -> int | None:
    """An offset inside the first multi-byte UTF-8 character of `data`, or None when it is all ASCII."""
    for index, byte in enumerate(data):
        if byte >= 0xC0:
            return index + 1
    return None


class FrameWriter:
    """Writes frames to a prepared response, applying the transport faults of this stream."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        faults: dict[str, dict[str, Any]],
        heartbeat: bytes | None = None,
        heartbeat_interval_s: float = 1.0,
    ) -> None:
        self._request = request
        self._response = response
        self._split = faults.get("split_frames")
        self._split_utf8 = faults.get("split_utf8")
        coalesce = faults.get("coalesce_frames")
        self._coalesce_every: int | None = int(coalesce.get("frames", 0)) if coalesce is not None else None
        self._buffer: list[bytes] = []
        self._heartbeat = heartbeat
        self._heartbeat_interval_s = heartbeat_interval_s

    @property
    def client_gone(self) -> bool:
        transport = self._request.transport
        return transport is None or transport.is_closing()

    async def send(self, data: bytes) -> None:
        if self._coalesce_every is not None:
            self._buffer.append(data)
            if self._coalesce_every and len(self._buffer) >= self._coalesce_every:
                await self.flush()
            return
        if self._split is not None:
            await self._write_split(data, max(int(self._split.get("parts", 3)), 2), self._split)
        elif self._split_utf8 is not None and (cut := _utf8_cut(data)) is not None:
            await self._write_parts([data[:cut], data[cut:]], self._split_utf8)
        else:
            await self._write(data)

    async def flush(self) -> None:
        if self._buffer:
            data, self._buffer = b"".join(self._buffer), []
            await self._write(data)

    async def pause(self, seconds: float) -> None:
        """Wait, sending heartbeats (Connect) every interval, and notice a client that leaves meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        next_beat = loop.time() + self._heartbeat_interval_s
        while (now := loop.time()) < deadline:
            if self.client_gone:
                raise ClientGone
            if self._heartbeat is not None and now >= next_beat:
                await self.send(self._heartbeat)
                await self.flush()
                next_beat = now + self._heartbeat_interval_s
            await asyncio.sleep(min(deadline - now, 0.05, max(next_beat - now, 0.001)))

    async def _write_split(self, data: bytes, parts: int, params: dict[str, Any]) -> None:
        size = max(1, -(-len(data) // parts))
        await self._write_parts([data[i : i + size] for i in range(0, len(data), size)], params)

    async def _write_parts(self, parts: list[bytes], params: dict[str, Any]) -> None:
        pause_s = float(params.get("pause_s", 0.005))
        for index, part in enumerate(parts):
            if index:
                await asyncio.sleep(pause_s)
            await self._write(part)

    async def _write(self, data: bytes) -> None:
        if self.client_gone:
            raise ClientGone
        try:
            await self._response.write(data)
        except ConnectionError as exc:
            raise ClientGone from exc


async def run_stream(
    request: web.Request,
    response: web.StreamResponse,
    writer: FrameWriter,
    record: StreamRecord,
    script: Callable[[], Awaitable[StreamStatus]],
    reset_on_cut: bool,
) -> web.StreamResponse:
    """Prepare `response`, run the event `script`, and record how the stream ended."""
    state = request.app[SIM_STATE]
    try:
        await response.prepare(request)
        status = await script()
        await writer.flush()
    except ClientGone:
        state.close_stream(record, "client_closed")
        return response
    except BaseException:
        state.close_stream(record, "client_closed")
        raise
    state.close_stream(record, status)
    if status == "cut" and reset_on_cut and request.transport is not None:
        request.transport.abort()
    return response
