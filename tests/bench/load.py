"""The load generator: `concurrency` coroutines, each sending one streaming chat after another.

What one request measures, on both paths, from the moment the client starts sending:
- time to first byte (TTFB) = until the first *content token* arrives: (a) the first REST `cmpl` event,
  (b) the first OpenAI chunk whose `delta.content` is non-empty (the role-only chunk and keep-alives do not
  count);
- success = HTTP 200 and the stream's own terminal event ((a) `all_done`, (b) `data: [DONE]`) with no error
  event before it.

The direct path (a) does what the gateway's worker does for each chat: create the chat, stream the completion,
delete the chat (trace cleanup). Its TTFB includes the chat creation, as the worker's does; its latency stops
at `all_done`, before the delete, since the gateway's client does not wait for the worker's delete either.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import msgspec

PROMPT = "Say hello to the benchmark."
MODEL = "kimi"  # a REST-lane model (shared.models), so (a) and (b) drive the same upstream protocol
REQUEST_TIMEOUT_S = 60.0
#: A level waiting for `min_requests` stops at this multiple of its duration all the same.
MAX_STRETCH = 4.0


@dataclass(slots=True)
class Sample:
    ok: bool
    ttfb_s: float | None = None
    total_s: float = 0.0
    chunks: int = 0
    error: str | None = None
    #: `time.perf_counter()` when each content chunk arrived (the pace scenario's inter-chunk gaps).
    arrivals: list[float] = field(default_factory=list)


class Target(Protocol):
    name: str

    async def one(self, session: aiohttp.ClientSession, slot: int) -> Sample: ...


# ---------------------------------------------------------------- (a) straight to the simulator


class _RestEvent(msgspec.Struct):
    event: str = ""
    text: str = ""


class _CreatedChat(msgspec.Struct):
    id: str


_rest_event_decoder = msgspec.json.Decoder(_RestEvent)
_chat_decoder = msgspec.json.Decoder(_CreatedChat)
_CREATE_BODY = msgspec.json.encode(
    {"enter_method": "new_chat", "is_example": False, "kimiplus_id": "kimi", "name": "未命名会话"}
)


def _stream_body(prompt: str) -> bytes:
    return msgspec.json.encode(
        {
            "kimiplus_id": "kimi",
            "messages": [{"role": "user", "content": prompt}],
            "refs": [],
            "use_search": False,
            "extend": {"sidebar": True},
        }
    )


class DirectTarget:
    """The simulator's REST surface, one account per load coroutine (Kimi allows one stream per account)."""

    name = "direct"

    def __init__(self, sim_url: str, access_tokens: list[str], prompt: str = PROMPT) -> None:
        self._base = sim_url
        self._stream_body = _stream_body(prompt)
        self._headers = [
            {"Authorization": f"Bearer {t}", "Content-Type": "application/json", "X-Msh-Platform": "web"}
            for t in access_tokens
        ]

    async def one(self, session: aiohttp.ClientSession, slot: int) -> Sample:
        headers = self._headers[slot]
        started = time.perf_counter()
        async with session.post(f"{self._base}/api/chat", data=_CREATE_BODY, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                return Sample(ok=False, error=f"create_http_{resp.status}")
        chat_id = _chat_decoder.decode(body).id
        url = f"{self._base}/api/chat/{chat_id}/completion/stream"
        async with session.post(url, data=self._stream_body, headers=headers) as resp:
            sample = await _read_rest_stream(resp, started)
        async with session.delete(f"{self._base}/api/chat/{chat_id}", headers=headers) as resp:
            await resp.read()
        return sample


async def _read_rest_stream(resp: aiohttp.ClientResponse, started: float) -> Sample:
    if resp.status != 200:
        await resp.read()
        return Sample(ok=False, error=f"http_{resp.status}")
    sample = Sample(ok=False, error="no_terminal_event")
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        event = _rest_event_decoder.decode(line[5:])
        if event.event == "cmpl" and event.text:
            _arrived(sample, started)
        elif event.event == "all_done":
            sample.ok, sample.error = True, None
        elif event.event == "error":
            sample.error = "stream_error_event"
            break
    sample.total_s = time.perf_counter() - started
    return _no_content_is_error(sample)


# ---------------------------------------------------------------- (b) through the gateway


class _Delta(msgspec.Struct):
    content: str | None = None


class _Choice(msgspec.Struct):
    delta: _Delta = msgspec.field(default_factory=_Delta)


class _Chunk(msgspec.Struct):
    choices: list[_Choice] = msgspec.field(default_factory=list)
    error: msgspec.Raw | None = None


_chunk_decoder = msgspec.json.Decoder(_Chunk)
_JSON_HEADERS = {"Content-Type": "application/json"}


class GatewayTarget:
    """The gateway's OpenAI route, served from its own account pool (no client key, no bearer)."""

    name = "gateway"

    def __init__(self, gateway_url: str, prompt: str = PROMPT) -> None:
        self._url = f"{gateway_url}/v1/chat/completions"
        self._body = msgspec.json.encode(
            {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": prompt}]}
        )

    async def one(self, session: aiohttp.ClientSession, slot: int) -> Sample:
        started = time.perf_counter()
        async with session.post(self._url, data=self._body, headers=_JSON_HEADERS) as resp:
            return await _read_openai_stream(resp, started)


async def _read_openai_stream(resp: aiohttp.ClientResponse, started: float) -> Sample:
    if resp.status != 200:
        await resp.read()
        return Sample(ok=False, error=f"http_{resp.status}")
    sample = Sample(ok=False)
    async for line in resp.content:
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if payload == b"[DONE]":
            sample.ok = sample.error is None
            break
        chunk = _chunk_decoder.decode(payload)
        if chunk.error is not None:
            sample.error = "stream_error_event"
            continue
        if chunk.choices and chunk.choices[0].delta.content:
            _arrived(sample, started)
    if not sample.ok and sample.error is None:
        sample.error = "no_done"
    sample.total_s = time.perf_counter() - started
    return _no_content_is_error(sample)


def _arrived(sample: Sample, started: float) -> None:
    """One content chunk: the first sets the TTFB."""
    now = time.perf_counter()
    if sample.ttfb_s is None:
        sample.ttfb_s = now - started
    sample.chunks += 1
    sample.arrivals.append(now)


def _no_content_is_error(sample: Sample) -> Sample:
    if sample.ok and sample.ttfb_s is None:
        sample.ok, sample.error = False, "no_content"
    return sample


# ---------------------------------------------------------------- one level


@dataclass(slots=True)
class LevelRun:
    target: str
    concurrency: int
    elapsed_s: float
    samples: list[Sample]


async def guarded(target: Target, session: aiohttp.ClientSession, slot: int) -> Sample:
    """One request; a transport failure or a timeout is a failed sample, not an exception."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            return await target.one(session, slot)
    except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError) as exc:
        return Sample(ok=False, total_s=time.perf_counter() - started, error=type(exc).__name__)


async def run_level(
    session: aiohttp.ClientSession, target: Target, concurrency: int, duration_s: float, min_requests: int = 0
) -> LevelRun:
    """Keep `concurrency` requests in flight until `duration_s` has passed and `min_requests` finished."""
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + duration_s
    hard_deadline = started + duration_s * MAX_STRETCH

    async def loop(slot: int) -> None:
        while (now := time.perf_counter()) < deadline or (
            len(samples) < min_requests and now < hard_deadline
        ):
            samples.append(await guarded(target, session, slot))

    await asyncio.gather(*(loop(slot) for slot in range(concurrency)))
    return LevelRun(target.name, concurrency, time.perf_counter() - started, samples)


async def warm_up(session: aiohttp.ClientSession, target: Target, concurrency: int, requests: int) -> None:
    """Send `requests` requests, `concurrency` at a time, and forget how they went."""
    remaining = requests

    async def loop(slot: int) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await guarded(target, session, slot)

    await asyncio.gather(*(loop(slot) for slot in range(concurrency)))
