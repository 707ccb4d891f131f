"""Function calling end to end through the official `google-genai` SDK, on a Connect and a REST account: real
Redis, the simulator (which calls a tool for each `call NAME {json}` line), the gateway and a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from google import genai
from google.genai import types

from tests.stack import Stack, StackFactory, stack_factory

__all__ = ["stack_factory"]

#: google-genai's async transport subclasses aiohttp's ClientSession, which aiohttp deprecates (the SDK's code).
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

LANES = [("kimi_auth", "kimi-k2.5-instant"), ("refresh_token", "kimi")]
TOOL = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Current weather for a city.",
            parameters_json_schema={
                "type": "object",
                "properties": {"city_name": {"type": "string"}},
                "required": ["city_name"],
            },
        ),
        types.FunctionDeclaration(
            name="get_time",
            parameters=types.Schema(
                type=types.Type.OBJECT, properties={"tz": types.Schema(type=types.Type.STRING)}
            ),
        ),
    ]
)
ASK_WEATHER = 'Weather in Paris?\ncall get_weather {"city_name": "Paris"}'
ASK_BOTH = 'Weather and time?\ncall get_weather {"city_name": "Paris"}\ncall get_time {"tz": "Europe/Paris"}'
#: Any piece of K2's call markup (the native markers, the XML form) that must never reach content.
MARKUP = ("<|", "|>", "<tool_call>", "<invoke")

#: What a response says, ids aside: its text, its calls as (name, args), the finish reason.
Answer = tuple[str, list[tuple[str | None, dict[str, Any] | None]], types.FinishReason | None]


def _calling(*names: str) -> str:
    return f"好的，我来调用工具 (calling {', '.join(names)})."


@pytest_asyncio.fixture(params=LANES, ids=["connect", "rest"])
async def lane(
    request: pytest.FixtureRequest, stack_factory: StackFactory
) -> AsyncIterator[tuple[Stack, str]]:
    kind, model = request.param
    stack = await stack_factory()
    await stack.add(kind)
    yield stack, model


@pytest_asyncio.fixture
async def client(lane: tuple[Stack, str]) -> AsyncIterator[genai.Client]:
    client = genai.Client(
        api_key="local", http_options=types.HttpOptions(base_url=lane[0].url, timeout=30_000)
    )
    yield client
    await client.aio.aclose()
    client.close()


def _parts(response: types.GenerateContentResponse) -> list[types.Part]:
    candidate = (response.candidates or [types.Candidate()])[0]
    return list(candidate.content.parts or []) if candidate.content else []


async def _both(
    client: genai.Client, model: str, contents: Any, mode: str | None = None, allowed: list[str] | None = None
) -> tuple[Answer, Answer, list[str | None]]:
    """The non-stream response, the stream's chunks put together, and every call id seen."""
    tool_config = None
    if mode is not None:
        calling = types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode(mode), allowed_function_names=allowed
        )
        tool_config = types.ToolConfig(function_calling_config=calling)
    config = types.GenerateContentConfig(tools=[TOOL], tool_config=tool_config)
    whole = await client.aio.models.generate_content(model=model, contents=contents, config=config)
    chunks = [
        c
        async for c in await client.aio.models.generate_content_stream(
            model=model, contents=contents, config=config
        )
    ]
    streamed_parts = [p for c in chunks for p in _parts(c)]
    ids = [p.function_call.id for p in _parts(whole) + streamed_parts if p.function_call]
    finish = (chunks[-1].candidates or [types.Candidate()])[0].finish_reason
    whole_finish = (whole.candidates or [types.Candidate()])[0].finish_reason
    return _answer(_parts(whole), whole_finish), _answer(streamed_parts, finish), ids


def _answer(parts: list[types.Part], finish: types.FinishReason | None) -> Answer:
    text = "".join(p.text for p in parts if p.text and not p.thought)
    assert not any(marker in text for marker in MARKUP)
    calls = [(p.function_call.name, p.function_call.args) for p in parts if p.function_call]
    return text, calls, finish


STOP = types.FinishReason.STOP


async def test_single_call(lane: tuple[Stack, str], client: genai.Client) -> None:
    """One `call` line gives one functionCall part with an id and finish STOP; the stream carries the same."""
    whole, streamed, ids = await _both(client, lane[1], ASK_WEATHER)
    assert whole == streamed == (_calling("get_weather"), [("get_weather", {"city_name": "Paris"})], STOP)
    assert len({i for i in ids if i}) == 2


async def test_parallel_calls(lane: tuple[Stack, str], client: genai.Client) -> None:
    """Two `call` lines give two functionCall parts in order, stream and non-stream alike."""
    whole, streamed, ids = await _both(client, lane[1], ASK_BOTH)
    calls = [("get_weather", {"city_name": "Paris"}), ("get_time", {"tz": "Europe/Paris"})]
    assert whole == streamed == (_calling("get_weather", "get_time"), calls, STOP)
    assert len({i for i in ids if i}) == 4


async def test_follow_up_with_the_responses(lane: tuple[Stack, str], client: genai.Client) -> None:
    """functionResponse parts (one matched by id, one by name only) are answered from: each is quoted, in the
    order sent, under the index of the call it answers."""
    contents = [
        types.Content(role="user", parts=[types.Part(text=ASK_BOTH)]),
        types.Content(
            role="model",
            parts=[
                types.Part(
                    function_call=types.FunctionCall(
                        id="fc_1", name="get_weather", args={"city_name": "Paris"}
                    )
                ),
                types.Part(function_call=types.FunctionCall(name="get_time", args={"tz": "Europe/Paris"})),
            ],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part(
                    function_response=types.FunctionResponse(name="get_time", response={"output": "10:15"})
                ),
                types.Part(
                    function_response=types.FunctionResponse(
                        id="fc_1", name="get_weather", response={"output": "18 C and sunny"}
                    )
                ),
            ],
        ),
    ]
    whole, streamed, _ = await _both(client, lane[1], contents)
    quoted = (
        "Tool results received. 工具结果如下：\n"
        'functions.get_time:1 returned: {"output":"10:15"}\n'
        'functions.get_weather:0 returned: {"output":"18 C and sunny"}'
    )
    assert whole == streamed == (quoted, [], STOP)


@pytest.mark.parametrize(
    ("allowed", "ask", "calls"),
    [
        (None, ASK_WEATHER, [("get_weather", {"city_name": "Paris"})]),
        (["get_time"], 'What time?\ncall get_time {"tz": "UTC"}', [("get_time", {"tz": "UTC"})]),
    ],
    ids=["any", "named"],
)
async def test_mode_any_and_named(
    lane: tuple[Stack, str], client: genai.Client, allowed: list[str] | None, ask: str, calls: list[Any]
) -> None:
    """Mode ANY, alone or with one allowed function name, gives that call, stream and non-stream alike."""
    whole, streamed, _ = await _both(client, lane[1], ask, "ANY", allowed)
    assert whole == streamed == (_calling(calls[0][0]), calls, STOP)


async def test_mode_none_answers_in_text(lane: tuple[Stack, str], client: genai.Client) -> None:
    """Mode NONE: no call although the user asks for one; an ordinary text answer."""
    whole, streamed, ids = await _both(client, lane[1], ASK_WEATHER, "NONE")
    assert whole == streamed
    assert (whole[1], whole[2], ids) == ([], STOP, [])
    assert whole[0].startswith("你好！You said: ")
