"""The gateway's HTTP surface, read at a glance. A new dialect adds its rows to the two dialect tables.

- `CHAT_ROUTES`: parsed by the dialect, enqueued as a job, relayed back (gateway/relay.py). A row's `stream`
  says whether the route streams when the route, not the body, decides (Gemini).
- `LOCAL_ROUTES`: answered by a pure function of the dialect (no job), e.g. model lists, count_tokens; they
  authenticate the client like the chat routes.
- `SERVICE_ROUTES`: health, metrics, docs; open to everyone. Admin routes come from `token_service.admin.add_admin_routes`.
URL match info `{model}` becomes `RequestContext.path_model`.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp.typedefs import Handler

from adapters import anthropic, gemini, openai
from adapters.base import Dialect, LocalRoute
from gateway import docs, health
from shared.metrics import metrics_handler


@dataclass(frozen=True, slots=True)
class ChatRoute:
    method: str
    path: str
    dialect: Dialect
    #: True / False when the route decides whether to stream; None when the body's `stream` does.
    stream: bool | None = None


@dataclass(frozen=True, slots=True)
class LocalRow:
    method: str
    path: str
    dialect: Dialect
    answer: LocalRoute
    #: google-genai talks to /v1 too: a caller that authenticates the Gemini way (`x-goog-api-key`, `?key=`)
    #: gets this answer instead, and its errors in Gemini's shape.
    gemini_answer: LocalRoute | None = None


#: google-genai talks to /v1 by default, the Gemini docs to /v1beta: both serve the Gemini POST routes.
_GEMINI_PREFIXES = ("/v1beta/models/{model}", "/v1/models/{model}")

CHAT_ROUTES: tuple[ChatRoute, ...] = (
    ChatRoute("POST", "/v1/chat/completions", openai.DIALECT),
    ChatRoute("POST", "/v1/messages", anthropic.DIALECT),
    *(ChatRoute("POST", f"{p}:generateContent", gemini.DIALECT, stream=False) for p in _GEMINI_PREFIXES),
    *(ChatRoute("POST", f"{p}:streamGenerateContent", gemini.DIALECT, stream=True) for p in _GEMINI_PREFIXES),
)

LOCAL_ROUTES: tuple[LocalRow, ...] = (
    LocalRow("GET", "/v1/models", openai.DIALECT, openai.list_models, gemini.list_models),
    LocalRow("GET", "/v1/models/{model}", openai.DIALECT, openai.get_model, gemini.get_model),
    LocalRow("POST", "/v1/messages/count_tokens", anthropic.DIALECT, anthropic.count_tokens),
    LocalRow("GET", "/v1beta/models", gemini.DIALECT, gemini.list_models),
    LocalRow("GET", "/v1beta/models/{model}", gemini.DIALECT, gemini.get_model),
    *(
        LocalRow("POST", f"{prefix}:countTokens", gemini.DIALECT, gemini.count_tokens)
        for prefix in _GEMINI_PREFIXES
    ),
)

SERVICE_ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/ping", health.ping),
    ("GET", "/healthz", health.healthz),
    ("GET", "/readyz", health.readyz),
    ("GET", "/metrics", metrics_handler),
    ("GET", "/", docs.index),
    ("GET", "/openapi.json", docs.openapi),
)
