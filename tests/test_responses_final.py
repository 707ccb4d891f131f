"""A Responses stream's events add up to its final response, through the official `openai` SDK: what the
events build (items, text deltas, reasoning summary deltas, argument deltas, `.done` items) equals
`get_final_response()`, which equals the `response.completed` event's response and the non-stream body of the
same request (ids aside), for a text answer, a reasoning summary, a function call and its follow-up sent with
`previous_response_id`, on a Connect and a REST account."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio
from openai.types.responses import ResponseStreamEvent
from pydantic import BaseModel

from tests.stack import StackFactory, stack_factory
from tests.test_responses_sdk import ASK_WEATHER, LANES, WEATHER

__all__ = ["stack_factory"]

#: Request ids (uuid4 hex) inside response, item and call ids: they differ between two requests.
_REQUEST_ID = re.compile(r"[0-9a-f]{32}")
_SDK_ONLY = frozenset({"parsed", "parsed_arguments"})


@pytest_asyncio.fixture(params=LANES, ids=["connect", "rest"])
async def lane(
    request: pytest.FixtureRequest, stack_factory: StackFactory
) -> AsyncIterator[tuple[openai.AsyncOpenAI, str, str]]:
    kind, model, thinking = request.param
    stack = await stack_factory()
    await stack.add(kind)
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    yield client, model, thinking
    await client.close()


async def _streamed(client: openai.AsyncOpenAI, **fields: Any) -> dict[str, Any]:
    """The stream's final response, after checking it against the events and the `response.completed` event."""
    async with client.responses.stream(**fields) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    dumped = _dump(final)
    assert _dump(completed.response) == dumped
    assert _built(events) == dumped["output"]
    return dumped


def _dump(model: BaseModel) -> dict[str, Any]:
    """A model as wire JSON, without the SDK's own `parsed` / `parsed_arguments` fields (a `ParsedResponse`'s,
    never on the wire)."""
    return _without_parsed(model.model_dump(mode="json", warnings=False))  # ParsedResponse warns on dump


def _without_parsed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_parsed(v) for k, v in value.items() if k not in _SDK_ONLY}
    if isinstance(value, list):
        return [_without_parsed(v) for v in value]
    return value


def _built(events: list[ResponseStreamEvent]) -> list[dict[str, Any]]:
    """The output items as the events build them: each item as added, its deltas applied, then checked against
    its `.done` events and replaced by its `output_item.done` item."""
    items: dict[int, dict[str, Any]] = {}
    for event in events:
        data = _dump(event)
        match event.type:
            case "response.output_item.added":
                items[event.output_index] = data["item"]
            case "response.content_part.added":
                items[event.output_index]["content"].append(data["part"])
            case "response.reasoning_summary_part.added":
                items[event.output_index]["summary"].append(data["part"])
            case "response.output_text.delta":
                items[event.output_index]["content"][event.content_index]["text"] += event.delta
            case "response.reasoning_summary_text.delta":
                items[event.output_index]["summary"][event.summary_index]["text"] += event.delta
            case "response.function_call_arguments.delta":
                items[event.output_index]["arguments"] += event.delta
            case "response.output_text.done":
                assert items[event.output_index]["content"][event.content_index]["text"] == event.text
            case "response.reasoning_summary_text.done":
                assert items[event.output_index]["summary"][event.summary_index]["text"] == event.text
            case "response.function_call_arguments.done":
                assert items[event.output_index]["arguments"] == event.arguments
            case "response.output_item.done":
                built = items[event.output_index]
                done = data["item"]
                assert {k: v for k, v in built.items() if k != "status"} == {
                    k: v for k, v in done.items() if k != "status"
                }
                items[event.output_index] = done
    return [items[index] for index in sorted(items)]


def _same_request(response: dict[str, Any]) -> dict[str, Any]:
    """The response with its request ids and creation time taken out, to compare two requests' responses."""
    without = {k: v for k, v in response.items() if k != "created_at"}
    return json.loads(_REQUEST_ID.sub("RID", json.dumps(without)))


async def _both(client: openai.AsyncOpenAI, **fields: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same request streamed and not: both final responses, checked equal (ids aside)."""
    streamed = await _streamed(client, **fields)
    body = _dump(await client.responses.create(**fields))
    assert _same_request(streamed) == _same_request(body)
    return streamed, body


async def test_text(lane: tuple[openai.AsyncOpenAI, str, str]) -> None:
    """A text answer: one message item, its text, usage and status agree everywhere."""
    client, model, _ = lane
    streamed, _ = await _both(client, model=model, input="Hello there")
    assert [item["type"] for item in streamed["output"]] == ["message"]
    assert streamed["status"] == "completed" and streamed["usage"]["output_tokens"] > 0


async def test_reasoning_summary(lane: tuple[openai.AsyncOpenAI, str, str]) -> None:
    """A thinking model's answer: the reasoning item's summary and the message agree everywhere."""
    client, _, thinking = lane
    streamed, _ = await _both(client, model=thinking, input="Hello there", reasoning={"effort": "high"})
    assert [item["type"] for item in streamed["output"]] == ["reasoning", "message"]
    assert streamed["output"][0]["summary"][0]["text"]
    assert streamed["usage"]["output_tokens_details"]["reasoning_tokens"] > 0


async def test_function_call_and_its_follow_up(lane: tuple[openai.AsyncOpenAI, str, str]) -> None:
    """A function call (arguments, call id, status) and the follow-up that sends its output with
    `previous_response_id` agree everywhere: two chains, one streamed and one not, side by side."""
    client, model, _ = lane
    streamed = await _streamed(client, model=model, input=ASK_WEATHER, tools=[WEATHER])
    body = (await client.responses.create(model=model, input=ASK_WEATHER, tools=[WEATHER])).model_dump(
        mode="json"
    )
    assert _same_request(streamed) == _same_request(body)
    assert [item["type"] for item in streamed["output"]][-1] == "function_call"
    assert json.loads(streamed["output"][-1]["arguments"]) == {"city": "Paris"}
    follow_ups = []
    for first, stream in ((streamed, True), (body, False)):
        call = first["output"][-1]
        fields: dict[str, Any] = {
            "model": model,
            "tools": [WEATHER],
            "previous_response_id": first["id"],
            "input": [{"type": "function_call_output", "call_id": call["call_id"], "output": "Sunny, 21 C"}],
        }
        if stream:
            follow_ups.append(await _streamed(client, **fields))
        else:
            follow_ups.append(_dump(await client.responses.create(**fields)))
    assert _same_request(follow_ups[0]) == _same_request(follow_ups[1])
    assert "Sunny, 21 C" in follow_ups[0]["output"][-1]["content"][0]["text"]
    assert follow_ups[0]["status"] == "completed"
