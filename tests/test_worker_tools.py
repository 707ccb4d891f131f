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
from shared import keys
from shared.schema import (
    ChatOptions,
    ChatRequest,
    Done,
    ErrorEvent,
    Event,
    Message,
    ReasoningDelta,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    ToolChoice,
    ToolSpec,
    Usage,
)
from shared.usage_estimate import estimate_tokens
from tests.test_worker_support import add_accounts, enqueue, reply_events, run_burst, text_of
from upstream_worker import conversations
from upstream_worker.conversations import Conversation
from upstream_worker.toolcalls import ToolState

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
    chat_path: str


REST = Lane("refresh_token", "kimi", "kimi-thinking", "/completion/stream")
CONNECT = Lane("kimi_auth", "kimi-k2.5-instant", "kimi-k2.5-thinking", ".ChatService/Chat")
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
    [usage] = [e for e in events if isinstance(e, Usage)]
    assert usage.completion_tokens == estimate_tokens(prose("get_weather") + 'get_weather{"city":"Paris"}')
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


def error_of(events: list[Event]) -> ErrorEvent:
    assert isinstance(events[-1], ErrorEvent), events
    assert calls_of(events) == [] and not any(isinstance(e, Done) for e in events)
    return events[-1]


@LANES
async def test_tool_choice_required_and_named(redis, redis_url: str, kimi_sim: SimServer, lane: Lane) -> None:
    """A required or named tool_choice that the answer follows gives its call, and the rule reaches Kimi."""
    sim = await lane_sim(redis, kimi_sim, lane)
    required = tool_request(lane, PARIS, tool_choice=ToolChoice("required"))
    assert calls_of(await run(redis, redis_url, sim, required)) == [(0, "get_weather", '{"city":"Paris"}')]
    assert "You must call at least one function in this answer." in prompts(sim)[-1]
    named = tool_request(lane, TOKYO_TIME, tool_choice=ToolChoice("named", name="get_time"))
    assert calls_of(await run(redis, redis_url, sim, named)) == [(0, "get_time", '{"tz":"Asia/Tokyo"}')]
    assert "You must call functions.get_time in this answer." in prompts(sim)[-1]


@LANES
async def test_named_choice_ignored_is_repaired_once_then_an_error(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """A call of another tool than the named one is corrected once; called again, the answer is an error."""
    sim = await lane_sim(redis, kimi_sim, lane)
    failed_before = tool_metric("failed", "native")
    request = tool_request(lane, PARIS, tool_choice=ToolChoice("named", name="get_time"))
    error = error_of(await run(redis, redis_url, sim, request))
    assert (error.kind, error.status) == ("protocol", 502)
    assert error.message.startswith("Kimi's answer had no usable tool call after one correction (not_allowed")
    assert "Your previous answer had an unusable function call" in prompts(sim)[-1]
    assert len(prompts(sim)) == 2
    assert tool_metric("failed", "native") == failed_before + 1


@LANES
async def test_parallel_off_with_two_calls_is_an_error_after_the_repair(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """parallel_tool_calls off: two calls are too_many_calls, corrected once, then an error (never one of them)."""
    sim = await lane_sim(redis, kimi_sim, lane)
    request = tool_request(lane, f"{PARIS}\n{TOKYO_TIME}", parallel_tool_calls=False)
    events = await run(redis, redis_url, sim, request)
    error = error_of(events)
    assert "(too_many_calls)" in error.message
    assert text_of(events) == prose("get_weather", "get_time")  # the first answer's prose, once
    assert "Call at most one function in this answer." in prompts(sim)[0]
    assert len(prompts(sim)) == 2


VARIANT_FORMS = {
    "native": "native",
    "singular": "native_singular",
    "spaced": "native",
    "no_section_end": "native",
    "bare": "native_bare",
    "simple": "simple",
    "xml": "xml",
}


@LANES
@pytest.mark.parametrize("variant", list(VARIANT_FORMS))
async def test_every_markup_variant_gives_the_same_calls(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane, variant: str
) -> None:
    """Each form Kimi may write the calls in is read as the same two calls, counted under its format."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("tool_call_variant", count=1, variant=variant)
    form = VARIANT_FORMS[variant]
    before = tool_metric("parsed", form)
    events = await run(redis, redis_url, sim, tool_request(lane, f"{PARIS}\n{TOKYO_TIME}"))
    assert calls_of(events) == [
        (0, "get_weather", '{"city":"Paris"}'),
        (1, "get_time", '{"tz":"Asia/Tokyo"}'),
    ]
    assert text_of(events) == prose("get_weather", "get_time")
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"
    assert tool_metric("parsed", form) == before + 2


@LANES
async def test_broken_call_is_repaired_once_in_a_new_chat(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """A malformed call is corrected in a new chat: the client gets the prose once and the good call."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("tool_call_error", count=1, kind="malformed_json")
    before = tool_metric("repaired", "native")
    request = tool_request(lane, f"Weather?\n{PARIS}")
    events = await run(redis, redis_url, sim, request)
    assert calls_of(events) == [(0, "get_weather", '{"city":"Paris"}')]
    assert text_of(events) == prose("get_weather")
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"
    assert tool_metric("repaired", "native") == before + 1
    first, repair = prompts(sim)
    assert "# Tools" in repair and "Your previous answer had an unusable function call" in repair
    assert "Your previous answer" not in first
    assert len(sim.state.deleted_chats) == 2  # both chats cleaned up


@pytest.mark.parametrize("kind", ["unknown_tool", "not_an_object"])
async def test_each_broken_call_kind_is_repaired(
    redis, redis_url: str, kimi_sim: SimServer, kind: str
) -> None:
    """An unknown tool or arguments that are not an object are repaired like malformed JSON."""
    sim = await lane_sim(redis, kimi_sim, CONNECT)
    sim.state.faults.arm("tool_call_error", count=1, kind=kind)
    events = await run(redis, redis_url, sim, tool_request(CONNECT, PARIS))
    assert calls_of(events) == [(0, "get_weather", '{"city":"Paris"}')]


@LANES
async def test_call_broken_twice_is_an_error(redis, redis_url: str, kimi_sim: SimServer, lane: Lane) -> None:
    """A call still broken after the correction ends the answer with an error naming the failure, no call."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("tool_call_error", count=2, kind="unknown_tool")
    before = tool_metric("failed", "native")
    events = await run(redis, redis_url, sim, tool_request(lane, PARIS))
    error = error_of(events)
    assert error.message.startswith(
        "Kimi's answer had no usable tool call after one correction (unknown_tool of no_such_tool)"
    )
    assert text_of(events) == prose("no_such_tool")
    assert tool_metric("failed", "native") == before + 1
    assert len(prompts(sim)) == 2 and len(sim.state.deleted_chats) == 2


@LANES
async def test_required_call_missing_is_repaired(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """A required call the answer left out is asked for once; the retry's calls follow the first answer's text."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("no_tool_call", count=1)
    request = tool_request(lane, PARIS, tool_choice=ToolChoice("required"))
    events = await run(redis, redis_url, sim, request)
    assert calls_of(events) == [(0, "get_weather", '{"city":"Paris"}')]
    assert text_of(events) == answer_for(prompts(sim)[0])  # the retry's prose is not repeated
    assert "Your previous answer called no function." in prompts(sim)[1]


@LANES
async def test_required_call_missing_twice_is_an_error(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """tool_choice required and no call in the answer nor in its repair: an error, counted under format none."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("no_tool_call", count=2)
    before = tool_metric("failed", "none")
    events = await run(redis, redis_url, sim, tool_request(lane, PARIS, tool_choice=ToolChoice("required")))
    assert "(call_required)" in error_of(events).message
    assert tool_metric("failed", "none") == before + 1


@LANES
async def test_call_written_only_while_thinking_is_not_a_call(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """Calls that appear only in the reasoning stay reasoning: no call, the prose as content, Done(stop)."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("tool_call_variant", count=1, variant="thinking")
    events = await run(redis, redis_url, sim, tool_request(lane, PARIS, model=lane.thinking_model))
    assert calls_of(events) == []
    assert text_of(events) == prose("get_weather")
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert "<|tool_call_begin|>functions.get_weather:0" in reasoning
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"


@LANES
async def test_kept_chat_is_repaired_in_the_same_chat(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """In a kept chat the correction is the chat's next turn (with the rules), the chat is kept, and the next
    turn continues after the repaired answer with its call's result."""
    sim = await lane_sim(redis, kimi_sim, lane)
    sim.state.faults.arm("tool_call_error", count=1, kind="malformed_json")
    events = await run(redis, redis_url, sim, tool_request(lane, PARIS, options={"keep_chat": True}))
    assert calls_of(events) == [(0, "get_weather", '{"city":"Paris"}')]
    [call] = [e.call for e in events if isinstance(e, ToolCallEvent)]
    done = events[-1]
    assert isinstance(done, Done) and done.conversation_id and sim.state.deleted_chats == []
    repair = prompts(sim)[1]
    assert repair.startswith("Your previous answer had an unusable function call")
    assert "# Tools" not in repair and "The next call index is 0." in repair
    assert len([m for m in sim.state.chats[done.conversation_id].messages if m["role"] == "user"]) == 2
    follow_up = tool_request(
        lane,
        PARIS,
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content="rain", tool_call_id=call.id),
        options={"conversation_id": done.conversation_id},
    )
    events = await run(redis, redis_url, sim, follow_up)
    assert text_of(events) == "Tool results received. 工具结果如下：\nfunctions.get_weather:0 returned: rain"
    assert prompts(sim)[-1].startswith("## Return of functions.get_weather:0\nrain\n\n")


@LANES
async def test_continued_tool_turn_sends_only_the_new_results(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """A conversation_id turn carrying results sends Kimi only those results and the rules, under Kimi's ids."""
    sim = await lane_sim(redis, kimi_sim, lane)
    first = tool_request(lane, PARIS, options={"keep_chat": True})
    events = await run(redis, redis_url, sim, first)
    [call] = [e.call for e in events if isinstance(e, ToolCallEvent)]
    chat_id = events[-1].conversation_id if isinstance(events[-1], Done) else None
    assert chat_id is not None
    history = [
        Message(role="user", content=PARIS),
        Message(role="assistant", content=prose("get_weather"), tool_calls=[call]),
        Message(role="tool", content="sunny, 21 C", tool_call_id=call.id),
    ]
    second = tool_request(lane, *history, options={"conversation_id": chat_id})
    events = await run(redis, redis_url, sim, second)
    assert (
        text_of(events)
        == "Tool results received. 工具结果如下：\nfunctions.get_weather:0 returned: sunny, 21 C"
    )
    sent = prompts(sim)[-1]
    assert sent.startswith(
        "## Return of functions.get_weather:0\nsunny, 21 C\n\n## Tool rules for this answer"
    )
    assert "# Tools" not in sent and PARIS not in sent
    third = tool_request(
        lane,
        *history,
        Message(role="assistant", content=text_of(events)),
        TOKYO_TIME,
        options={"conversation_id": chat_id},
    )
    events = await run(redis, redis_url, sim, third)
    assert calls_of(events) == [(0, "get_time", '{"tz":"Asia/Tokyo"}')]
    assert "The next call index is 1." in prompts(sim)[-1]
    stored = await redis.hget(keys.conversation_key(chat_id), "tools")
    assert f'"call_{third.request_id}_0":"functions.get_time:1"'.encode() in stored


@LANES
async def test_tool_turn_fails_over_before_any_content(
    redis, redis_url: str, kimi_sim: SimServer, lane: Lane
) -> None:
    """A 429 before any content moves the tool turn to another account, which sends the same prompt and call."""
    await add_accounts(redis, kimi_sim, 2, kind=lane.kind)
    kimi_sim.state.faults.arm("http_429", count=1, path=lane.chat_path)
    events = await run(redis, redis_url, kimi_sim, tool_request(lane, PARIS))
    assert calls_of(events) == [(0, "get_weather", '{"city":"Paris"}')]
    assert text_of(events) == prose("get_weather")
    first, second = prompts(kimi_sim)
    assert first == second and "# Tools" in first


async def test_record_keeps_the_tool_state(redis) -> None:
    """A conversation record stores its ToolState as JSON and loads it back; an unreadable one loads as None."""
    state = ToolState({"call_x_0": "functions.get_weather:0"}, 1, ["functions.get_weather:0"], "abc")
    pipe = redis.pipeline(transaction=False)
    conversations.fill(pipe, "c1", Conversation("a1", "connect", "c1", "p1", state))
    await pipe.execute()
    assert await conversations.load(redis, "c1") == Conversation("a1", "connect", "c1", "p1", state)
    await redis.hset(keys.conversation_key("c1"), "tools", '{"next_index": "one"}')
    loaded = await conversations.load(redis, "c1")
    assert loaded is not None and loaded.tools is None
