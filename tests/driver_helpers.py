"""What the REST and Connect driver tests share: a client session, a one-message call, event folding."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

import aiohttp
import pytest

from shared.models import resolve_model
from shared.schema import ChatOptions, ChatRequest, Event, Message, TextDelta
from shared.settings import UpstreamTimeouts
from upstream_worker.kimi import Creds, UpstreamCall

FAST = UpstreamTimeouts(connect_s=2.0, first_byte_s=5.0, idle_s=5.0)


class _Driver(Protocol):
    def chat(self, call: UpstreamCall) -> AsyncIterator[Event]: ...


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def call_for(creds: Creds, model: str, text: str, **options: object) -> UpstreamCall:
    """A one-user-message call of `model`, with ChatOptions from `options`."""
    spec = resolve_model(model)
    assert spec is not None
    request = ChatRequest(
        request_id="r1",
        model=model,
        messages=[Message(role="user", content=text)],
        options=ChatOptions(**options),  # type: ignore[arg-type]
    )
    return UpstreamCall(request=request, spec=spec, creds=creds)


async def collect(driver: _Driver, call: UpstreamCall) -> list[Event]:
    return [event async for event in driver.chat(call)]


def text_of(events: Sequence[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))
