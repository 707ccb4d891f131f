"""Table tests of adapters/dispatch.py: which writer piece every canonical event becomes, whatever the dialect."""

from __future__ import annotations

import pytest

from adapters import openai
from adapters.base import ReplyOptions, RequestContext
from adapters.dispatch import Dispatcher, Ending, FunctionDialect
from shared.errors import GatewayError, UpstreamOverloaded
from shared.schema import (
    ChatOptions,
    ChatRequest,
    Citation,
    Done,
    ErrorEvent,
    Event,
    Keepalive,
    Message,
    ReasoningDelta,
    Start,
    TextDelta,
    ToolCall,
    ToolCallEvent,
    Usage,
)
from shared.usage_estimate import estimate_prompt_tokens


class Recorder:
    """A writer that spells each piece it is asked for, so a test reads the dispatcher's calls as bytes."""

    content_type = "text/test"
    keepalive = b"<ping>"

    def __init__(self, *, echoes_keepalive: bool = True) -> None:
        self.echoes_keepalive = echoes_keepalive
        self.adopted: list[str] = []

    def head(self) -> bytes:
        return b"<head>"

    def adopt(self, conversation_id: str) -> None:
        self.adopted.append(conversation_id)

    def answer(self, text: str) -> bytes:
        return f"<answer {text}>".encode()

    def reasoning(self, text: str) -> bytes:
        return f"<reasoning {text}>".encode()

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        return f"<call {index} {call.id} {call.name} {call.arguments}>".encode()

    def finish(self, ending: Ending, text: str) -> bytes:
        return f"<finish {ending.reason} {ending.stop_sequence} {text!r} {_counts(ending)}>".encode()

    def error(self, exc: GatewayError) -> bytes:
        return f"<error {exc.kind}>".encode()

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        return f"<body {ending.reason} {answer!r} {reasoning!r} {_counts(ending)}>".encode()


def _counts(ending: Ending) -> str:
    usage = ending.usage
    return f"{usage.prompt_tokens}/{usage.completion_tokens}/{usage.reasoning_tokens}"


PROMPT = estimate_prompt_tokens(["hi"])


def _dispatcher(
    writer: Recorder | None = None,
    *,
    stream: bool = True,
    options: ChatOptions | None = None,
    reply: ReplyOptions | None = None,
) -> Dispatcher:
    request = ChatRequest(
        "r1", "kimi", [Message("user", "hi")], stream=stream, options=options or ChatOptions()
    )
    return Dispatcher(request, reply or ReplyOptions(), writer or Recorder())


def _feed(dispatcher: Dispatcher, events: list[Event]) -> bytes:
    return b"".join(dispatcher.feed(event) for event in events)


@pytest.mark.parametrize(
    ("reply", "events", "expected"),
    [
        (
            ReplyOptions(),
            [Start(), TextDelta("Hel"), ReasoningDelta("r"), TextDelta("lo"), Usage(3, 9), Done()],
            b"<answer Hel><reasoning r><answer lo><finish stop None '' 3/9/1>",
        ),
        (
            ReplyOptions(stop_sequences=("END",)),
            [TextDelta("abE"), TextDelta("ND more"), TextDelta("late"), Done()],
            b"<answer ab><finish stop_sequence END '' " + f"{PROMPT}/1/0>".encode(),
        ),
        (
            ReplyOptions(stop_sequences=("XYZ",)),
            [TextDelta("abX"), TextDelta("Y"), Usage(3, 2), Done("length")],
            b"<answer ab><finish length None 'XY' 3/2/0>",
        ),
        (
            ReplyOptions(max_tokens=1),
            [ReasoningDelta("rrrr"), TextDelta("abcdefgh"), Done()],
            b"<reasoning rrrr><finish max_tokens None 'abcd' " + f"{PROMPT}/2/1>".encode(),
        ),
        (
            ReplyOptions(show_reasoning=False),
            [ReasoningDelta("rrrr"), TextDelta("A"), Usage(3, 2), Done()],
            b"<answer A><finish stop None '' 3/2/1>",
        ),
        (
            ReplyOptions(stream_usage=False),
            [ReasoningDelta("rrrr"), TextDelta("A"), Usage(3, 2), Done("content_filter")],
            b"<reasoning rrrr><answer A><finish content_filter None '' 0/0/0>",
        ),
    ],
)
def test_stream_events_become_writer_pieces(
    reply: ReplyOptions, events: list[Event], expected: bytes
) -> None:
    """Text goes through the limiter, a cut or Done ends the reply once with its reason, tail and usage."""
    dispatcher = _dispatcher(reply=reply)
    assert _feed(dispatcher, events) == expected
    assert dispatcher.finished


def test_citations_are_answer_text_unless_silent() -> None:
    """A citation is the kimi-free-api line fed through the limiter; a -silent model writes nothing for it."""
    events: list[Event] = [Citation(1, "T", "https://t"), TextDelta("A")]
    assert _feed(_dispatcher(), events) == "<answer 【检索 1】 [T](https://t)\n><answer \nA>".encode()
    assert _feed(_dispatcher(options=ChatOptions(silent=True)), events) == b"<answer A>"


@pytest.mark.parametrize(
    ("stream", "echoes", "expected"), [(True, True, b"<ping>"), (True, False, b""), (False, True, b"")]
)
def test_worker_keepalive_is_the_dialect_ping_in_a_stream(
    stream: bool, echoes: bool, expected: bytes
) -> None:
    """A worker Keepalive writes the dialect's keep-alive only in a stream of a writer that echoes it."""
    dispatcher = _dispatcher(Recorder(echoes_keepalive=echoes), stream=stream)
    assert dispatcher.feed(Keepalive()) == expected
    assert dispatcher.keepalive() == b"<ping>"


def test_a_kept_chat_adopts_the_conversation_id() -> None:
    """Start's and Done's conversation ids reach the writer only when the chat is kept."""
    kept = Recorder()
    _feed(
        _dispatcher(kept, options=ChatOptions(keep_chat=True)),
        [Start("c1"), Start(), Done(conversation_id="c2")],
    )
    assert kept.adopted == ["c1", "c2"]
    plain = Recorder()
    _feed(_dispatcher(plain), [Start("c1"), Done(conversation_id="c2")])
    assert plain.adopted == []


def test_error_event_renders_in_band_or_raises() -> None:
    """An ErrorEvent is the writer's in-band error in a stream (then nothing more); it raises in non-stream mode."""
    dispatcher = _dispatcher()
    assert (
        _feed(dispatcher, [ErrorEvent(kind="overloaded", message="busy"), TextDelta("x")])
        == b"<error overloaded>"
    )
    assert dispatcher.finished
    with pytest.raises(UpstreamOverloaded):
        _dispatcher(stream=False).feed(ErrorEvent(kind="overloaded", message="busy"))


def test_non_stream_writes_one_body() -> None:
    """Non-stream: pieces still reach the writer, finish never does; the body gets the whole answer and reasoning."""
    dispatcher = _dispatcher(stream=False, reply=ReplyOptions(stop_sequences=("XYZ",)))
    events: list[Event] = [ReasoningDelta("r"), TextDelta("abX"), TextDelta("Y"), Usage(3, 4), Done()]
    assert _feed(dispatcher, events) == b"<reasoning r><answer ab><answer XY>"
    assert dispatcher.body() == b"<body stop 'abXY' 'r' 3/4/1>"


def test_tool_call_events_follow_the_held_back_text() -> None:
    """A ToolCallEvent becomes the writer's tool_call, after the answer text the limiter held back for a stop."""
    dispatcher = _dispatcher(reply=ReplyOptions(stop_sequences=("XYZ",)))
    events: list[Event] = [
        TextDelta("abX"),
        ToolCallEvent(index=0, call=ToolCall(id="c1", name="f", arguments="{}")),
        ToolCallEvent(index=1, call=ToolCall(id="c2", name="g", arguments='{"a":1}')),
        Done(finish_reason="tool_calls"),
    ]
    assert _feed(dispatcher, events) == (
        b"<answer ab><answer X><call 0 c1 f {}><call 1 c2 g {\"a\":1}><finish tool_calls None '' "
        + f"{PROMPT}/1/0>".encode()
    )


def test_function_dialect_renders_through_the_dispatcher() -> None:
    """A FunctionDialect's renderer is the dispatcher around the writer its factory builds."""
    dialect = FunctionDialect(
        "test", openai.parse, lambda request, reply, ctx: Recorder(), openai.error_response
    )
    request = ChatRequest("r1", "kimi", [Message("user", "hi")])
    renderer = dialect.renderer(request, ReplyOptions(), RequestContext("r1"))
    assert isinstance(renderer, Dispatcher)
    assert (renderer.head(), renderer.content_type) == (b"<head>", "text/test")
