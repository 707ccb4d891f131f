"""Table tests of multi-turn flattening (kimi-web-rest.md §7.4) and the Connect request builder (§2.8)."""

from __future__ import annotations

import msgspec
import pytest

from shared.models import resolve_model
from shared.schema import AttachmentPart, ChatOptions, ChatRequest, Message, TextPart
from upstream_worker.kimi.connect_request import build_request, encode_request
from upstream_worker.kimi.envelope import EnvelopeDecoder
from upstream_worker.kimi.files import KimiFile, rest_refs
from upstream_worker.kimi.flatten import flatten_connect, flatten_rest, turn_attachments, wrap_urls

U = "user"
A = "assistant"
S = "system"
IMAGE = AttachmentPart(sha256="a" * 64, mime="image/png", name="a.png", size=8, kind="image", source="inline")
WRAPPED = '<url id="" type="url" status="" title="" wc="">https://a.com/x?q=1</url>'


def m(role: str, content: str | list[TextPart | AttachmentPart]) -> Message:
    return Message(role=role, content=content)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("messages", "continuation", "expected"),
    [
        # The spec's worked example (merge mode).
        (
            [m(U, "你好"), m(A, "你好！有什么可以帮你？"), m(U, "1+1=?")],
            False,
            "user:你好\nassistant:你好！有什么可以帮你？\nsystem:关注用户最新的消息\nuser:1+1=?\n",
        ),
        # Pass-through: a single message, no prefix.
        ([m(U, "hi")], False, "hi\n"),
        # Pass-through: a continuation keeps every message, without prefixes.
        ([m(S, "be brief"), m(U, "hi")], True, "be brief\nhi\n"),
        # Array content: one line per text part.
        ([m(U, [TextPart("a"), TextPart("b")])], False, "a\nb\n"),
        # URLs wrapped in user string content only.
        ([m(U, "see https://a.com/x?q=1 now")], False, f"see {WRAPPED} now\n"),
        (
            [m(A, "see https://a.com/x?q=1"), m(U, "ok")],
            False,
            "assistant:see https://a.com/x?q=1\nsystem:关注用户最新的消息\nuser:ok\n",
        ),
        # An image in the last message switches the focus line.
        (
            [m(S, "sys"), m(U, [TextPart("look"), IMAGE])],
            False,
            "system:sys\nsystem:关注用户最新发送文件和消息\nuser:look\n",
        ),
        (
            [m(S, "sys"), m(U, "q https://a.com/x?q=1")],
            False,
            f"system:sys\nsystem:关注用户最新的消息\nuser:q {WRAPPED}\n",
        ),
    ],
)
def test_flatten_rest(messages: list[Message], continuation: bool, expected: str) -> None:
    """REST flattening reproduces kimi-free-api's merge and pass-through modes byte for byte."""
    assert flatten_rest(messages, continuation) == expected


def test_url_wrapping_stops_at_non_ascii() -> None:
    """A URL followed directly by Chinese text is wrapped without swallowing the text."""
    assert wrap_urls("看https://a.com/x?q=1的内容") == f"看{WRAPPED}的内容"


@pytest.mark.parametrize(
    ("messages", "continuation", "expected"),
    [
        ([m(U, "hi")], False, "hi"),
        (
            [m(U, "你好"), m(A, "嗨"), m(U, "1+1=?")],
            False,
            "user:你好\nassistant:嗨\nsystem:关注用户最新的消息\nuser:1+1=?",
        ),
        ([m(U, "old"), m(A, "reply"), m(U, "new https://a.com")], True, "new https://a.com"),
    ],
)
def test_flatten_connect(messages: list[Message], continuation: bool, expected: str) -> None:
    """Connect sends the merged history for new chats and only the last user turn when continuing."""
    assert flatten_connect(messages, continuation) == expected


def _request(model: str, text: str = "Hello", **options: bool) -> ChatRequest:
    return ChatRequest(request_id="r1", model=model, messages=[m(U, text)], options=ChatOptions(**options))


def _wire(
    model: str,
    chat_id: str | None = None,
    parent_id: str | None = None,
    files: tuple[KimiFile, ...] = (),
    **options: bool,
) -> object:
    spec = resolve_model(model)
    assert spec is not None
    body = encode_request(build_request(_request(model, **options), spec, chat_id, parent_id, files))
    (frame,) = EnvelopeDecoder().feed(body)
    assert frame.flags == 0
    return msgspec.json.decode(frame.payload)


def test_new_instant_chat() -> None:
    """A new K2.5 instant chat: scenario K2D5, empty parent id, no tools, thinking false."""
    assert _wire("kimi-k2.5-instant") == {
        "scenario": "SCENARIO_K2D5",
        "message": {
            "blocks": [{"text": {"content": "Hello"}, "message_id": ""}],
            "scenario": "SCENARIO_K2D5",
            "role": "user",
            "parent_id": "",
        },
        "options": {"thinking": False},
        "tools": [],
    }


def test_continued_thinking_chat_with_search_option() -> None:
    """A continuation carries chat_id and parent_id; the request's search option adds the search tool."""
    assert _wire("kimi-k2.5-thinking", "c1", "m1", search=True) == {
        "scenario": "SCENARIO_K2D5",
        "message": {
            "blocks": [{"text": {"content": "Hello"}, "message_id": ""}],
            "scenario": "SCENARIO_K2D5",
            "role": "user",
            "parent_id": "m1",
        },
        "options": {"thinking": True},
        "chat_id": "c1",
        "tools": [{"type": "TOOL_TYPE_SEARCH", "search": {}}],
    }


def test_agent_swarm() -> None:
    """Agent lanes send kimiplusId and agentMode top-level and options.agent_mode too."""
    assert _wire("kimi-k2.5-agent-swarm") == {
        "scenario": "SCENARIO_OK_COMPUTER",
        "message": {
            "blocks": [{"text": {"content": "Hello"}, "message_id": ""}],
            "scenario": "SCENARIO_OK_COMPUTER",
            "role": "user",
            "parent_id": "",
            "is_goal": False,
        },
        "options": {"thinking": False, "enable_plugin": True, "agent_mode": "TYPE_ULTRA"},
        "tools": [],
        "kimiplusId": "ok-computer",
        "agentMode": "TYPE_ULTRA",
    }


def test_search_model_and_thinking_option() -> None:
    """A -search model adds the search tool; options.thinking turns thinking on for any lane."""
    wire = _wire("kimi-search", thinking=True)
    assert isinstance(wire, dict)
    assert wire["tools"] == [{"type": "TOOL_TYPE_SEARCH", "search": {}}]
    assert wire["options"] == {"thinking": True}
    assert wire["scenario"] == "SCENARIO_SEARCH"


def test_uploaded_files_follow_the_text_block() -> None:
    """Each uploaded file becomes a `file` block with its id and the ready status, after the text block."""
    files = (KimiFile("f-1", "image", "a.png", 8), KimiFile("f-2", "file", "b.pdf", 9))
    wire = _wire("kimi-k2.5-instant", files=files)
    assert isinstance(wire, dict)
    assert wire["message"]["blocks"] == [
        {"text": {"content": "Hello"}, "message_id": ""},
        {"file": {"id": "f-1", "status": "PROCESS_STATUS_SUCCESS"}},
        {"file": {"id": "f-2", "status": "PROCESS_STATUS_SUCCESS"}},
    ]


def test_rest_refs_carry_each_files_detail() -> None:
    """REST `refs` lists the ids; `refs_file` holds kimi-free-api's detail object per file."""
    refs, refs_file = rest_refs([KimiFile("f-1", "file", "b.pdf", 9)])
    detail = {"id": "f-1", "name": "b.pdf", "size": 9, "status": "parsed", "type": "file"}
    assert refs == ["f-1"]
    assert refs_file == [
        {
            "detail": detail,
            "done": True,
            "file": {},
            "file_info": detail,
            "id": "f-1",
            "name": "b.pdf",
            "parse_status": "success",
            "size": 9,
            "upload_progress": 100,
            "upload_status": "success",
        }
    ]


def test_turn_attachments_follow_what_the_text_carries() -> None:
    """A new chat (and REST always) references every attachment once; a Connect continuation only the last
    user turn's."""
    pdf = AttachmentPart(
        sha256="b" * 64, mime="application/pdf", name="b.pdf", size=9, kind="file", source="url"
    )
    history = [
        m(U, [TextPart("look"), IMAGE]),
        m(A, "a cat"),
        m(U, [pdf, TextPart("and this")]),
        m(A, "a paper"),
        m(U, [IMAGE, TextPart("the cat again")]),
    ]
    assert turn_attachments(history, "connect", continuation=False) == [IMAGE, pdf]
    assert turn_attachments(history, "rest", continuation=True) == [IMAGE, pdf]
    assert turn_attachments(history, "connect", continuation=True) == [IMAGE]
    assert turn_attachments([m(U, "hi")], "connect", continuation=True) == []
