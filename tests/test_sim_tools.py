"""The simulator's tool-call answers (kimi_sim/tools.py): the rule, the variants and faults, over both protocols."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from kimi_sim.answers import answer_for
from kimi_sim.server import SimServer
from kimi_sim.tools import render_calls, tool_chunks, tool_reply
from shared.schema import ChatRequest, Message, ToolCall, ToolChoice, ToolSpec
from tests.test_sim_connect import chat, chat_request, events, text_of
from tests.test_sim_rest import complete, login, new_chat, sse_events
from upstream_worker.kimi.flatten import flatten_connect, flatten_rest
from upstream_worker.toolcalls import ParsedCall, ToolSet, build_continuation, build_prompt, parse_answer

READ = ToolSpec(
    "Read",
    "Reads a file.",
    '{"type":"object","properties":{"file_path":{"type":"string"},"limit":{"type":"integer"}},"required":["file_path"]}',
)
TIME = ToolSpec(
    "get_time", "Current time.", '{"type":"object","properties":{"tz":{"type":"string"}},"required":["tz"]}'
)
TOOLS = ToolSet([READ, TIME])
DIRECTIVE = 'Please read it.\ncall Read {"file_path": "/tmp/a.txt"}'
PROSE = "好的，我来调用工具 (calling Read)."
READ_CALL = (
    "<|tool_calls_section_begin|><|tool_call_begin|>functions.Read:0<|tool_call_argument_begin|>"
    '{"file_path": "/tmp/a.txt"}<|tool_call_end|><|tool_calls_section_end|>'
)


def tool_request(*messages: Message, **fields: Any) -> ChatRequest:
    return ChatRequest(request_id="r", model="kimi-k2", messages=list(messages), tools=[READ, TIME], **fields)


def first_prompt(text: str = DIRECTIVE, **fields: Any) -> str:
    """The flattened new-chat prompt the worker would send for one user message."""
    return flatten_connect(
        build_prompt(tool_request(Message(role="user", content=text), **fields)).messages, False
    )


def follow_up() -> ChatRequest:
    return tool_request(
        Message(role="user", content=DIRECTIVE),
        Message(
            role="assistant",
            content="",
            tool_calls=[ToolCall("call_0", "Read", '{"file_path":"/tmp/a.txt"}')],
        ),
        Message(role="tool", content="     1\tsecret-7f3a\n     2\tsecond line", tool_call_id="call_0"),
    )


def test_directive_gives_native_calls() -> None:
    """A declared-tools prompt whose user text says `call NAME {json}` is answered with prose and that call."""
    reply = tool_reply("", first_prompt(), {})
    assert reply is not None and reply.text == f"{PROSE}\n\n{READ_CALL}"


def test_several_directives_are_parallel_calls_numbered_from_the_next_index() -> None:
    """Every directive after the last result becomes one call, indices starting at the prompt's next index."""
    prompt = first_prompt('call Read {"file_path": "/a"}\ncall get_time {"tz": "UTC"}')
    reply = tool_reply("", prompt.replace("next call index is 0", "next call index is 4"), {})
    assert reply is not None
    _, result = parse_answer(TOOLS, reply.text)
    assert [(p.native_id, p.call.arguments) for p in result.calls] == [
        ("functions.Read:4", '{"file_path":"/a"}'),
        ("functions.get_time:5", '{"tz":"UTC"}'),
    ]


def test_results_are_quoted() -> None:
    """Once the results of the directives are in the prompt, the answer quotes each of them."""
    prompt = flatten_connect(build_prompt(follow_up()).messages, False)
    reply = tool_reply("", prompt, {})
    assert reply is not None and reply.text == (
        "Tool results received. 工具结果如下：\nfunctions.Read:0 returned: 1\tsecret-7f3a\n     2\tsecond line"
    )


def test_results_in_a_continuation_are_quoted_from_the_chat_history() -> None:
    """In a kept chat the directive is in an earlier turn and the prompt holds only the new results."""
    first = build_prompt(tool_request(Message(role="user", content=DIRECTIVE)))
    history = flatten_connect(first.messages, False) + "\n" + READ_CALL
    answered = ParsedCall(
        ToolCall("call_0", "Read", '{"file_path":"/tmp/a.txt"}'), "functions.Read:0", "native"
    )
    turn = build_continuation(follow_up(), first.state.after_answer([answered]))
    reply = tool_reply(history, flatten_connect(turn.messages, True), {})
    assert reply is not None and reply.text.startswith(
        "Tool results received. 工具结果如下：\nfunctions.Read:0 returned: 1"
    )


@pytest.mark.parametrize(
    ("prompt", "faults"),
    [
        ('call Read {"file_path": "/a"}', {}),  # no tool block: the ordinary answer
        (first_prompt(tool_choice=ToolChoice(mode="none")), {}),  # the `none` rule forbids calls
        (first_prompt(), {"no_tool_call": {}}),
        (first_prompt("just chat"), {}),  # tools declared, nothing asked
        (first_prompt("call Read {not json}"), {}),
    ],
)
def test_no_tool_reply(prompt: str, faults: dict[str, dict[str, Any]]) -> None:
    """Without tools, without a directive, under the `none` rule or the `no_tool_call` fault: no tool reply."""
    assert tool_reply("", prompt, faults) is None


@pytest.mark.parametrize(
    ("variant", "form"),
    [
        ("native", "native"),
        ("singular", "native_singular"),
        ("spaced", "native"),
        ("no_section_end", "native"),
        ("bare", "native_bare"),
        ("simple", "simple"),
        ("xml", "xml"),
    ],
)
def test_every_variant_parses_to_the_same_calls(variant: str, form: str) -> None:
    """Each markup variant the simulator can write is read by the gateway's parser as the same two calls."""
    calls = [("Read", '{"file_path": "/a", "limit": 3}'), ("get_time", '{"tz": "UTC"}')]
    text = render_calls(calls, 2, variant)
    content, result = parse_answer(TOOLS, tool_chunks(text, 7), first_index=2)
    assert content == ""
    assert [(p.call.name, p.call.arguments, p.native_id, p.format) for p in result.calls] == [
        ("Read", '{"file_path":"/a","limit":3}', "functions.Read:2", form),
        ("get_time", '{"tz":"UTC"}', "functions.get_time:3", form),
    ]


@pytest.mark.parametrize(
    ("kind", "failure"),
    [("malformed_json", "malformed"), ("unknown_tool", "unknown_tool"), ("not_an_object", "malformed")],
)
def test_error_faults_break_the_first_call(kind: str, failure: str) -> None:
    """`tool_call_error` makes the first call unusable in the chosen way."""
    reply = tool_reply("", first_prompt(), {"tool_call_error": {"kind": kind}})
    assert reply is not None
    _, result = parse_answer(TOOLS, reply.text)
    assert result.failure is not None and result.failure.kind == failure


def test_thinking_variant_puts_the_call_in_the_reasoning() -> None:
    """The `thinking` variant writes the call only into the reasoning; the answer is prose."""
    reply = tool_reply("", first_prompt(), {"tool_call_variant": {"variant": "thinking"}})
    assert reply is not None
    assert reply.text == PROSE
    assert reply.reasoning == f"先想一想。{READ_CALL}"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def rest_answer(http: aiohttp.ClientSession, sim: SimServer, prompt: str) -> list[str]:
    headers = await login(http, sim)
    chat_id = await new_chat(http, sim, headers)
    status, raw = await complete(http, sim, headers, chat_id, messages=[{"role": "user", "content": prompt}])
    assert status == 200
    return [e["text"] for e in sse_events(raw) if e["event"] == "cmpl"]


async def connect_answer(http: aiohttp.ClientSession, sim: SimServer, prompt: str) -> list[str]:
    token = sim.state.add_account("kimi_auth").token
    status, raw = await chat(http, sim, token, chat_request(prompt))
    assert status == 200
    return [e["block"]["text"]["content"] for e in events(raw) if "text" in e.get("block", {})]


@pytest.mark.parametrize("protocol", ["rest", "connect"])
async def test_tool_answer_streams_in_small_pieces(
    http: aiohttp.ClientSession, kimi_sim: SimServer, protocol: str
) -> None:
    """Both protocols stream the tool answer in 7-character pieces, so the markers are cut across events."""
    prompt = (
        flatten_rest(build_prompt(tool_request(Message(role="user", content=DIRECTIVE))).messages, False)
        if protocol == "rest"
        else first_prompt()
    )
    pieces = await (rest_answer if protocol == "rest" else connect_answer)(http, kimi_sim, prompt)
    assert "".join(pieces) == f"{PROSE}\n\n{READ_CALL}"
    assert pieces == tool_chunks("".join(pieces), 7)
    _, result = parse_answer(TOOLS, pieces)
    assert [(p.call.name, p.call.arguments) for p in result.calls] == [("Read", '{"file_path":"/tmp/a.txt"}')]


@pytest.mark.parametrize("protocol", ["rest", "connect"])
async def test_error_fault_spoils_only_the_first_answer(
    http: aiohttp.ClientSession, kimi_sim: SimServer, protocol: str
) -> None:
    """Armed once, `tool_call_error` breaks the first answer and the correction attempt gets a good call."""
    kimi_sim.state.faults.arm("tool_call_error", kind="unknown_tool")
    answer = rest_answer if protocol == "rest" else connect_answer
    first = "".join(await answer(http, kimi_sim, first_prompt()))
    second = "".join(await answer(http, kimi_sim, first_prompt()))
    assert "functions.no_such_tool:0" in first
    assert second == f"{PROSE}\n\n{READ_CALL}"


async def test_variant_fault_over_connect(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """`tool_call_variant` picks the markup of the next answer (here the XML form)."""
    kimi_sim.state.faults.arm("tool_call_variant", variant="xml")
    text = "".join(await connect_answer(http, kimi_sim, first_prompt()))
    assert (
        text
        == f'{PROSE}\n\n<tool_call><invoke name="Read"><parameter name="file_path">/tmp/a.txt</parameter></invoke></tool_call>'
    )


async def test_thinking_variant_over_connect(http: aiohttp.ClientSession, kimi_sim: SimServer) -> None:
    """With thinking on, the `thinking` variant streams the call in `block.think` and prose as the answer."""
    kimi_sim.state.faults.arm("tool_call_variant", variant="thinking")
    token = kimi_sim.state.add_account("kimi_auth").token
    status, raw = await chat(http, kimi_sim, token, chat_request(first_prompt(), options={"thinking": True}))
    evs = events(raw)
    assert (status, text_of(evs, "think"), text_of(evs)) == (200, f"先想一想。{READ_CALL}", PROSE)


async def test_prompt_without_tools_keeps_the_ordinary_answer(
    http: aiohttp.ClientSession, kimi_sim: SimServer
) -> None:
    """A directive without a tool block is ordinary text: the usual echo answer."""
    text = "".join(await rest_answer(http, kimi_sim, 'call Read {"file_path": "/a"}'))
    assert text == answer_for('call Read {"file_path": "/a"}')
