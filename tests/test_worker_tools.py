"""Tool calls through the worker on both web lanes: the prompt protocol, the parsed calls, the one repair."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import REGISTRY

from kimi_sim.answers import answer_for
from kimi_sim.connect import prompt_of
from kimi_sim.server import SimServer
from shared.schema import (
    ChatOptions,
    ChatRequest,
    Done,
    Event,
    Message,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
)
from tests.test_worker_support import add_accounts, enqueue, reply_events, run_burst, text_of

WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city.",
    '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}',
)
TIME = ToolSpec(
    "get_time", "Current time.", '{"type":"object","properties":{"tz":{"type":"string"}},"required":["tz"]}'
)
#: A call in the simple or XML form (a quoted result may name `functions.x:0` in prose, never with arguments).
CALL_TEXT = re.compile(r"functions\.\w+:\d+\s*\{|<tool_call>|<invoke ")
PARIS = 'call get_weather {"city": "Paris"}'
TOKYO_TIME = 'call get_time {"tz": "Asia/Tokyo"}'


@dataclass(frozen=True)
class Lane:
    kind: str
    model: str
    thinking_model: str


REST = Lane("refresh_token", "kimi", "kimi-thinking")
CONNECT = Lane("kimi_auth", "kimi-k2.5-instant", "kimi-k2.5-thinking")
LANES = pytest.mark.parametrize("lane", [REST, CONNECT], ids=["rest", "connect"])


def tool_request(
    lane: Lane, *messages: Message | str, model: str | None = None, **fields: Any
) -> ChatRequest:
    options = ChatOptions(**fields.pop("options", {}))
    return ChatRequest(
        request_id=uuid.uuid4().hex,
        model=model or lane.model,
        messages=[Message(role="user", content=m) if isinstance(m, str) else m for m in messages],
        options=options,
        deadline_s=time.time() + 30,
        tools=[WEATHER, TIME],
        **fields,
    )


async def run(redis, redis_url: str, sim: SimServer, request: ChatRequest) -> list[Event]:
    job_id = await enqueue(redis, request)
    await run_burst(redis_url, sim.url)
    events = await reply_events(redis, job_id)
    for event in events:
        if isinstance(event, TextDelta):
            assert "<|" not in event.text and not CALL_TEXT.search(event.text), event
    return events


def calls_of(events: list[Event]) -> list[tuple[int, str, str]]:
    return [(e.index, e.call.name, e.call.arguments) for e in events if isinstance(e, ToolCallEvent)]


def prompts(sim: SimServer) -> list[str]:
    """The prompt text of every chat call the simulator received, in order."""
    sent = []
    for logged in sim.state.requests:
        if logged.path.endswith("/completion/stream"):
            sent.append("\n".join(str(m.get("content") or "") for m in logged.body["messages"]))
        elif logged.path.endswith(".ChatService/Chat"):
            sent.append(prompt_of(logged.body["message"]))
    return sent


def tool_metric(outcome: str, form: str) -> float:
    value = REGISTRY.get_sample_value("kimi_worker_tool_calls_total", {"outcome": outcome, "format": form})
    return value or 0.0


async def lane_sim(redis, kimi_sim: SimServer, lane: Lane) -> SimServer:
    await add_accounts(redis, kimi_sim, 1, kind=lane.kind)
    return kimi_sim


def prose(*names: str) -> str:
    return f"好的，我来调用工具 (calling {', '.join(names)})."


@LANES
async def test_single_call(redis, redis_url: str, kimi_sim: SimServer, lane: Lane) -> None:
    """One call: the prose as content, the call with its exact name, arguments and id, then Done(tool_calls)."""
    sim = await lane_sim(redis, kimi_sim, lane)
    parsed_before = tool_metric("parsed", "native")
    request = tool_request(lane, f"Weather?\n{PARIS}")
    events = await run(redis, redis_url, sim, request)
    [call] = [e for e in events if isinstance(e, ToolCallEvent)]
    assert call == ToolCallEvent(
        0, ToolCall(f"call_{request.request_id}_0", "get_weather", '{"city":"Paris"}')
    )
    assert text_of(events) == prose("get_weather")
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"
    assert events.index(call) < len(events) - 2  # Usage, then Done
    assert tool_metric("parsed", "native") == parsed_before + 1
    assert "# Tools" in prompts(sim)[-1] and "namespace functions {" in prompts(sim)[-1]


@LANES
@pytest.mark.parametrize("count", [2, 3])
async def test_parallel_calls(redis, redis_url: str, kimi_sim: SimServer, lane: Lane, count: int) -> None:
    """Two and three directives become that many calls, indexed from 0 in answer order."""
    sim = await lane_sim(redis, kimi_sim, lane)
    cities = ["Paris", "Oslo", "Lima"][:count]
    directives = "\n".join(f'call get_weather {{"city": "{city}"}}' for city in cities)
    events = await run(redis, redis_url, sim, tool_request(lane, directives))
    assert calls_of(events) == [(i, "get_weather", f'{{"city":"{c}"}}') for i, c in enumerate(cities)]
    assert text_of(events) == prose(*["get_weather"] * count)
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"


@LANES
async def test_follow_up_answers_from_the_results(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """A turn carrying the calls' results is answered from them, as plain text with Done(stop)."""
    sim = await lane_sim(redis, kimi_sim, lane)
    request = tool_request(
        lane,
        f"{PARIS}\n{TOKYO_TIME}",
        Message(
            role="assistant",
            content="",
            tool_calls=[
                ToolCall("call_a", "get_weather", '{"city":"Paris"}'),
                ToolCall("call_b", "get_time", '{"tz":"Asia/Tokyo"}'),
            ],
        ),
        Message(role="tool", content='{"temp_c": 18}', tool_call_id="call_a"),
        Message(role="tool", content="09:30", tool_call_id="call_b"),
    )
    events = await run(redis, redis_url, sim, request)
    assert calls_of(events) == []
    assert text_of(events) == (
        "Tool results received. 工具结果如下：\n"
        'functions.get_weather:0 returned: {"temp_c": 18}\n'
        "functions.get_time:1 returned: 09:30"
    )
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"


@LANES
async def test_tool_choice_none_is_a_plain_answer(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """With tool_choice none the directive is not followed: the ordinary answer, no call, Done(stop)."""
    sim = await lane_sim(redis, kimi_sim, lane)
    events = await run(redis, redis_url, sim, tool_request(lane, PARIS, tool_choice=ToolChoice("none")))
    assert calls_of(events) == []
    assert text_of(events) == answer_for(prompts(sim)[-1])
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"
