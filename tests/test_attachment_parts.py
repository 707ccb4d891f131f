"""Each dialect's image and document parts as tables: body in → the `AttachmentInput`s and text left in place."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from adapters import anthropic, gemini, openai
from adapters.base import Dialect, RequestContext
from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest
from shared.schema import Message, TextPart

PNG = b"\x89PNG\r\n\x1a\nfake"
B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{B64}"
URL = "https://files.example/cat.png"


def _parse(dialect: Dialect, body: dict[str, Any]) -> tuple[list[Message], list[AttachmentInput]]:
    ctx = RequestContext("r1", path_model="kimi", stream=False)
    request, _ = dialect.parse(json.dumps(body).encode(), ctx)
    return request.messages, ctx.attachments


_T = {"type": "text", "text": "what is it?"}


def _openai(part: dict[str, Any]) -> dict[str, Any]:
    return {"model": "kimi", "messages": [{"role": "user", "content": [part, _T]}]}


def _at(param: str, index: int, position: int, **fields: Any) -> AttachmentInput:
    return AttachmentInput(param=param, message_index=index, part_index=position, **fields)


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        (
            {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "low"}},
            _at("messages[0].content[0]", 0, 0, kind="image", data=PNG, mime="image/png"),
        ),
        (
            {"type": "image_url", "image_url": {"url": URL}},
            _at("messages[0].content[0]", 0, 0, kind="image", url=URL),
        ),
        (
            {
                "type": "file",
                "file": {"file_data": f"data:application/pdf;base64,{B64}", "filename": "a.pdf"},
            },
            _at("messages[0].content[0]", 0, 0, data=PNG, mime="application/pdf", name="a.pdf"),
        ),
        ({"type": "file", "file": {"file_data": B64}}, _at("messages[0].content[0]", 0, 0, data=PNG)),
        ({"type": "file", "file_url": {"url": URL}}, _at("messages[0].content[0]", 0, 0, url=URL)),
    ],
)
def test_openai_parts_become_inputs(part: dict[str, Any], expected: AttachmentInput) -> None:
    """OpenAI `image_url`, `file.file_data` and kimi-free-api's `file_url` parts leave the content as inputs."""
    messages, inputs = _parse(openai.DIALECT, _openai(part))
    assert inputs == [expected]
    assert messages == [Message(role="user", content=[TextPart("what is it?")])]


def test_openai_attachments_of_every_message_count() -> None:
    """Parts of earlier messages are taken too, each with its own message index and position."""
    body = {
        "model": "kimi",
        "messages": [
            {"role": "user", "content": [_T, {"type": "image_url", "image_url": {"url": URL}}]},
            {"role": "assistant", "content": "a cat"},
            {"role": "user", "content": [{"type": "image_url", "image_url": URL}, _T]},
        ],
    }
    _, inputs = _parse(openai.DIALECT, body)
    assert inputs == [
        _at("messages[0].content[1]", 0, 1, kind="image", url=URL),
        _at("messages[2].content[0]", 2, 0, kind="image", url=URL),
    ]


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ({"type": "input_audio", "input_audio": {"data": B64, "format": "wav"}}, "Unsupported content part of type `input_audio`."),
        ({"type": "file", "file": {"file_id": "file-1"}}, "messages[0].content[0]: file ids are not supported (the gateway has no Files API); send the bytes or a URL"),
        ({"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}, "messages[0].content[0]: only http(s) and data: URLs are accepted"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, "messages[0].content[0]: the attachment's data is not valid base64"),
        ({"type": "file", "file": {"file_data": "data:audio/wav;base64,AAAA"}}, "messages[0].content[0]: audio/wav is not supported; Kimi reads images and documents only"),
    ],
)  # fmt: skip
def test_openai_refusals_name_the_part(part: dict[str, Any], message: str) -> None:
    """Audio, file ids, foreign URL schemes and bad base64 are 400s naming the part."""
    with pytest.raises(BadRequest) as caught:
        _parse(openai.DIALECT, _openai(part))
    assert (caught.value.message, caught.value.param) == (message, "messages[0].content[0]")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}},
            _at("messages.0.content.1", 1, 1, kind="image", data=PNG, mime="image/png"),
        ),
        ({"type": "image", "source": {"type": "url", "url": URL}}, _at("messages.0.content.1", 1, 1, kind="image", url=URL)),
        (
            {"type": "document", "title": "r.pdf", "source": {"type": "base64", "media_type": "application/pdf", "data": B64}},
            _at("messages.0.content.1", 1, 1, data=PNG, mime="application/pdf", name="r.pdf"),
        ),
        ({"type": "document", "source": {"type": "url", "url": URL}}, _at("messages.0.content.1", 1, 1, url=URL)),
        (
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}},
            _at("messages.0.content.1", 1, 1, data=b"notes", mime="text/plain"),
        ),
        (
            {"type": "document", "source": {"type": "content", "content": "notes"}},
            _at("messages.0.content.1", 1, 1, data=b"notes", mime="text/plain"),
        ),
    ],
)  # fmt: skip
def test_anthropic_blocks_become_inputs(block: dict[str, Any], expected: AttachmentInput) -> None:
    """Anthropic image and document blocks (base64, URL, text sources) become inputs; the system shifts the index."""
    body = {
        "model": "kimi",
        "max_tokens": 9,
        "system": "S",
        "messages": [{"role": "user", "content": [_T, block]}],
    }
    messages, inputs = _parse(anthropic.DIALECT, body)
    assert inputs == [expected]
    assert messages[1] == Message(role="user", content=[TextPart("what is it?")])


@pytest.mark.parametrize(
    ("part", "expected"),
    [
        ({"inlineData": {"mimeType": "image/png", "data": B64}}, _at("contents[0].parts[1]", 0, 1, data=PNG, mime="image/png")),
        ({"inline_data": {"mime_type": "application/pdf", "data": B64}}, _at("contents[0].parts[1]", 0, 1, data=PNG, mime="application/pdf")),
        ({"fileData": {"fileUri": URL, "mimeType": "image/png"}}, _at("contents[0].parts[1]", 0, 1, url=URL, mime="image/png")),
        ({"file_data": {"file_uri": URL}}, _at("contents[0].parts[1]", 0, 1, url=URL)),
        ({"inlineData": {"mimeType": "application/pdf", "data": B64, "displayName": "r.pdf"}}, _at("contents[0].parts[1]", 0, 1, data=PNG, mime="application/pdf", name="r.pdf")),
    ],
)  # fmt: skip
def test_gemini_parts_become_inputs(part: dict[str, Any], expected: AttachmentInput) -> None:
    """Gemini blobs and http(s) file URIs, in both casings, become inputs; the text stays a part of its own."""
    body = {"contents": [{"role": "user", "parts": [{"text": "what is it?"}, part]}]}
    messages, inputs = _parse(gemini.DIALECT, body)
    assert inputs == [expected]
    assert messages == [Message(role="user", content=[TextPart("what is it?")])]


def test_attachments_alone_are_a_question() -> None:
    """A request whose only content is an image parses (the worker asks Kimi about the file); one with neither
    text nor attachments is refused for holding nothing to answer."""
    image = {"type": "image_url", "image_url": URL}
    messages, inputs = _parse(
        openai.DIALECT, {"model": "kimi", "messages": [{"role": "user", "content": [image]}]}
    )
    assert len(inputs) == 1 and messages == [Message(role="user", content=[])]
    with pytest.raises(BadRequest) as caught:
        _parse(
            openai.DIALECT,
            {"model": "kimi", "messages": [{"role": "user", "content": [{"type": "text", "text": " "}]}]},
        )
    assert (caught.value.message, caught.value.param) == (
        "The messages hold no text; there is nothing to answer.",
        "messages[0].content",
    )


def test_gemini_media_in_the_system_instruction_is_refused() -> None:
    """Media parts of `systemInstruction` are a 400 rather than dropped: attachments belong in `contents`."""
    blob = {"inlineData": {"mimeType": "image/png", "data": B64}}
    body = {"systemInstruction": {"parts": [blob]}, "contents": [{"role": "user", "parts": [{"text": "?"}]}]}
    with pytest.raises(BadRequest) as caught:
        _parse(gemini.DIALECT, body)
    assert (caught.value.message, caught.value.param) == (
        "* system_instruction: images and documents belong in `contents`",
        "system_instruction",
    )


def test_anthropic_attachment_beside_a_tool_result_goes_to_the_users_own_message() -> None:
    """A user message that returns a tool result and adds an image: the image sits in the message after the
    `tool` message the result became."""
    image = {"type": "image", "source": {"type": "url", "url": URL}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "12:00"}
    body = {
        "model": "kimi",
        "max_tokens": 9,
        "messages": [
            {"role": "user", "content": "time?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "clock", "input": {}}],
            },
            {"role": "user", "content": [result, image, _T]},
        ],
    }
    messages, inputs = _parse(anthropic.DIALECT, body)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user"]
    assert inputs == [_at("messages.2.content.1", 3, 0, kind="image", url=URL)]
    assert messages[3].content == [TextPart("what is it?")]


def test_anthropic_images_in_a_tool_result_become_inputs_of_the_tool_message() -> None:
    """A tool result's image (Claude Code's Read of a PNG, a screenshot) becomes an input placed where it stood
    in the `tool` message; an image of an unknown source stays a placeholder."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": B64}}
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "shot:"}, image, {"type": "image", "source": {"type": "file"}}],
    }
    body = {
        "model": "kimi",
        "max_tokens": 9,
        "messages": [
            {"role": "user", "content": "look"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}],
            },
            {"role": "user", "content": [result, image, _T]},
        ],
    }
    messages, inputs = _parse(anthropic.DIALECT, body)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user"]
    assert inputs == [
        _at("messages.2.content.0.content.1", 2, 1, kind="image", data=PNG, mime="image/png"),
        _at("messages.2.content.1", 3, 0, kind="image", data=PNG, mime="image/png"),
    ]
    assert messages[2].content == [TextPart("shot:"), TextPart("[image]")]


def test_gemini_attachment_beside_a_function_response_goes_to_the_users_own_message() -> None:
    """A content with a functionResponse and a blob: the blob sits in the message after the `tool` message."""
    call = {"functionCall": {"id": "c1", "name": "clock", "args": {}}}
    response = {"functionResponse": {"id": "c1", "name": "clock", "response": {"time": "12:00"}}}
    blob = {"inlineData": {"mimeType": "image/png", "data": B64}}
    body = {
        "contents": [
            {"role": "user", "parts": [{"text": "time?"}]},
            {"role": "model", "parts": [call]},
            {"role": "user", "parts": [response, blob, {"text": "what is it?"}]},
        ]
    }
    messages, inputs = _parse(gemini.DIALECT, body)
    assert [m.role for m in messages] == ["user", "assistant", "tool", "user"]
    assert inputs == [_at("contents[2].parts[1]", 3, 0, data=PNG, mime="image/png")]
    assert messages[3].content == [TextPart("what is it?")]
