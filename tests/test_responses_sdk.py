"""The Responses API end to end through the official `openai` SDK (`client.responses.create` / `.stream`), on a
Connect and a REST account: real Redis, the simulator, the gateway and a worker."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import pytest
import pytest_asyncio
from openai.types.responses import FunctionToolParam
from openai.types.responses.response import IncompleteDetails

from adapters.json_output import hint
from kimi_sim.answers import answer_for, reasoning_for
from shared.secret import Secret
from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

#: (account kind, model, thinking model): a Connect lane and a REST lane.
LANES = [
    ("kimi_auth", "kimi-k2.5-instant", "kimi-k2.5-thinking"),
    ("refresh_token", "kimi", "kimi-k2.5-thinking"),
]
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "strict": False,
}
ASK_WEATHER = 'Weather in Paris?\ncall get_weather {"city": "Paris"}'


@pytest_asyncio.fixture(params=LANES, ids=["connect", "rest"])
async def lane(
    request: pytest.FixtureRequest, stack_factory: StackFactory
) -> AsyncIterator[tuple[Stack, str, str]]:
    kind, model, thinking = request.param
    stack = await stack_factory()
    await stack.add(kind)
    yield stack, model, thinking


@pytest_asyncio.fixture
async def client(lane: tuple[Stack, str, str]) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{lane[0].url}/v1", api_key="sk-local", max_retries=0, timeout=30)
    yield client
    await client.close()


async def test_text_non_stream(client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]) -> None:
    """A plain prompt answers one completed message whose text is the simulator's answer."""
    response = await client.responses.create(model=lane[1], input="Hello there")
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == answer_for("Hello there")
    assert response.usage is not None and response.usage.output_tokens > 0


async def test_text_stream_matches_final(client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]) -> None:
    """A stream's events come in the SDK's order with sequence numbers from 0, and accumulate to its final response."""
    async with client.responses.stream(model=lane[1], input="Hello there") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * (len(events) - 8),
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == answer_for("Hello there")
    assert events[-1].response.output_text == final.output_text  # type: ignore[union-attr]


async def test_reasoning_summary(client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]) -> None:
    """A thinking model's reasoning is a `reasoning` item's summary before the message, stream and non-stream."""
    response = await client.responses.create(model=lane[2], input="Hello there", reasoning={"effort": "high"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output[0].summary[0].text == reasoning_for("Hello there")  # type: ignore[union-attr]
    assert response.output_text == answer_for("Hello there")
    async with client.responses.stream(model=lane[2], input="Hello there") as stream:
        deltas = [e.delta async for e in stream if e.type == "response.reasoning_summary_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == reasoning_for("Hello there")
    assert final.output[0].summary[0].text == reasoning_for("Hello there")  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_function_call_and_follow_up(
    client: openai.AsyncOpenAI, lane: tuple[Stack, str, str], stream: bool
) -> None:
    """A call comes back as a `function_call` item; its output sent back gets an answer quoting the result."""
    if stream:
        async with client.responses.stream(model=lane[1], input=ASK_WEATHER, tools=[WEATHER]) as s:
            first = await s.get_final_response()
    else:
        first = await client.responses.create(model=lane[1], input=ASK_WEATHER, tools=[WEATHER])
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("get_weather", {"city": "Paris"})]
    follow = await client.responses.create(
        model=lane[1],
        tools=[WEATHER],
        input=[
            {"role": "user", "content": ASK_WEATHER},
            {
                "type": "function_call",
                "call_id": calls[0].call_id,
                "name": "get_weather",
                "arguments": calls[0].arguments,
            },
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "Sunny, 21 C"},
        ],
    )
    assert follow.status == "completed"
    assert "Sunny, 21 C" in follow.output_text


@pytest.mark.parametrize("stream", [False, True], ids=["non-stream", "stream"])
async def test_previous_response_id_continues(
    client: openai.AsyncOpenAI, lane: tuple[Stack, str, str], stream: bool
) -> None:
    """A call's follow-up sends only the call's output with `previous_response_id`; the answer quotes it."""
    first = await client.responses.create(model=lane[1], input=ASK_WEATHER, tools=[WEATHER])
    call = next(item for item in first.output if item.type == "function_call")
    follow_up: Any = [{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"}]
    if stream:
        async with client.responses.stream(
            model=lane[1], tools=[WEATHER], previous_response_id=first.id, input=follow_up
        ) as s:
            second = await s.get_final_response()
    else:
        second = await client.responses.create(
            model=lane[1], tools=[WEATHER], previous_response_id=first.id, input=follow_up
        )
    assert second.status == "completed"
    assert second.previous_response_id == first.id
    assert "Sunny, 21 C" in second.output_text


async def test_retrieve_input_items_delete(client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]) -> None:
    """A stored response is retrieved as created, lists its input items, and is gone after deletion."""
    created = await client.responses.create(model=lane[1], input="Hello there", metadata={"k": "v"})
    got = await client.responses.retrieve(created.id)
    assert got.model_dump() == created.model_dump()
    items = await client.responses.input_items.list(created.id)
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [  # type: ignore[union-attr]
        ("message", "user", "Hello there")
    ]
    await client.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_not_stored_when_store_false(client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]) -> None:
    """`store: false` keeps nothing: retrieval is a 404."""
    created = await client.responses.create(model=lane[1], input="Hello there", store=False)
    with pytest.raises(openai.NotFoundError):
        await client.responses.retrieve(created.id)


async def test_response_belongs_to_its_key(stack_factory: StackFactory) -> None:
    """Another client key gets 404 for a stored response, on retrieval, deletion and continuation."""
    stack = await stack_factory(api_keys=(Secret("k1-secret"), Secret("k2-secret")))
    await stack.add("kimi_auth")
    owner = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="k1-secret", max_retries=0)
    other = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key="k2-secret", max_retries=0)
    created = await owner.responses.create(model="kimi-k2.5-instant", input="Hello there")
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await other.responses.create(model="kimi-k2.5-instant", input="Hi", previous_response_id=created.id)
    assert (await owner.responses.retrieve(created.id)).id == created.id
    await owner.close()
    await other.close()


async def test_response_belongs_to_its_managed_key(stack_factory: StackFactory) -> None:
    """A stored response made with a managed `kgw-` key is that key's: it retrieves, lists the input of and
    deletes it; another managed key and a caller without a key do not see it."""
    stack = await stack_factory()
    await stack.add("kimi_auth")
    secrets = []
    for name in ("team-a", "team-b"):
        async with (
            aiohttp.ClientSession() as session,
            session.post(stack.token_service_url + "/admin/keys", json={"name": name}) as resp,
        ):
            assert resp.status == 201
            secrets.append((await resp.json())["secret"])
    owner, other = (openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=s, max_retries=0) for s in secrets)
    created = await owner.responses.create(model="kimi-k2.5-instant", input="Hello there")
    assert (await owner.responses.retrieve(created.id)).id == created.id
    assert [item.type for item in (await owner.responses.input_items.list(created.id)).data] == ["message"]
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(created.id)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{stack.url}/v1/responses/{created.id}") as resp,
    ):
        assert resp.status == 401
    await owner.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError):
        await owner.responses.retrieve(created.id)
    await owner.close()
    await other.close()


async def test_max_output_tokens_is_incomplete(
    client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]
) -> None:
    """An answer cut by `max_output_tokens` is `incomplete` with reason max_output_tokens, stream and non-stream."""
    cut = await client.responses.create(model=lane[1], input="Hello there", max_output_tokens=2)
    assert (cut.status, cut.incomplete_details) == (
        "incomplete",
        IncompleteDetails(reason="max_output_tokens"),
    )
    async with client.responses.stream(model=lane[1], input="Hello there", max_output_tokens=2) as stream:
        last = [event async for event in stream][-1]
    assert last.type == "response.incomplete"
    assert last.response.output_text == cut.output_text  # type: ignore[union-attr]


async def test_invalid_field_is_a_400_naming_it(
    client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]
) -> None:
    """An invalid field is a 400 in OpenAI's error shape, naming the field."""
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model=lane[1], input="Hi", include=["message.thoughts"])  # type: ignore[list-item]
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": "Invalid value for `include[0]`: `message.thoughts`.",
        "type": "invalid_request_error",
        "param": "include",
        "code": None,
    }


async def test_json_schema_format_reaches_kimi_as_a_hint(
    client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]
) -> None:
    """`text.format` json_schema is accepted and echoed; Kimi gets the hint with the schema as the turn's last
    line (the simulator echoes it), and a non-JSON answer is left as Kimi wrote it."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    response = await client.responses.create(
        model=lane[1],
        input="Count",
        text={"format": {"type": "json_schema", "name": "count", "schema": schema, "strict": True}},
        include=["reasoning.encrypted_content"],
        truncation="auto",
    )
    assert response.output_text == answer_for(hint("json_schema", json.dumps(schema, separators=(",", ":"))))
    assert response.text is not None and response.text.format is not None
    assert response.text.format.model_dump(exclude_none=True, by_alias=True) == {
        "type": "json_schema",
        "name": "count",
        "schema": schema,
        "strict": True,
    }
    assert response.truncation == "auto"


async def test_mid_stream_cut_is_response_failed_and_raised(
    client: openai.AsyncOpenAI, lane: tuple[Stack, str, str]
) -> None:
    """An upstream cut after content ends the stream with `response.failed` (the text so far, `incomplete`), then
    the `error` event, which the SDK's `responses.stream` raises as `APIError`; never a completion."""
    await lane[0].arm("cut_mid_stream", after_chunks=2)
    events: list[Any] = []
    with pytest.raises(openai.APIError) as caught:
        async with client.responses.stream(model=lane[1], input="Hello there") as stream:
            async for event in stream:
                events.append(event)
    failed = events[-1]
    assert failed.type == "response.failed"
    assert "response.completed" not in [event.type for event in events]
    assert failed.response.status == "failed"
    assert failed.response.error is not None and failed.response.error.code == "server_error"
    [message] = failed.response.output
    assert message.status == "incomplete"
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert message.content[0].text == deltas and deltas and answer_for("Hello there").startswith(deltas)
    assert caught.value.message == failed.response.error.message
    assert caught.value.body == {
        "message": failed.response.error.message,
        "type": "server_error",
        "param": None,
        "code": "upstream_protocol_error",
    }
