"""The gateway's HTTP surface, read at a glance. A new dialect adds its rows here and nothing else in gateway/.

- `CHAT_ROUTES`: parsed by the dialect, enqueued as a job, relayed back (gateway/relay.py). A row's `stream`
  says whether the route streams when the route, not the body, decides (Gemini).
- `LOCAL_ROUTES`: answered by a pure function of the dialect (no job), e.g. model lists, count_tokens; they
  authenticate the client like the chat routes. A row's `variant` answers the callers it recognises with
  another dialect's function, errors included.
- `SERVICE_ROUTES`: health, metrics, docs, the browser pages (gateway/pages.py: docs, playground, console);
  open to everyone. Admin routes come from `token_service.admin.add_admin_routes`.
Every row carries the summary `/openapi.json` and `/` show. URL match info `{model}` becomes
`RequestContext.path_model`. Errors of every other route take `DEFAULT_DIALECT`'s shape.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp.typedefs import Handler

from adapters import anthropic, gemini, openai, responses
from adapters.base import Dialect, LocalRoute
from gateway import docs, health, pages, stored_responses
from shared.metrics import metrics_handler

#: A test of the caller by its headers and query (e.g. how it authenticates).
CallerTest = Callable[[Mapping[str, str], Mapping[str, str]], bool]


@dataclass(frozen=True, slots=True)
class ChatRoute:
    method: str
    path: str
    dialect: Dialect
    summary: str
    #: True / False when the route decides whether to stream; None when the body's `stream` does.
    stream: bool | None = None

    def dialect_for(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Dialect:
        return self.dialect


@dataclass(frozen=True, slots=True)
class Variant:
    """Another dialect's answer on a local route, for the callers `applies` recognises."""

    applies: CallerTest
    dialect: Dialect
    answer: LocalRoute


@dataclass(frozen=True, slots=True)
class LocalRow:
    method: str
    path: str
    dialect: Dialect
    answer: LocalRoute
    summary: str
    variant: Variant | None = None

    def serving(self, headers: Mapping[str, str], query: Mapping[str, str]) -> tuple[Dialect, LocalRoute]:
        """The dialect (answer and errors) and the function that answer this caller."""
        if self.variant is not None and self.variant.applies(headers, query):
            return self.variant.dialect, self.variant.answer
        return self.dialect, self.answer

    def dialect_for(self, headers: Mapping[str, str], query: Mapping[str, str]) -> Dialect:
        return self.serving(headers, query)[0]


@dataclass(frozen=True, slots=True)
class ServiceRoute:
    method: str
    path: str
    handler: Handler
    summary: str


Route = ChatRoute | LocalRow

DEFAULT_DIALECT: Final[Dialect] = openai.DIALECT

#: google-genai talks to /v1 by default, the Gemini docs to /v1beta: both serve the Gemini POST routes.
GEMINI_PREFIXES = ("/v1beta/models/{model}", "/v1/models/{model}")
#: google-genai lists models on /v1 too: a caller that authenticates the Gemini way (`x-goog-api-key`,
#: `?key=`) gets Gemini's answer and errors there.
_GEMINI_LIST = Variant(gemini.is_gemini_caller, gemini.DIALECT, gemini.list_models)
_GEMINI_GET = Variant(gemini.is_gemini_caller, gemini.DIALECT, gemini.get_model)


def _gemini_note(prefix: str) -> str:
    return " (google-genai's /v1 prefix)" if prefix.startswith("/v1/") else ""


CHAT_ROUTES: tuple[ChatRoute, ...] = (
    ChatRoute(
        "POST", "/v1/chat/completions", openai.DIALECT, "OpenAI Chat Completions (stream and non-stream)"
    ),
    ChatRoute("POST", "/v1/messages", anthropic.DIALECT, "Anthropic Messages"),
    ChatRoute("POST", "/v1/responses", responses.DIALECT, "OpenAI Responses (stream and non-stream)"),
    *(
        ChatRoute("POST", f"{p}:generateContent", gemini.DIALECT, f"Gemini{_gemini_note(p)}", stream=False)
        for p in GEMINI_PREFIXES
    ),
    *(
        ChatRoute(
            "POST",
            f"{p}:streamGenerateContent",
            gemini.DIALECT,
            f"Gemini streaming (alt=sse for SSE){_gemini_note(p)}",
            stream=True,
        )
        for p in GEMINI_PREFIXES
    ),
)

LOCAL_ROUTES: tuple[LocalRow, ...] = (
    LocalRow(
        "GET",
        "/v1/models",
        openai.DIALECT,
        openai.list_models,
        "Every model id, OpenAI list shape (Gemini's for a Gemini caller)",
        _GEMINI_LIST,
    ),
    LocalRow(
        "GET",
        "/v1/models/{model}",
        openai.DIALECT,
        openai.get_model,
        "One model (Gemini's shape for a Gemini caller)",
        _GEMINI_GET,
    ),
    LocalRow(
        "POST",
        "/v1/messages/count_tokens",
        anthropic.DIALECT,
        anthropic.count_tokens,
        "Anthropic token count (estimate)",
    ),
    LocalRow("GET", "/v1beta/models", gemini.DIALECT, gemini.list_models, "Gemini model list"),
    LocalRow("GET", "/v1beta/models/{model}", gemini.DIALECT, gemini.get_model, "One Gemini model"),
    *(
        LocalRow(
            "POST",
            f"{p}:countTokens",
            gemini.DIALECT,
            gemini.count_tokens,
            f"Gemini token count (estimate){_gemini_note(p)}",
        )
        for p in GEMINI_PREFIXES
    ),
)

SERVICE_ROUTES: tuple[ServiceRoute, ...] = (
    ServiceRoute("GET", "/ping", health.ping, "pong"),
    ServiceRoute("GET", "/healthz", health.healthz, "The process answers"),
    ServiceRoute(
        "GET", "/readyz", health.readyz, "503 while Redis is unreachable or no worker has a fresh heartbeat"
    ),
    ServiceRoute("GET", "/metrics", metrics_handler, "Prometheus exposition"),
    # Stored Responses API responses: state of their own, so gateway handlers; they authenticate the caller.
    ServiceRoute("GET", "/v1/responses/{response_id}", stored_responses.get_response, "A stored response"),
    ServiceRoute(
        "DELETE", "/v1/responses/{response_id}", stored_responses.delete_response, "Delete a stored response"
    ),
    ServiceRoute(
        "GET",
        "/v1/responses/{response_id}/input_items",
        stored_responses.list_input_items,
        "A stored response's input items",
    ),
    ServiceRoute("GET", "/", pages.docs_page, "API docs: every route, its schemas, and a try-it console"),
    ServiceRoute("GET", "/playground", pages.playground_page, "A chat page on /v1/chat/completions"),
    ServiceRoute("GET", "/favicon.ico", pages.favicon, "The pages' icon (SVG)"),
    ServiceRoute(
        "GET", "/static/{path:.+}", pages.static_asset, "The browser pages' scripts, styles and icons"
    ),
    ServiceRoute("GET", "/openapi.json", docs.openapi, "This document"),
    # The page is open (it holds no data); each admin call it makes is checked by the token service.
    ServiceRoute("GET", "/admin", pages.console_page, "The operator's console: a page over the admin routes"),
)

#: The rows whose errors take their dialect's shape, by (method, path).
ROWS: Final[dict[tuple[str, str], Route]] = {
    **{(row.method, row.path): row for row in CHAT_ROUTES},
    **{(row.method, row.path): row for row in LOCAL_ROUTES},
}
#: A path's regex-constrained parameters (`{path:.+}`), as the router's canonical template spells them (`{path}`).
_CONSTRAINED = re.compile(r"\{(\w+):[^}]+\}")

#: (method, path template) → summary of every row above, for the docs.
SUMMARIES: Final[dict[tuple[str, str], str]] = {
    **{key: row.summary for key, row in ROWS.items()},
    **{(row.method, _CONSTRAINED.sub(r"{\1}", row.path)): row.summary for row in SERVICE_ROUTES},
}
