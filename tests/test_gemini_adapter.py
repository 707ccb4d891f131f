"""Table tests of adapters/gemini.py: request bytes in, canonical request out; events in, exact bytes out."""

from __future__ import annotations

import json
from typing import Any

import pytest
from google.genai import types

from adapters import gemini
from adapters.base import Renderer, ReplyOptions, RequestContext
from shared.errors import (
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    ModelNotFound,
    RateLimited,
    UpstreamOverloaded,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from shared.schema import (
    Citation,
    Done,
    ErrorEvent,
    Event,
    Keepalive,
    Message,
    ReasoningDelta,
    Start,
    TextDelta,
    Usage,
)


def _body(**fields: Any) -> bytes:
    base: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}
    base.update(fields)
    return json.dumps(base).encode()


def _ctx(
    model: str = "kimi-k2.5-thinking", query: dict[str, str] | None = None, *, stream: bool = False
) -> RequestContext:
    """The context of a `:generateContent` route, or of `:streamGenerateContent` with `stream`."""
    return RequestContext(request_id="req1", path_model=model, query=query or {}, stream=stream)


def _renderer(body: bytes, ctx: RequestContext) -> Renderer:
    request, reply = gemini.DIALECT.parse(body, ctx)
    return gemini.DIALECT.renderer(request, reply, ctx)


def _render(body: bytes, events: list[Event], *, stream: bool = True, alt: str | None = "sse") -> bytes:
    renderer = _renderer(body, _ctx(query={"alt": alt} if alt else {}, stream=stream))
    out = renderer.head() if renderer.stream else b""
    for event in events:
        out += renderer.feed(event)
    return out if renderer.stream else renderer.body()


def _response(parts: str, finish: str | None = None, usage: str | None = None) -> bytes:
    candidate = '{"content":{"parts":[' + parts + '],"role":"model"},"index":0'
    candidate += f',"finishReason":"{finish}"}}' if finish else "}"
    out = '{"candidates":[' + candidate + "]"
    out += f',"usageMetadata":{usage}' if usage else ""
    return (out + ',"modelVersion":"kimi-k2.5-thinking","responseId":"req1"}').encode()


# ---------------------------------------------------------------- parse


def test_parse_contents_roles_and_system_instruction() -> None:
    """Roles user/model map to user/assistant, systemInstruction leads, thoughts sent back are dropped."""
    body = _body(
        contents=[
            {"role": "user", "parts": [{"text": "Hi"}, {"text": " there"}]},
            {"role": "model", "parts": [{"text": "musing", "thought": True}, {"text": "Hello"}]},
            {"parts": [{"text": "Again"}]},
        ],
        systemInstruction={"parts": [{"text": "Be brief."}]},
        generationConfig={"temperature": 0.3, "topK": 4},
    )
    request = gemini.DIALECT.parse(body, _ctx()).request
    assert request.messages == [
        Message(role="system", content="Be brief."),
        Message(role="user", content="Hi there"),
        Message(role="assistant", content="Hello"),
        Message(role="user", content="Again"),
    ]
    assert (request.request_id, request.model, request.stream, request.dialect) == (
        "req1",
        "kimi-k2.5-thinking",
        False,
        "gemini",
    )
    assert request.options.thinking is True


def test_parse_snake_case_fields_and_models_prefix() -> None:
    """snake_case proto names work like camelCase, and a `models/` prefix in the path is accepted."""
    body = _body(
        system_instruction={"parts": [{"text": "S"}]},
        generation_config={
            "max_output_tokens": 9,
            "stop_sequences": ["END"],
            "thinking_config": {"include_thoughts": True},
        },
    )
    request, reply = gemini.DIALECT.parse(body, _ctx(model="models/kimi-search", stream=True))
    assert request.model == "kimi-search"
    assert request.stream is True
    assert request.options.search is True
    assert request.messages[0] == Message(role="system", content="S")
    assert reply == ReplyOptions(stop_sequences=("END",), max_tokens=9, show_reasoning=True)


@pytest.mark.parametrize(
    ("model", "body", "error", "message"),
    [
        ("gemini-2.5-pro", _body(), ModelNotFound, "models/gemini-2.5-pro is not found."),
        (
            "kimi",
            _body(contents=[]),
            BadRequest,
            "* GenerateContentRequest.contents: contents is not specified",
        ),
        (
            "kimi",
            _body(
                contents=[
                    {"role": "user", "parts": [{"inlineData": {"mimeType": "audio/wav", "data": "AA=="}}]}
                ]
            ),
            BadRequest,
            "contents[0].parts[0]: audio/wav is not supported; Kimi reads images and documents only",
        ),
        (
            "kimi",
            _body(contents=[{"role": "user", "parts": [{"file_data": {"file_uri": "gs://x"}}]}]),
            BadRequest,
            "* contents[0].parts[0].fileData.fileUri: only http(s) URLs are fetched (the gateway has no Files "
            "API)",
        ),
        (
            "kimi",
            _body(contents=[{"role": "tool", "parts": []}]),
            BadRequest,
            "* contents[0].role: unknown role `tool`",
        ),
        (
            "kimi",
            _body(generationConfig={"candidateCount": 2}),
            BadRequest,
            "Kimi returns one candidate; candidateCount must be 1.",
        ),
        ("kimi", b"[1", BadRequest, "Invalid JSON payload received. Input data was truncated"),
    ],
)
def test_parse_refuses_with_clear_errors(
    model: str, body: bytes, error: type[GatewayError], message: str
) -> None:
    """Unknown models, empty contents, media parts and bad JSON are refused with a precise message."""
    with pytest.raises(error) as info:
        gemini.DIALECT.parse(body, _ctx(model=model))
    assert type(info.value) is error
    assert info.value.message == message


@pytest.mark.parametrize(
    ("contents", "param"),
    [
        ([{"role": "user", "parts": []}], "contents[0].parts"),
        ([{"role": "user"}], "contents[0].parts"),
        ([{"role": "user", "parts": [{"text": "Hi"}]}, {"role": "model", "parts": [{"text": ""}]}], None),
    ],
)
def test_parse_refuses_a_request_without_text(contents: list[Any], param: str | None) -> None:
    """A request with no text anywhere is a 400 naming the last content's parts; an empty turn is fine."""
    if param is None:
        request = gemini.DIALECT.parse(_body(contents=contents), _ctx()).request
        assert request.messages[-1] == Message("assistant", "")
        return
    with pytest.raises(BadRequest) as info:
        gemini.DIALECT.parse(_body(contents=contents), _ctx())
    assert (info.value.status, info.value.param) == (400, param)
    assert info.value.message == f"* GenerateContentRequest.{param}: contents hold no text"


# ---------------------------------------------------------------- local routes


def test_count_tokens_with_contents_or_generate_content_request() -> None:
    """countTokens accepts `contents` or `generateContentRequest` and answers `{"totalTokens": n}`."""
    contents = [{"role": "user", "parts": [{"text": "Hello there"}]}]
    plain = gemini.count_tokens(json.dumps({"contents": contents}).encode(), _ctx())
    wrapped = gemini.count_tokens(
        json.dumps({"generateContentRequest": {"model": "models/kimi", "contents": contents}}).encode(),
        _ctx(),
    )
    assert plain == wrapped == (200, {"Content-Type": "application/json"}, b'{"totalTokens":7}')


def test_count_tokens_refuses_both_forms_and_unknown_models() -> None:
    """Both request forms at once is a 400; an unknown model is a 404."""
    both = json.dumps({"contents": [], "generateContentRequest": {"contents": []}}).encode()
    with pytest.raises(BadRequest):
        gemini.count_tokens(both, _ctx())
    with pytest.raises(ModelNotFound):
        gemini.count_tokens(_body(), _ctx(model="nope"))


def test_model_list_and_get() -> None:
    """The model list names every table model `models/<id>`; get answers one, or 404."""
    status, _, body = gemini.list_models(b"", _ctx())
    models = json.loads(body)["models"]
    assert status == 200
    assert models[0] == {
        "name": "models/kimi-k2.5-instant",
        "displayName": "kimi-k2.5-instant",
        "description": "Kimi web chat (Connect lane) through the gateway.",
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
        "thinking": False,
    }
    assert "models/kimi-search-silent" in [m["name"] for m in models]
    _, _, one = gemini.get_model(b"", _ctx(model="models/kimi-k2.5-thinking"))
    assert json.loads(one)["name"] == "models/kimi-k2.5-thinking"
    with pytest.raises(ModelNotFound):
        gemini.get_model(b"", _ctx(model="gemini-pro"))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("exc", "status", "rpc_status"),
    [
        (BadRequest("bad"), 400, "INVALID_ARGUMENT"),
        (AuthenticationFailed("who"), 401, "UNAUTHENTICATED"),
        (ModelNotFound("models/x is not found."), 404, "NOT_FOUND"),
        (UpstreamOverloaded("busy"), 503, "UNAVAILABLE"),
        (UpstreamProtocolError("broken"), 502, "INTERNAL"),
        (UpstreamTimeout("late"), 504, "DEADLINE_EXCEEDED"),
        (GatewayError("oops"), 500, "INTERNAL"),
    ],
)
def test_error_response_google_rpc_status(exc: GatewayError, status: int, rpc_status: str) -> None:
    """Each error kind answers its HTTP status and the google.rpc.Status shape."""
    got, headers, body = gemini.DIALECT.error_response(exc, "req1")
    assert (got, headers) == (status, {})
    expected = {"error": {"code": status, "message": exc.message, "status": rpc_status}}
    assert body == json.dumps(expected, separators=(",", ":")).encode()


def test_rate_limit_error_carries_retry_info() -> None:
    """A 429 says RESOURCE_EXHAUSTED with a RetryInfo detail when the delay is known."""
    _, _, body = gemini.DIALECT.error_response(RateLimited("slow down", retry_after_s=30.4), "r")
    assert body == (
        b'{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED","details":'
        b'[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"30s"}]}}'
    )


# ---------------------------------------------------------------- rendering


def test_sse_stream_exact_bytes_with_thoughts() -> None:
    """alt=sse: one data frame per chunk, thought parts when includeThoughts, usage on the last, no [DONE]."""
    body = _body(generationConfig={"thinkingConfig": {"includeThoughts": True}})
    out = _render(
        body,
        [
            Start(),
            ReasoningDelta("Hm"),
            Keepalive(),
            TextDelta("Hello"),
            TextDelta(" world"),
            Usage(prompt_tokens=5, completion_tokens=4),
            Done(),
        ],
    )
    usage = '{"promptTokenCount":5,"candidatesTokenCount":3,"totalTokenCount":9,"thoughtsTokenCount":1}'
    assert out == b"".join(
        [
            b"data: " + _response('{"text":"Hm","thought":true}') + b"\n\n",
            b"\n",
            b"data: " + _response('{"text":"Hello"}') + b"\n\n",
            b"data: " + _response('{"text":" world"}') + b"\n\n",
            b"data: " + _response('{"text":""}', "STOP", usage) + b"\n\n",
        ]
    )


def test_thoughts_hidden_without_include_thoughts() -> None:
    """Without includeThoughts reasoning is not sent, yet counted in thoughtsTokenCount."""
    out = _render(_body(), [ReasoningDelta("Hm"), TextDelta("A"), Done()])
    assert b'thought"' not in out
    assert b'"thoughtsTokenCount":1' in out


def test_json_array_stream_exact_bytes() -> None:
    """Without alt=sse the chunks form one JSON array written progressively; a newline is the keep-alive."""
    out = _render(
        _body(), [Keepalive(), TextDelta("Hi"), Usage(prompt_tokens=5, completion_tokens=1), Done()], alt=None
    )
    usage = '{"promptTokenCount":5,"candidatesTokenCount":1,"totalTokenCount":6}'
    assert (
        out == b"[\n" + _response('{"text":"Hi"}') + b",\r\n" + _response('{"text":""}', "STOP", usage) + b"]"
    )
    assert [c["candidates"][0]["content"]["parts"][0]["text"] for c in json.loads(out)] == ["Hi", ""]


@pytest.mark.parametrize(
    ("config", "events", "text", "finish"),
    [
        ({"stopSequences": ["END"]}, [TextDelta("abc E"), TextDelta("ND more")], "abc ", "STOP"),
        ({"maxOutputTokens": 1}, [TextDelta("abcdefgh")], "abcd", "MAX_TOKENS"),
        ({}, [TextDelta("x"), Done(finish_reason="length")], "", "MAX_TOKENS"),
        ({}, [TextDelta("x"), Done(finish_reason="content_filter")], "", "SAFETY"),
    ],
)
def test_stream_cuts_and_finish_reasons(
    config: dict[str, Any], events: list[Event], text: str, finish: str
) -> None:
    """stopSequences and maxOutputTokens cut at the gateway; finish reasons map to Gemini's names."""
    out = _render(_body(generationConfig=config), events)
    last = json.loads(out.split(b"data: ")[-1])
    assert last["candidates"][0]["finishReason"] == finish
    assert "".join(
        json.loads(f)["candidates"][0]["content"]["parts"][0]["text"] for f in out.split(b"data: ")[1:]
    ) == (text or "x")


def test_citations_render_as_text_unless_silent() -> None:
    """A citation becomes a text line, the next text starting on a new line; -silent drops it."""
    events: list[Event] = [Citation(index=1, title="T", url="https://u"), TextDelta("A"), Done()]
    renderer = _renderer(_body(), _ctx(model="kimi-search", query={"alt": "sse"}, stream=True))
    loud = b"".join(renderer.feed(e) for e in events)
    texts = [json.loads(f)["candidates"][0]["content"]["parts"][0]["text"] for f in loud.split(b"data: ")[1:]]
    assert texts == ["【检索 1】 [T](https://u)\n", "\nA", ""]
    renderer = _renderer(_body(), _ctx(model="kimi-search-silent", query={"alt": "sse"}, stream=True))
    assert "检索".encode() not in b"".join(renderer.feed(e) for e in events)


@pytest.mark.parametrize(
    ("alt", "before", "expected"),
    [
        ("sse", [TextDelta("Hi")], b'data: {"error":{"code":502,"message":"cut","status":"INTERNAL"}}\n\n'),
        (None, [TextDelta("Hi")], b',{"error":{"code":502,"message":"cut","status":"INTERNAL"}}]'),
        (None, [], b'{"error":{"code":502,"message":"cut","status":"INTERNAL"}}]'),
    ],
)
def test_in_band_error(alt: str | None, before: list[Event], expected: bytes) -> None:
    """After the first byte an error is a frame (SSE) or the array's last element; the renderer finishes."""
    renderer = _renderer(_body(), _ctx(query={"alt": alt} if alt else {}, stream=True))
    renderer.head()
    for event in before:
        renderer.feed(event)
    assert renderer.error(UpstreamProtocolError("cut")) == expected
    assert renderer.finished


def test_non_stream_body_parses_with_the_sdk_types() -> None:
    """generateContent answers one response that google-genai reads: text, thoughts, finish reason, usage."""
    body = _body(generationConfig={"thinkingConfig": {"includeThoughts": True}})
    out = _render(
        body,
        [ReasoningDelta("Hm"), TextDelta("Hello"), Usage(prompt_tokens=5, completion_tokens=3), Done()],
        stream=False,
    )
    usage = '{"promptTokenCount":5,"candidatesTokenCount":2,"totalTokenCount":8,"thoughtsTokenCount":1}'
    assert out == _response('{"text":"Hm","thought":true},{"text":"Hello"}', "STOP", usage)
    response = types.GenerateContentResponse._from_response(response=json.loads(out), kwargs={})
    assert response.text == "Hello"
    assert response.candidates is not None
    assert response.candidates[0].finish_reason == types.FinishReason.STOP
    assert response.usage_metadata is not None
    assert response.usage_metadata.thoughts_token_count == 1


def test_non_stream_error_event_raises() -> None:
    """An ErrorEvent fed to a non-stream renderer raises, so the error gets its real HTTP status."""
    renderer = _renderer(_body(), _ctx())
    assert renderer.content_type == "application/json"
    with pytest.raises(UpstreamOverloaded):
        renderer.feed(ErrorEvent(kind="overloaded", message="busy"))
