"""Table tests of the official API's request body and error mapping (pure functions, no server)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from shared.errors import (
    BadRequest,
    ContentFiltered,
    GatewayError,
    ModelNotFound,
    ServiceUnavailable,
    UpstreamAuthError,
    UpstreamError,
    UpstreamOverloaded,
    UpstreamQuotaExhausted,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from shared.models import resolve_model
from shared.schema import (
    AttachmentPart,
    ChatRequest,
    Message,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolSpec,
)
from upstream_worker.moonshot.call import api_root
from upstream_worker.moonshot.errors import http_error, redact
from upstream_worker.moonshot.request import build_request, encode_request

WEATHER = ToolSpec(name="get_weather", description="Weather", parameters='{"type":"object"}')
PNG = b"\x89PNG\r\n\x1a\n\x00"
IMAGE = AttachmentPart(
    sha256=hashlib.sha256(PNG).hexdigest(),
    mime="image/png",
    name="a.png",
    size=len(PNG),
    kind="image",
    source="inline",
)
PDF = AttachmentPart(sha256="0" * 64, mime="application/pdf", name="a.pdf", size=4, kind="file", source="url")


def body_for(
    model: str, messages: list[Message], images: dict[str, bytes] | None = None, **fields: Any
) -> dict[str, Any]:
    spec = resolve_model(model)
    assert spec is not None
    request = ChatRequest(request_id="r", model=model, messages=messages, **fields)
    decoded: dict[str, Any] = json.loads(encode_request(build_request(request, spec, images)))
    return decoded


HELLO = [Message(role="user", content="hello")]


@pytest.mark.parametrize(
    ("model", "stream", "expected"),
    [
        (
            "kimi-k3-max",
            True,
            {
                "model": "kimi-k3",
                "messages": [{"role": "user", "content": "hello"}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "reasoning_effort": "max",
            },
        ),
        (
            "kimi-k2.6",
            False,
            {
                "model": "kimi-k2.6",
                "messages": [{"role": "user", "content": "hello"}],
                "thinking": {"type": "enabled"},
            },
        ),
        (
            "kimi-k2.6-instant",
            False,
            {
                "model": "kimi-k2.6",
                "messages": [{"role": "user", "content": "hello"}],
                "thinking": {"type": "disabled"},
            },
        ),
        (
            "kimi-k2.7-code",
            False,
            {"model": "kimi-k2.7-code", "messages": [{"role": "user", "content": "hello"}]},
        ),
        (
            "moonshot-v1-8k",
            False,
            {"model": "moonshot-v1-8k", "messages": [{"role": "user", "content": "hello"}]},
        ),
        (
            "kimi-k2.5-instant",
            False,
            {
                "model": "kimi-k2.5",
                "messages": [{"role": "user", "content": "hello"}],
                "thinking": {"type": "disabled"},
            },
        ),
    ],
)
def test_model_options(model: str, stream: bool, expected: dict[str, Any]) -> None:
    """Each public id sends the platform's model id, thinking only where it is taken, K3's effort, no sampling."""
    assert body_for(model, HELLO, stream=stream) == expected


def test_history_with_native_tool_round_on_a_thinking_model() -> None:
    """System, assistant tool_calls (with the least reasoning_content) and tool results keep their native shape."""
    call = ToolCall(id="get_weather:0", name="get_weather", arguments='{"city":"Paris"}')
    messages = [
        Message(role="system", content="be brief"),
        Message(role="user", content=[TextPart("weather?")]),
        Message(role="assistant", content="", tool_calls=[call]),
        Message(role="tool", content='{"temp_c":18}', tool_call_id="get_weather:0", name="get_weather"),
    ]
    body = body_for("kimi-k2.6", messages, stream=False, tools=[WEATHER])
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": " ",
            "tool_calls": [
                {
                    "id": "get_weather:0",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"temp_c":18}', "tool_call_id": "get_weather:0", "name": "get_weather"},
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}, "description": "Weather"},
        }
    ]
    assert "tool_choice" not in body


def test_no_reasoning_content_for_models_that_do_not_think() -> None:
    """A moonshot-v1 model gets the assistant tool-call turn without reasoning_content."""
    call = ToolCall(id="a:0", name="get_weather", arguments="")
    messages = [Message(role="user", content="x"), Message(role="assistant", content="", tool_calls=[call])]
    assistant = body_for("moonshot-v1-8k", messages, tools=[WEATHER])["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "a:0", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
        ],
    }


@pytest.mark.parametrize(
    ("model", "choice", "sent", "nudged"),
    [
        ("kimi-k3", ToolChoice(mode="required"), "required", False),
        ("kimi-k2.6", ToolChoice(mode="required"), None, True),
        ("kimi-k2.6", ToolChoice(mode="none"), "none", False),
        (
            "kimi-k2.6",
            ToolChoice(mode="named", name="get_weather"),
            {"type": "function", "function": {"name": "get_weather"}},
            False,
        ),
        ("kimi-k2.6", ToolChoice(mode="auto"), None, False),
    ],
)
def test_tool_choice(model: str, choice: ToolChoice, sent: object, nudged: bool) -> None:
    """`required` only where the model takes it, else auto plus the documented nudge; none and named as is."""
    body = body_for(model, HELLO, tools=[WEATHER], tool_choice=choice)
    assert body.get("tool_choice") == sent
    last = body["messages"][-1]
    assert (
        last == {"role": "user", "content": "Please select a tool to handle the current issue."}
    ) is nudged


def test_allowed_tools_filter_the_declared_ones() -> None:
    """Gemini's allowedFunctionNames keep only those tools."""
    other = ToolSpec(name="get_time")
    body = body_for(
        "kimi-k3",
        HELLO,
        tools=[WEATHER, other],
        tool_choice=ToolChoice(mode="required", allowed=["get_time"]),
    )
    assert [t["function"]["name"] for t in body["tools"]] == ["get_time"]


def test_images_on_a_vision_model() -> None:
    """An image attachment becomes a base64 data URL of its bytes, after the text part, on a vision model."""
    content = [TextPart("what is this?"), IMAGE]
    body = body_for("kimi-k3", [Message(role="user", content=content)], {IMAGE.sha256: PNG})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgoA"}},
    ]


@pytest.mark.parametrize(
    ("model", "part", "param_text"),
    [
        ("moonshot-v1-8k", IMAGE, "takes no images"),
        ("kimi-k3", PDF, "documents"),
    ],
)
def test_parts_refused_before_any_call(model: str, part: AttachmentPart, param_text: str) -> None:
    """Images on a text-only model and documents are refused with 400 before any call."""
    with pytest.raises(BadRequest, match=param_text):
        body_for(model, [Message(role="user", content=[TextPart("x"), part])], {IMAGE.sha256: PNG})


def test_image_bytes_gone() -> None:
    """An image whose bytes the call does not hold is a 503 asking to send it again, not a silent text-only turn."""
    with pytest.raises(ServiceUnavailable, match="send it again"):
        body_for("kimi-k3", [Message(role="user", content=[TextPart("x"), IMAGE])], {})


def test_web_only_model_is_refused() -> None:
    """A model no key serves is refused with 400 naming the model, never sent."""
    with pytest.raises(BadRequest, match="kimi-k3-swarm"):
        body_for("kimi-k3-swarm", HELLO)


@pytest.mark.parametrize(
    ("base", "root"),
    [
        ("https://api.moonshot.ai", "https://api.moonshot.ai/v1"),
        ("https://api.moonshot.cn/", "https://api.moonshot.cn/v1"),
        ("https://api.moonshot.ai/v1/", "https://api.moonshot.ai/v1"),
        ("http://127.0.0.1:9/moonshot", "http://127.0.0.1:9/moonshot/v1"),
    ],
)
def test_api_root(base: str, root: str) -> None:
    """Any spelling of a key's base URL reaches `<origin>/v1`."""
    assert api_root(base) == root


# ---------------------------------------------------------------- errors


def _error(error_type: str, message: str = "m") -> bytes:
    return json.dumps({"error": {"type": error_type, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "retry_after", "exc", "retry_after_s"),
    [
        (401, _error("incorrect_api_key_error"), None, UpstreamAuthError, None),
        (401, _error("invalid_authentication_error"), None, UpstreamAuthError, None),
        (
            400,
            _error("invalid_request_error", "Invalid request: Input token length too long"),
            None,
            BadRequest,
            None,
        ),
        (400, _error("content_filter"), None, ContentFiltered, None),
        (403, _error("permission_denied_error"), None, UpstreamError, None),
        (
            404,
            _error("resource_not_found_error", "Not found the model kimi-k3 or Permission denied"),
            None,
            ModelNotFound,
            None,
        ),
        (
            429,
            _error("rate_limit_reached_error", "max RPM: 3, please try again after 4 seconds"),
            None,
            UpstreamRateLimited,
            4.0,
        ),
        (
            429,
            _error("rate_limit_reached_error", "please try again after 4 seconds"),
            "9",
            UpstreamRateLimited,
            9.0,
        ),
        (429, _error("engine_overloaded_error"), None, UpstreamOverloaded, None),
        (429, _error("exceeded_current_quota_error"), None, UpstreamQuotaExhausted, None),
        (403, _error("exceeded_current_quota_error"), None, UpstreamQuotaExhausted, None),
        (500, _error("server_error"), None, UpstreamUnavailable, None),
        (500, _error("unexpected_output"), None, UpstreamUnavailable, None),
        (502, b"<html>bad gateway</html>", None, UpstreamUnavailable, None),
        (429, b"", "3", UpstreamRateLimited, 3.0),
        (400, b"{}", None, BadRequest, None),
        (418, b"{}", None, UpstreamError, None),
        (
            401,
            b'{"error":{"type":"invalid_request_error","code":"invalid_api_key","message":"x"}}',
            None,
            UpstreamAuthError,
            None,
        ),
    ],
)
def test_error_mapping(
    status: int, body: bytes, retry_after: str | None, exc: type[GatewayError], retry_after_s: float | None
) -> None:
    """Each platform error maps by type first, then status, with the wait from Retry-After or the message."""
    error = http_error(status, body, retry_after)
    assert type(error) is exc
    assert error.retry_after_s == retry_after_s


def test_quota_message_says_quota() -> None:
    """A used-up balance is UpstreamQuotaExhausted: a 429 of kind rate_limited whose message says quota."""
    error = http_error(429, _error("exceeded_current_quota_error", "Account balance is insufficient"), None)
    assert "quota" in error.message.lower() and error.kind == "rate_limited" and error.status == 429


def test_ids_and_keys_are_redacted() -> None:
    """Organisation, access-key and API-key ids never reach an error message."""
    message = "Your account org-abc123<ak-def456> request reached max RPM with key sk-Secret_Key-9"
    assert redact(message) == "Your account org-…<ak-…> request reached max RPM with key sk-…"
    error = http_error(429, _error("rate_limit_reached_error", message), None)
    assert "abc123" not in error.message and "def456" not in error.message and "Secret" not in error.message
