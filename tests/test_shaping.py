"""Table tests of adapters/shaping.py: stop sequences and the token budget the gateway enforces itself."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from adapters import anthropic, gemini, openai
from adapters.base import Dialect, RequestContext
from adapters.shaping import OutputLimiter, citation_text
from shared.schema import Citation, Done, Event, TextDelta
from shared.usage_estimate import estimate_tokens


def _run(limiter: OutputLimiter, chunks: list[str]) -> list[str]:
    out = [limiter.feed(c) for c in chunks]
    out.append(limiter.flush())
    return out


@pytest.mark.parametrize(
    ("stops", "chunks", "expected", "cause", "sequence"),
    [
        ([], ["Hello", " world"], ["Hello", " world", ""], None, None),
        (["END"], ["Hello E", "N", "D tail"], ["Hello ", "", "", ""], "stop_sequence", "END"),
        (["END"], ["a EN", "x"], ["a ", "ENx", ""], None, None),
        (["END"], ["a EN"], ["a ", "EN"], None, None),
        (["\n\n", "STOP"], ["one\n", "\ntwo STOP"], ["one", "", ""], "stop_sequence", "\n\n"),
        (["xy", "y"], ["axy"], ["a", ""], "stop_sequence", "xy"),
        (["", "Q"], ["abc"], ["abc", ""], None, None),
    ],
)
def test_stop_sequences_cut_across_chunks(
    stops: list[str], chunks: list[str], expected: list[str], cause: str | None, sequence: str | None
) -> None:
    """Text is held back only while it could still become a stop sequence, and cut before the first one."""
    limiter = OutputLimiter(stops)
    assert _run(limiter, chunks) == expected
    assert limiter.cause == cause
    assert limiter.stop_sequence == sequence


def test_max_tokens_cuts_at_the_estimated_budget() -> None:
    """The answer stops at the longest prefix whose estimate fits `max_tokens`, and says why."""
    limiter = OutputLimiter(max_tokens=3)
    out = _run(limiter, ["abcd", "efgh", "ijklmnop"])
    assert out == ["abcd", "efgh", "ijkl", ""]
    assert limiter.cause == "max_tokens"
    assert estimate_tokens(limiter.sent_text) == 3


def test_max_tokens_counts_cjk_as_one_token_each() -> None:
    """CJK characters cost one token each, so a budget of 2 keeps two of them."""
    limiter = OutputLimiter(max_tokens=2)
    assert limiter.feed("你好世界") == "你好"
    assert limiter.cause == "max_tokens"


def test_an_answer_exactly_at_the_budget_is_not_cut() -> None:
    """Reaching max_tokens exactly with no more text is a natural end, not a cut."""
    limiter = OutputLimiter(max_tokens=2)
    assert _run(limiter, ["abcd", "efgh"]) == ["abcd", "efgh", ""]
    assert limiter.cause is None


def test_stop_sequence_and_budget_together_report_the_first_to_bite() -> None:
    """When the budget runs out before the stop sequence, the cause is max_tokens."""
    limiter = OutputLimiter(["STOP"], max_tokens=1)
    assert limiter.feed("abcdefgh STOP") == "abcd"
    assert limiter.cause == "max_tokens"
    assert limiter.feed("more") == ""


def test_citation_text_is_kimi_free_api_format() -> None:
    """A citation renders as kimi-free-api's 【检索 n】 markdown line."""
    citation = Citation(index=2, title="Nanjing weather", url="https://example.com/w")
    assert citation_text(citation) == "【检索 2】 [Nanjing weather](https://example.com/w)\n"


def test_citation_lines_then_text_on_a_new_line() -> None:
    """Consecutive citations are lines of their own; only the text after the run starts with a line break."""
    limiter = OutputLimiter()
    out = [
        limiter.feed_citation(Citation(1, "A", "https://a")),
        limiter.feed_citation(Citation(2, "B", "https://b")),
        limiter.feed("ok"),
        limiter.feed(" more"),
    ]
    assert out == ["【检索 1】 [A](https://a)\n", "【检索 2】 [B](https://b)\n", "\nok", " more"]


def test_every_dialect_shows_the_same_answer_text_for_citations() -> None:
    """OpenAI, Anthropic and Gemini bodies carry the one citation text of adapters/shaping.py, then the answer."""
    events: list[Event] = [
        Citation(1, "A", "https://a"),
        Citation(2, "B", "https://b"),
        TextDelta("ok"),
        Done(),
    ]
    messages = [{"role": "user", "content": "x"}]
    cases: list[tuple[Dialect, dict[str, Any], str | None, Callable[[Any], str]]] = [
        (openai.DIALECT, {"model": "kimi-search", "messages": messages}, None, _openai_text),
        (
            anthropic.DIALECT,
            {"model": "kimi-search", "max_tokens": 99, "messages": messages},
            None,
            _claude_text,
        ),
        (gemini.DIALECT, {"contents": [{"parts": [{"text": "x"}]}]}, "kimi-search", _gemini_text),
    ]
    texts = []
    for dialect, body, path_model, text_of in cases:
        ctx = RequestContext("r1", path_model=path_model)
        request, reply = dialect.parse(json.dumps(body).encode(), ctx)
        renderer = dialect.renderer(request, reply, ctx)
        for event in events:
            renderer.feed(event)
        texts.append(text_of(json.loads(renderer.body())))
    assert texts == ["【检索 1】 [A](https://a)\n【检索 2】 [B](https://b)\n\nok"] * 3


def _openai_text(body: Any) -> str:
    return str(body["choices"][0]["message"]["content"])


def _claude_text(body: Any) -> str:
    return str(body["content"][0]["text"])


def _gemini_text(body: Any) -> str:
    return str(body["candidates"][0]["content"]["parts"][0]["text"])
