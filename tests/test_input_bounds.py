"""Every dialect refuses a request beyond its bounds with a 400 naming the field (adapters/common.py `Bounds`):
stop sequences (count and length), messages, total text and the model name's length."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from adapters import anthropic, gemini, openai
from adapters.base import Parsed, RequestContext
from shared.errors import BadRequest

Parse = Callable[[bytes, RequestContext], Parsed]
LONG_TEXT = "x" * 1_000_001


def _openai(**extra: Any) -> bytes:
    body = {"model": "kimi", "messages": [{"role": "user", "content": "hi"}]} | extra
    return json.dumps(body).encode()


def _anthropic(**extra: Any) -> bytes:
    body = {"model": "kimi", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]} | extra
    return json.dumps(body).encode()


def _gemini(**extra: Any) -> bytes:
    return json.dumps({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]} | extra).encode()


def _turns(n: int) -> list[dict[str, str]]:
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": "hi"} for i in range(n)]


def _contents(n: int) -> list[dict[str, Any]]:
    return [{"role": "user" if i % 2 == 0 else "model", "parts": [{"text": "hi"}]} for i in range(n)]


CASES: list[tuple[str, Parse, str | None, bytes, str, str]] = [
    (
        "openai 5 stops",
        openai.parse,
        None,
        _openai(stop=["a"] * 5),
        "stop",
        "`stop` holds at most 4 sequences.",
    ),
    (
        "openai long stop",
        openai.parse,
        None,
        _openai(stop="s" * 257),
        "stop",
        "`stop[0]` is longer than 256 characters.",
    ),
    (
        "openai 2001 messages",
        openai.parse,
        None,
        _openai(messages=_turns(2001)),
        "messages",
        "`messages` holds at most 2000 messages.",
    ),
    (
        "openai 2M characters",
        openai.parse,
        None,
        _openai(messages=[{"role": "user", "content": LONG_TEXT}, {"role": "user", "content": LONG_TEXT}]),
        "messages",
        "`messages` hold more than 2000000 characters of text.",
    ),
    (
        "openai long model",
        openai.parse,
        None,
        _openai(model="k" * 129),
        "model",
        "`model` is longer than 128 characters.",
    ),
    (
        "anthropic 17 stops",
        anthropic.parse,
        None,
        _anthropic(stop_sequences=["a"] * 17),
        "stop_sequences",
        "`stop_sequences` holds at most 16 sequences.",
    ),
    (
        "anthropic 2001 messages",
        anthropic.parse,
        None,
        _anthropic(messages=_turns(2001)),
        "messages",
        "`messages` holds at most 2000 messages.",
    ),
    (
        "anthropic long model",
        anthropic.parse,
        None,
        _anthropic(model="k" * 129),
        "model",
        "`model` is longer than 128 characters.",
    ),
    (
        "gemini 6 stops",
        gemini.parse,
        "kimi",
        _gemini(generationConfig={"stopSequences": ["a"] * 6}),
        "generationConfig.stopSequences",
        "`generationConfig.stopSequences` holds at most 5 sequences.",
    ),
    (
        "gemini 2001 contents",
        gemini.parse,
        "kimi",
        _gemini(contents=_contents(2001)),
        "contents",
        "`contents` holds at most 2000 messages.",
    ),
    (
        "gemini long model",
        gemini.parse,
        "k" * 129,
        _gemini(),
        "model",
        "`model` is longer than 128 characters.",
    ),
]


@pytest.mark.parametrize(
    ("parse", "path_model", "body", "param", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_requests_beyond_the_bounds_are_400s_naming_the_field(
    parse: Parse, path_model: str | None, body: bytes, param: str, message: str
) -> None:
    """A request past one bound is a BadRequest (400) whose param is the field and whose message says the cap."""
    with pytest.raises(BadRequest) as caught:
        parse(body, RequestContext("r1", path_model=path_model))
    assert (caught.value.status, caught.value.param, caught.value.message) == (400, param, message)
