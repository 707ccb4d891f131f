"""The OpenAI adapter as tables: bytes in → canonical request; canonical events in → exact bytes out."""

from __future__ import annotations

import json

import pytest

from adapters.base import Parsed, Renderer, ReplyOptions, RequestContext
from adapters.openai import DIALECT, get_model, list_models
from shared.errors import BadRequest, GatewayError, ModelNotFound, RateLimited, UpstreamProtocolError
from shared.models import listed_models
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
    TextPart,
    Usage,
)

CREATED = 1_700_000_000


def ctx() -> RequestContext:
    return RequestContext("r1", now_s=CREATED)


def parse(body: dict[str, object]) -> Parsed:
    return DIALECT.parse(json.dumps(body).encode(), ctx())


def renderer_for(body: dict[str, object]) -> Renderer:
    request, reply = parse(body)
    return DIALECT.renderer(request, reply, ctx())


def render(body: dict[str, object], events: list[Event]) -> bytes:
    renderer = renderer_for(body)
    return b"".join(renderer.feed(e) for e in events) + (b"" if renderer.stream else renderer.body())


def chunk(
    delta: str, finish: str = "null", *, model: str = "kimi", usage: bool = False, cid: str = "chatcmpl-r1"
) -> bytes:
    tail = ',"usage":null}' if usage else "}"
    return (
        f'data: {{"id":"{cid}","object":"chat.completion.chunk","created":{CREATED},"model":"{model}",'
        f'"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]{tail}\n\n'
    ).encode()


ROLE = '{"role":"assistant","content":""}'
USER_HI = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}]}


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (USER_HI, ChatRequest("r1", "kimi", [Message("user", "hi")], stream=False)),
        (
            {
                "model": "kimi-search-silent",
                "messages": [{"role": "developer", "content": "be brief"}],
                "stream": True,
            },
            ChatRequest(
                "r1",
                "kimi-search-silent",
                [Message("system", "be brief")],
                stream=True,
                options=ChatOptions(search=True, silent=True),
            ),
        ),
        (
            {**USER_HI, "use_search": True, "conversation_id": "none"},
            ChatRequest(
                "r1",
                "kimi",
                [Message("user", "hi")],
                stream=False,
                options=ChatOptions(search=True, keep_chat=True),
            ),
        ),
        (
            {**USER_HI, "conversation_id": "cr1p2q3s4t5u6v7w8x9y"},
            ChatRequest(
                "r1",
                "kimi",
                [Message("user", "hi")],
                stream=False,
                options=ChatOptions(conversation_id="cr1p2q3s4t5u6v7w8x9y", keep_chat=True),
            ),
        ),
        (
            {
                "model": "kimi-k2.5-thinking",
                "temperature": 0.2,
                "max_tokens": 9,
                "n": 1,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "look"},
                            {"type": "text", "text": "here"},
                        ],
                    },
                    {"role": "assistant", "content": None},
                ],
            },
            ChatRequest(
                "r1",
                "kimi-k2.5-thinking",
                [Message("user", [TextPart("look"), TextPart("here")]), Message("assistant", "")],
                stream=False,
                options=ChatOptions(thinking=True),
            ),
        ),
    ],
)
def test_parse_builds_the_canonical_request(body: dict[str, object], expected: ChatRequest) -> None:
    """Wire bodies map to canonical requests: roles, parts, model flags, use_search, conversation_id."""
    assert parse(body).request == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ReplyOptions(stream_usage=False)),
        (
            {"stop": "END", "max_tokens": 9, "stream_options": {"include_usage": True}},
            ReplyOptions(stop_sequences=("END",), max_tokens=9),
        ),
        (
            {"stop": ["a", "b"], "max_tokens": 9, "max_completion_tokens": 3},
            ReplyOptions(stop_sequences=("a", "b"), max_tokens=3, stream_usage=False),
        ),
    ],
)
def test_parse_returns_the_reply_options(extra: dict[str, object], expected: ReplyOptions) -> None:
    """`stop`, the token budget (max_completion_tokens first) and include_usage reach the renderer typed."""
    assert parse({**USER_HI, **extra}).reply == expected


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"", None),
        (b"{not json", None),
        (b'{"model":"kimi"}', None),
        (b'{"model":"kimi","messages":[]}', "messages"),
        (b'{"model":"kimi","messages":[{"role":"user","content":5}]}', "messages[0].content"),
        (b'{"model":"kimi","messages":[{"role":"robot","content":"x"}]}', "messages[0].role"),
        (b'{"model":"kimi","n":2,"messages":[{"role":"user","content":"x"}]}', "n"),
        (b'{"model":"kimi","logprobs":true,"messages":[{"role":"user","content":"x"}]}', "logprobs"),
        (
            b'{"model":"kimi","tools":[{"type":"function"}],"messages":[{"role":"user","content":"x"}]}',
            "tools[0].function",
        ),
        (
            b'{"model":"kimi","tools":[{"type":"custom","custom":{"name":"x"}}],'
            b'"messages":[{"role":"user","content":"x"}]}',
            "tools[0].type",
        ),
        (
            b'{"model":"kimi","response_format":{"type":"json_schema"},"messages":[{"role":"user","content":"x"}]}',
            "response_format",
        ),
        (
            b'{"model":"kimi","messages":[{"role":"user","content":[{"type":"input_audio"}]}]}',
            "messages[0].content[0]",
        ),
        (
            b'{"model":"kimi","messages":[{"role":"user","content":[{"type":"text","text":"see"},'
            b'{"type":"image_url","image_url":{"url":"data:x"}}]}]}',
            "messages[0].content[1]",
        ),
        (
            b'{"model":"kimi","messages":[{"role":"user","content":[{"type":"text","text":"see"},'
            b'{"type":"file","file":{"file_id":"f1"}}]}]}',
            "messages[0].content[1]",
        ),
        (b'{"model":"kimi","messages":[{"role":"user","content":""}]}', "messages[0].content"),
        (b'{"model":"kimi","messages":[{"role":"user"}]}', "messages[0].content"),
        (
            b'{"model":"kimi","messages":[{"role":"system","content":" "},{"role":"user","content":[]}]}',
            "messages[1].content",
        ),
    ],
)
def test_parse_refuses_bad_requests_with_a_param(raw: bytes, param: str | None) -> None:
    """Malformed or unsupported bodies raise a 400 naming the offending field."""
    with pytest.raises(BadRequest) as caught:
        DIALECT.parse(raw, ctx())
    assert caught.value.status == 400
    assert caught.value.param == param


def test_parse_unknown_model_is_model_not_found() -> None:
    """An unknown model id is a 404 model_not_found on `model`."""
    with pytest.raises(ModelNotFound) as caught:
        parse({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    status, _, body = DIALECT.error_response(caught.value, "r1")
    assert status == 404
    assert json.loads(body) == {
        "error": {
            "message": "The model `gpt-4o` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


# ---------------------------------------------------------------- rendering


def test_stream_renders_role_content_finish_and_done() -> None:
    """A stream: role chunk, one chunk per delta, the finish chunk, [DONE]; Start and Usage add no bytes."""
    events: list[Event] = [Start(account_id="a1"), TextDelta("Hel"), TextDelta("lo"), Usage(3, 2), Done()]
    assert render({**USER_HI, "stream": True}, events) == (
        chunk(ROLE)
        + chunk('{"content":"Hel"}')
        + chunk('{"content":"lo"}')
        + chunk("{}", '"stop"')
        + b"data: [DONE]\n\n"
    )


def test_stream_include_usage_adds_the_usage_chunk_and_null_usage() -> None:
    """include_usage: every chunk says usage null, then a usage chunk with empty choices before [DONE]."""
    body = {**USER_HI, "stream": True, "stream_options": {"include_usage": True}}
    events: list[Event] = [TextDelta("Hi"), Usage(7, 1), Done("length")]
    usage = (
        f'data: {{"id":"chatcmpl-r1","object":"chat.completion.chunk","created":{CREATED},"model":"kimi",'
        '"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":1,"total_tokens":8}}\n\n'
    ).encode()
    assert render(body, events) == (
        chunk(ROLE, usage=True)
        + chunk('{"content":"Hi"}', usage=True)
        + chunk("{}", '"length"', usage=True)
        + usage
        + b"data: [DONE]\n\n"
    )


def test_stream_usage_is_estimated_when_the_worker_sent_none() -> None:
    """Without a Usage event the usage chunk carries the estimator's counts, never constants."""
    body = {
        "model": "kimi",
        "messages": [{"role": "user", "content": "你好世界"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    out = render(body, [TextDelta("abcdefgh"), Done()])
    usage_line = out.split(b"\n\n")[-3]
    assert json.loads(usage_line[6:])["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
    }


def test_stream_reasoning_then_citations_then_text() -> None:
    """Reasoning is reasoning_content; citations become text lines; the next text starts on a new line."""
    events: list[Event] = [ReasoningDelta("think"), Citation(1, "T", "https://t"), TextDelta("A"), Done()]
    assert render({**USER_HI, "stream": True}, events) == (
        chunk(ROLE)
        + chunk('{"reasoning_content":"think"}')
        + chunk('{"content":"【检索 1】 [T](https://t)\\n"}')
        + chunk('{"content":"\\nA"}')
        + chunk("{}", '"stop"')
        + b"data: [DONE]\n\n"
    )


def test_silent_model_drops_citations() -> None:
    """A -silent model shows no citation text."""
    events: list[Event] = [Citation(1, "T", "https://t"), TextDelta("A"), Done()]
    body = {"model": "kimi-search-silent", "messages": [{"role": "user", "content": "x"}], "stream": True}
    assert render(body, events) == (
        chunk(ROLE, model="kimi-search-silent")
        + chunk('{"content":"A"}', model="kimi-search-silent")
        + chunk("{}", '"stop"', model="kimi-search-silent")
        + b"data: [DONE]\n\n"
    )


def test_kept_conversation_answers_with_the_kimi_chat_id() -> None:
    """With conversation_id, the response id is the chat id from Start, in every chunk."""
    body = {**USER_HI, "stream": True, "conversation_id": "none"}
    events: list[Event] = [Start(conversation_id="chat-1"), TextDelta("A"), Done(conversation_id="chat-1")]
    assert render(body, events) == (
        chunk(ROLE, cid="chat-1")
        + chunk('{"content":"A"}', cid="chat-1")
        + chunk("{}", '"stop"', cid="chat-1")
        + b"data: [DONE]\n\n"
    )


def test_non_stream_body() -> None:
    """Non-stream: one chat.completion with the whole text, reasoning_content and usage."""
    events: list[Event] = [
        Start(),
        ReasoningDelta("r"),
        TextDelta("Hel"),
        TextDelta("lo"),
        Usage(5, 2),
        Done(),
    ]
    out = json.loads(
        render({"model": "kimi-k2-thinking", "messages": [{"role": "user", "content": "x"}]}, events)
    )
    assert out == {
        "id": "chatcmpl-r1",
        "object": "chat.completion",
        "created": CREATED,
        "model": "kimi-k2-thinking",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "reasoning_content": "r"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def test_keepalive_is_an_sse_comment_and_head_is_empty() -> None:
    """The keep-alive is a comment line the SDK ignores; nothing precedes the first chunk."""
    renderer = renderer_for({**USER_HI, "stream": True})
    assert renderer.head() == b""
    assert renderer.keepalive() == b": keep-alive\n\n"
    assert renderer.content_type == "text/event-stream; charset=utf-8"


def test_worker_keepalive_writes_nothing_in_a_stream() -> None:
    """A worker Keepalive adds no bytes to an OpenAI stream: only the relay's timer pings, so headers wait."""
    assert render({**USER_HI, "stream": True}, [Keepalive(), TextDelta("A"), Keepalive(), Done()]) == (
        chunk(ROLE) + chunk('{"content":"A"}') + chunk("{}", '"stop"') + b"data: [DONE]\n\n"
    )


def test_error_event_fed_renders_in_band_or_raises() -> None:
    """An ErrorEvent fed to a stream is the in-band error and finishes it; fed to a non-stream one, it raises."""
    renderer = renderer_for({**USER_HI, "stream": True})
    out = renderer.feed(TextDelta("A")) + renderer.feed(ErrorEvent(kind="protocol", message="cut"))
    error = b'{"error":{"message":"cut","type":"server_error","param":null,"code":"upstream_protocol_error"}}'
    assert out == chunk(ROLE) + chunk('{"content":"A"}') + b"data: " + error + b"\n\n"
    assert renderer.finished
    with pytest.raises(UpstreamProtocolError):
        renderer_for(USER_HI).feed(ErrorEvent(kind="protocol", message="cut"))


@pytest.mark.parametrize(
    ("exc", "status", "error"),
    [
        (
            UpstreamProtocolError("cut"),
            502,
            {"message": "cut", "type": "server_error", "param": None, "code": "upstream_protocol_error"},
        ),
        (
            RateLimited("slow down", retry_after_s=3),
            429,
            {
                "message": "slow down",
                "type": "rate_limit_error",
                "param": None,
                "code": "rate_limit_exceeded",
            },
        ),
        (
            BadRequest("bad", param="messages"),
            400,
            {"message": "bad", "type": "invalid_request_error", "param": "messages", "code": None},
        ),
        (
            GatewayError("boom"),
            500,
            {"message": "boom", "type": "server_error", "param": None, "code": "internal_error"},
        ),
    ],
)
def test_errors_in_band_and_before_the_first_byte(
    exc: GatewayError, status: int, error: dict[str, object]
) -> None:
    """Errors render as OpenAI's error object: with a status before the first byte, as a data line after."""
    renderer = renderer_for({**USER_HI, "stream": True})
    in_band = renderer.error(exc)
    assert in_band.startswith(b"data: ") and in_band.endswith(b"\n\n")
    assert json.loads(in_band[6:]) == {"error": error}
    got_status, headers, body = DIALECT.error_response(exc, "r1")
    assert (got_status, headers, json.loads(body)) == (status, {}, {"error": error})


def test_models_list_and_one_model() -> None:
    """/v1/models lists every table id; /v1/models/{id} answers one, or 404 model_not_found."""
    status, headers, body = list_models(b"", ctx())
    data = json.loads(body)
    assert (status, headers["Content-Type"], data["object"]) == (200, "application/json", "list")
    assert [m["id"] for m in data["data"]] == [s.id for s in listed_models()]
    assert data["data"][0] == {
        "id": "kimi-k2.5-instant",
        "object": "model",
        "created": 1735689600,
        "owned_by": "moonshot",
    }
    status, _, body = get_model(b"", RequestContext("r1", path_model="kimi-search-k1"))
    assert (status, json.loads(body)["id"]) == (200, "kimi-search-k1")
    with pytest.raises(ModelNotFound):
        get_model(b"", RequestContext("r1", path_model="nope"))


# ---------------------------------------------------------------- stop and max tokens at the gateway

DONE_LINE = b"data: [DONE]\n\n"


def test_stop_string_cuts_the_stream_before_done() -> None:
    """`stop` as a string: the text ends before it (a possible prefix is held back), finish_reason stop, [DONE]."""
    renderer = renderer_for({**USER_HI, "stream": True, "stop": "END"})
    out = renderer.feed(TextDelta("abcE")) + renderer.feed(TextDelta("ND and more"))
    assert renderer.finished
    assert renderer.feed(TextDelta("late")) + renderer.feed(Done()) == b""
    assert out == chunk(ROLE) + chunk('{"content":"abc"}') + chunk("{}", '"stop"') + DONE_LINE


def test_held_back_tail_is_flushed_at_done() -> None:
    """A tail that could have become a stop sequence is sent before the finish chunk when the answer ends."""
    body = {**USER_HI, "stream": True, "stop": ["XYZ", "\n\n"]}
    assert render(body, [TextDelta("abX"), TextDelta("Y"), Done()]) == (
        chunk(ROLE)
        + chunk('{"content":"ab"}')
        + chunk('{"content":"XY"}')
        + chunk("{}", '"stop"')
        + DONE_LINE
    )


def test_stop_list_in_a_non_stream_body() -> None:
    """`stop` as a list cuts the non-stream content at the earliest sequence; finish_reason stop."""
    body = {**USER_HI, "stop": ["zz", "lo"]}
    out = json.loads(render(body, [TextDelta("Hel"), TextDelta("lo world zz"), Usage(5, 9), Done()]))
    assert (out["choices"][0]["message"]["content"], out["choices"][0]["finish_reason"]) == ("Hel", "stop")
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}


def test_max_tokens_cuts_the_answer_not_the_reasoning() -> None:
    """max_tokens budgets the answer only: finish_reason length, honest usage chunk, then [DONE]."""
    body = {
        **USER_HI,
        "model": "kimi-k2-thinking",
        "stream": True,
        "max_tokens": 2,
        "stream_options": {"include_usage": True},
    }
    events: list[Event] = [ReasoningDelta("rrrr" * 10), TextDelta("abcd"), TextDelta("efghij"), Done()]
    usage = (
        f'data: {{"id":"chatcmpl-r1","object":"chat.completion.chunk","created":{CREATED},'
        '"model":"kimi-k2-thinking","choices":[],'
        '"usage":{"prompt_tokens":5,"completion_tokens":12,"total_tokens":17}}\n\n'
    ).encode()
    model = "kimi-k2-thinking"
    assert render(body, events) == (
        chunk(ROLE, model=model, usage=True)
        + chunk('{"reasoning_content":"' + "rrrr" * 10 + '"}', model=model, usage=True)
        + chunk('{"content":"abcd"}', model=model, usage=True)
        + chunk('{"content":"efgh"}', model=model, usage=True)
        + chunk("{}", '"length"', model=model, usage=True)
        + usage
        + DONE_LINE
    )


@pytest.mark.parametrize(
    ("limits", "content"),
    [
        ({"max_completion_tokens": 1}, "abcd"),
        ({"max_tokens": 1, "max_completion_tokens": 3}, "abcdefghijkl"),
        ({"max_tokens": 2}, "abcdefgh"),
    ],
)
def test_max_completion_tokens_wins_over_max_tokens(limits: dict[str, int], content: str) -> None:
    """max_completion_tokens is the budget when given, else max_tokens; a cut body says length."""
    out = json.loads(render({**USER_HI, **limits}, [TextDelta("abcdefghijklmnop"), Done()]))
    assert (out["choices"][0]["message"]["content"], out["choices"][0]["finish_reason"]) == (
        content,
        "length",
    )


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_token_budget_below_one_is_refused(field: str) -> None:
    """A budget of 0 is a 400 naming the field."""
    with pytest.raises(BadRequest) as caught:
        parse({**USER_HI, field: 0})
    assert caught.value.param == field
