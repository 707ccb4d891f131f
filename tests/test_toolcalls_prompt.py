"""Table tests of the prompt protocol: what Kimi receives for a request with tools (docs/TOOLS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.schema import AttachmentPart, ChatRequest, Message, TextPart, ToolCall, ToolChoice, ToolSpec
from upstream_worker.kimi.flatten import flatten_connect, flatten_rest
from upstream_worker.toolcalls import (
    ParsedCall,
    ToolCallFailure,
    ToolState,
    build_continuation,
    build_prompt,
    correction_message,
    needs_tool_prompt,
    render_declarations,
)
from upstream_worker.toolcalls.prompt import rules_text, tool_block

WEATHER = ToolSpec(
    "get_weather",
    "Current weather for a city.",
    '{"type":"object","properties":{"city":{"type":"string","description":"City name"}},"required":["city"]}',
)
TIME = ToolSpec(
    "get_time", "Current time.", '{"type":"object","properties":{"tz":{"type":"string"}},"required":["tz"]}'
)
FIXTURE = Path(__file__).parent / "fixtures" / "claude_code_tools.json"
RULES_AUTO = (
    "## Tool rules for this answer\n"
    "- Call functions when they help; otherwise answer in plain text.\n"
    "- The next call index is {n}. Format: <|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:{n}"
    "<|tool_call_argument_begin|>{{JSON arguments}}<|tool_call_end|><|tool_calls_section_end|>"
)


def request(*messages: Message, **fields: object) -> ChatRequest:
    return ChatRequest(request_id="r1", model="kimi-k2", messages=list(messages), **fields)  # type: ignore[arg-type]


def user(text: str) -> Message:
    return Message(role="user", content=text)


def assistant(text: str, *calls: ToolCall) -> Message:
    return Message(role="assistant", content=text, tool_calls=list(calls) or None)


def result(text: str, call_id: str | None = None, name: str | None = None, is_error: bool = False) -> Message:
    return Message(role="tool", content=text, tool_call_id=call_id, name=name, is_error=is_error)


OPENAI_EXAMPLE = request(
    Message(role="system", content="You are terse."),
    user("Weather in Paris?"),
    assistant("", ToolCall("call_a", "get_weather", '{"city": "Paris"}')),
    result('{"temp_c":18}', "call_a"),
    user("And Tokyo?"),
    tools=[WEATHER],
)


def test_new_chat_prompt_through_flatten() -> None:
    """A new Connect chat receives the tool block, the canonical history and the reminder before the question."""
    prompt = build_prompt(OPENAI_EXAMPLE)
    block = tool_block(render_declarations([WEATHER]))
    assert flatten_connect(prompt.messages, continuation=False) == (
        f"system:{block}\n"
        "system:You are terse.\n"
        "user:Weather in Paris?\n"
        "assistant:<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city":"Paris"}<|tool_call_end|><|tool_calls_section_end|>\n'
        "tool:## Return of functions.get_weather:0\n"
        '{"temp_c":18}\n'
        f"system:{RULES_AUTO.format(n=1)}\n"
        "system:关注用户最新的消息\n"
        "user:And Tokyo?"
    )
    assert flatten_rest(prompt.messages, continuation=False).endswith("user:And Tokyo?\n")
    assert prompt.state == ToolState(
        ids={"call_a": "functions.get_weather:0"}, next_index=1, declared=prompt.state.declared
    )


def test_tool_block_text() -> None:
    """The tool block is the header, the intro, the TypeScript-style declarations and the call instructions."""
    assert tool_block(render_declarations([WEATHER])) == (
        "# Tools\n"
        "You can call functions. Only the functions declared below exist in this conversation; you do not run "
        "them yourself, no built-in tool (search, code runner, sandbox) stands in for them, and the caller runs "
        "each call and sends back its result.\n"
        "\n"
        "namespace functions {\n"
        "// Current weather for a city.\n"
        "type get_weather = (_: {\n"
        "// City name\n"
        "city: string,\n"
        "}) => any;\n"
        "}\n"
        "\n"
        "## How to call\n"
        "To call functions, end your answer with one section in exactly this markup, as plain text and never "
        "inside a code block:\n"
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:INDEX<|tool_call_argument_begin|>"
        "{JSON arguments}<|tool_call_end|><|tool_calls_section_end|>\n"
        "- One <|tool_call_begin|>…<|tool_call_end|> per call; independent calls go in the same section.\n"
        "- NAME is a declared function. INDEX counts the calls of the whole conversation from 0.\n"
        "- The arguments are one JSON object: every required parameter, each of the declared type.\n"
        '- Stop after the section. The results come in the next message, each as "## Return of '
        'functions.NAME:INDEX" followed by the output.'
    )


def test_history_ids_are_rewritten_with_a_conversation_counter() -> None:
    """Client ids become `functions.{name}:{n}` counted over the conversation; results follow their call."""
    prompt = build_prompt(
        request(
            user("go"),
            assistant(
                "Two at once.",
                ToolCall("toolu_1", "get_weather", '{"city":"A"}'),
                ToolCall("toolu_2", "get_time", '{"tz":"UTC"}'),
            ),
            result("12:00", "toolu_2"),
            result("sunny", "toolu_1", is_error=False),
            assistant("", ToolCall("toolu_3", "get_weather", '{"city":"B"}')),
            result("not found", "toolu_3", is_error=True),
            user("thanks"),
            tools=[WEATHER, TIME],
        )
    )
    texts = [m.text() for m in prompt.messages[1:-2]]
    assert texts == [
        "go",
        "Two at once.\n<|tool_calls_section_begin|>"
        '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city":"A"}<|tool_call_end|>'
        '<|tool_call_begin|>functions.get_time:1<|tool_call_argument_begin|>{"tz":"UTC"}<|tool_call_end|>'
        "<|tool_calls_section_end|>",
        "## Return of functions.get_time:1\n12:00\n\n## Return of functions.get_weather:0\nsunny",
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:2<|tool_call_argument_begin|>"
        '{"city":"B"}<|tool_call_end|><|tool_calls_section_end|>',
        "## Return of functions.get_weather:2 (error)\nnot found",
    ]
    assert prompt.state.ids == {
        "toolu_1": "functions.get_weather:0",
        "toolu_2": "functions.get_time:1",
        "toolu_3": "functions.get_weather:2",
    }
    assert prompt.state.next_index == 3


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        # Gemini: no ids, matched by name.
        (
            [result("t", name="get_time"), result("w", name="get_weather")],
            "## Return of functions.get_time:1\nt\n\n## Return of functions.get_weather:0\nw",
        ),
        # Neither id nor name: matched in order.
        (
            [result("first"), result("second")],
            "## Return of functions.get_weather:0\nfirst\n\n## Return of functions.get_time:1\nsecond",
        ),
        # An unknown id still takes the next open call.
        ([result("x", "call_zz")], "## Return of functions.get_weather:0\nx"),
        # Parts: text kept, an image named by its file name.
        (
            [
                Message(
                    role="tool",
                    content=[
                        TextPart("see"),
                        AttachmentPart("ab" * 32, "image/png", "chart.png", 2, "image", "inline"),
                    ],
                    tool_call_id="c1",
                )
            ],
            "## Return of functions.get_weather:0\nsee\n[image: chart.png]",
        ),
        ([result("", "c1")], "## Return of functions.get_weather:0\n(no output)"),
    ],
)
def test_results_are_paired_with_their_calls(results: list[Message], expected: str) -> None:
    """Results find their call by id, then by name, then in order."""
    calls = assistant("", ToolCall("c1", "get_weather", "{}"), ToolCall("c2", "get_time", "{}"))
    prompt = build_prompt(request(user("go"), calls, *results, user("ok"), tools=[WEATHER, TIME]))
    assert prompt.messages[3].text() == expected


def test_old_calls_are_rendered_canonically() -> None:
    """Bad old arguments become `{}`, and markers written in old assistant text are removed."""
    prompt = build_prompt(
        request(
            user("go"),
            assistant("I'll call <|tool_call_begin|>it", ToolCall("x", "get_weather", '{"city": "A",')),
            assistant("plain <|tool_calls_section_end|>answer"),
            user("again"),
            tools=[WEATHER],
        )
    )
    assert prompt.messages[2].text() == (
        "I'll call it\n<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        "<|tool_call_argument_begin|>{}<|tool_call_end|><|tool_calls_section_end|>"
    )
    assert prompt.messages[3].text() == "plain answer"


@pytest.mark.parametrize(
    ("choice", "parallel", "rules"),
    [
        (ToolChoice(mode="none"), True, ["Do not call any function in this answer; answer in plain text."]),
        (
            ToolChoice(mode="required"),
            True,
            ["You must call at least one function in this answer."],
        ),
        (
            ToolChoice(mode="named", name="get_time"),
            True,
            ["You must call functions.get_time in this answer."],
        ),
        (
            ToolChoice(mode="auto", allowed=["get_time"]),
            False,
            [
                "Call functions when they help; otherwise answer in plain text. Only these functions may be called: get_time.",
                "Call at most one function in this answer.",
            ],
        ),
        (
            ToolChoice(mode="required", allowed=["get_time", "get_weather"]),
            True,
            [
                "You must call at least one function in this answer. Only these functions may be called: get_time, get_weather."
            ],
        ),
    ],
)
def test_rules_follow_tool_choice(choice: ToolChoice, parallel: bool, rules: list[str]) -> None:
    """Each `tool_choice` mode and `parallel_tool_calls: false` become their sentence in the reminder."""
    text = rules_text(
        request(user("x"), tools=[WEATHER], tool_choice=choice, parallel_tool_calls=parallel), 4
    )
    lines = text.split("\n")
    assert lines[0] == "## Tool rules for this answer"
    assert [line[2:] for line in lines[1:] if not line.startswith("- The next call index")] == rules
    if choice.mode == "none":
        assert len(lines) == 2


def test_repair_attempt_in_a_new_chat_carries_the_correction() -> None:
    """On the repair attempt the reminder also says what was wrong and asks for the whole answer again."""
    failure = ToolCallFailure(
        "invalid_arguments",
        "the arguments of get_weather do not fit its schema: $.city: required property is missing",
        "functions.get_weather:1",
        "native",
    )
    prompt = build_prompt(OPENAI_EXAMPLE, correction=failure)
    assert prompt.messages[-2].text() == (
        RULES_AUTO.format(n=1) + "\nYour previous answer had an unusable function call: the arguments of "
        "get_weather do not fit its schema: $.city: required property is missing. Write the whole answer again. "
        "Call functions when they help; otherwise answer in plain text. Use exactly the call format "
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.NAME:INDEX<|tool_call_argument_begin|>"
        "{JSON arguments}<|tool_call_end|><|tool_calls_section_end|>, with arguments that fit the declared "
        "parameters, and never put a call inside a code block."
    )


def test_repair_turn_in_the_same_chat_for_a_missing_call() -> None:
    """The same-chat repair turn is one user message naming the rule the answer ignored."""
    named = request(user("x"), tools=[TIME], tool_choice=ToolChoice(mode="named", name="get_time"))
    message = correction_message(ToolCallFailure("call_required", "no call", None, None), named)
    assert message.role == "user"
    assert message.text().startswith(
        "Your previous answer called no function. Write the whole answer again. "
        "You must call functions.get_time in this answer. Use exactly the call format"
    )


def test_repair_turn_with_next_index_ends_with_the_rules() -> None:
    """Given the next index, the same-chat repair turn ends with this answer's rules and that index."""
    named = request(user("x"), tools=[TIME], tool_choice=ToolChoice(mode="named", name="get_time"))
    failure = ToolCallFailure("call_required", "no call", None, None)
    message = correction_message(failure, named, next_index=3)
    assert message.text() == correction_message(failure, named).text() + "\n\n" + rules_text(named, 3)
    assert "The next call index is 3." in message.text()


def test_continuation_sends_only_the_new_results() -> None:
    """A kept chat's next turn is one user message: the new results (ids from the state) and the rules."""
    first = build_prompt(request(user("Weather in Paris?"), tools=[WEATHER]))
    parsed = ParsedCall(
        ToolCall("call_r1_0", "get_weather", '{"city":"Paris"}'), "functions.get_weather:0", "native"
    )
    state = first.state.after_answer([parsed])
    assert state == ToolState(
        {"call_r1_0": "functions.get_weather:0"}, 1, ["functions.get_weather:0"], first.state.declared
    )
    follow_up = request(
        user("Weather in Paris?"),
        assistant("", parsed.call),
        result("18°C", "call_r1_0"),
        tools=[WEATHER],
    )
    turn = build_continuation(follow_up, state)
    assert [m.role for m in turn.messages] == ["user"]
    assert flatten_connect(turn.messages, continuation=True) == (
        "## Return of functions.get_weather:0\n18°C\n\n" + RULES_AUTO.format(n=1)
    )
    assert flatten_rest(turn.messages, continuation=True) == flatten_connect(turn.messages, True) + "\n"
    assert turn.state.open == []


def test_urls_in_a_continued_result_stay_plain_text() -> None:
    """REST wraps URLs of a user's string content for Kimi to fetch; a URL in a tool result is not wrapped."""
    state = ToolState({"c": "functions.get_time:0"}, 1, ["functions.get_time:0"], "d")
    turn = build_continuation(request(result("see https://a.com/x", "c"), tools=[TIME]), state)
    text = flatten_rest(turn.messages, continuation=True)
    assert "\n\n## Return of functions.get_time:0\nsee https://a.com/x\n\n## Tool rules" in text
    assert "<url" not in text


def test_continuation_declares_tools_again_only_when_they_changed() -> None:
    """The declarations are re-sent in a kept chat only when the tool set differs from the one Kimi saw."""
    first = build_prompt(request(user("hi"), tools=[WEATHER]))
    same = build_continuation(request(user("more"), tools=[WEATHER]), first.state)
    changed = build_continuation(request(user("more"), tools=[WEATHER, TIME]), first.state)
    assert same.messages[0].text().startswith("more\n\n## Tool rules")
    assert changed.messages[0].text().startswith("# Tools\n")
    assert "type get_time = (_: {" in changed.messages[0].text()
    assert changed.state.declared != first.state.declared


def test_continuation_without_the_history_uses_the_state() -> None:
    """A client that sends only the new messages gets the ids the model used, also for results without id."""
    state = ToolState(
        {"call_9": "functions.get_time:5"}, 6, ["functions.get_time:5", "functions.get_weather:6"], "d"
    )
    turn = build_continuation(
        request(result("w", name="get_weather"), result("t", "call_9"), tools=[]), state
    )
    assert (
        turn.messages[0].text()
        == "## Return of functions.get_weather:6\nw\n\n## Return of functions.get_time:5\nt"
    )


def test_needs_tool_prompt() -> None:
    """Requests with tools, or with calls and results in the history, go through the tool prompt."""
    assert needs_tool_prompt(request(user("x"), tools=[WEATHER]))
    assert needs_tool_prompt(request(user("x"), assistant("", ToolCall("a", "f", "{}")), result("r", "a")))
    assert not needs_tool_prompt(request(user("x")))


def test_claude_code_tool_set_is_compacted_to_the_budget() -> None:
    """Claude Code's 21 tools (59 KB of JSON) become a block under 16 000 characters, signatures whole."""
    tools = json.loads(FIXTURE.read_text(encoding="utf-8"))["tools"]
    specs = [
        ToolSpec(t["name"], t["description"], json.dumps(t["input_schema"], separators=(",", ":")))
        for t in tools
    ]
    raw = len(json.dumps(tools, separators=(",", ":"), ensure_ascii=False))
    declarations = render_declarations(specs)
    block = tool_block(declarations)
    assert (len(specs), raw) == (21, 59191)
    assert (declarations.level, declarations.fits, len(declarations.text), len(block)) == (
        2,
        True,
        11985,
        12933,
    )
    for tool in tools:
        assert f"type {tool['name']} = " in declarations.text
        for name in tool["input_schema"]["properties"]:
            assert name in declarations.text
