"""Examples and code samples of `/openapi.json`: request bodies that work against a gateway with one account,
answers as the gateway writes them, error bodies rendered by each dialect's own `error_response`, and
`x-codeSamples` (a pasteable curl for every operation; the official SDK call for the chat routes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from adapters import anthropic, gemini, openai
from adapters.base import Dialect, RequestContext
from shared.errors import (
    AuthenticationFailed,
    BadRequest,
    GatewayError,
    ModelNotFound,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
)

#: Where the samples send their requests: `make run`'s gateway. Replace with yours.
BASE_URL: Final = "http://127.0.0.1:8000"
CURL_PREAMBLE: Final = (
    f"# BASE: your gateway ({BASE_URL} with `make run`); KEY: a GATEWAY_API_KEYS or managed client key\n"
    "# (any value while the gateway has no client key configured).\n"
    f"BASE={BASE_URL}; KEY=sk-your-key\n"
)
ADMIN_PREAMBLE: Final = (
    f"# BASE: your gateway ({BASE_URL} with `make run`); ADMIN_KEY: ADMIN_API_KEY (without one the admin\n"
    "# routes answer loopback callers only).\n"
    f"BASE={BASE_URL}; ADMIN_KEY=your-admin-key\n"
)
PROMPT: Final = "Hello, Kimi!"
_USER: Final = [{"role": "user", "content": PROMPT}]
_CONTENTS: Final = [{"role": "user", "parts": [{"text": PROMPT}]}]

# ---------------------------------------------------------------- request bodies

CHAT: Final = {"model": "kimi", "messages": _USER, "stream": False}
MESSAGES: Final = {"model": "kimi", "max_tokens": 1024, "messages": _USER, "stream": False}
MESSAGES_COUNT: Final = {"model": "kimi", "messages": _USER}
RESPONSES: Final = {"model": "kimi", "input": PROMPT, "stream": False}
GEMINI: Final = {"contents": _CONTENTS}
GEMINI_COUNT: Final = {"contents": _CONTENTS}
EXTRACT: Final = {"cookies": "kimi-auth=<the kimi-auth cookie's JWT>; other=cookie"}
SAVE: Final = {"token": "<a kimi-auth JWT or a refresh_token>"}
CHECK: Final = {"token": "<a kimi-auth JWT or a refresh_token>"}
ADD: Final = {"tokens": ["<a kimi-auth JWT, a refresh_token or an API key>"]}
KEY_CREATE: Final = {"name": "laptop", "models": ["kimi", "kimi-k2.5-thinking"], "requests_per_minute": 60}
KEY_PATCH: Final = {"tokens_per_day": 200000, "expires_s": None}

# ---------------------------------------------------------------- answers

_ANSWER: Final = "Hello! How can I help you today?"
_CREATED: Final = 1767225600
_RID: Final = "8c1e0b6f2a3d4e5f8a9b0c1d2e3f4a5b"
CHAT_OUT: Final = {
    "id": f"chatcmpl-{_RID}",
    "object": "chat.completion",
    "created": _CREATED,
    "model": "kimi",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": _ANSWER},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19},
}
MESSAGES_OUT: Final = {
    "type": "message",
    "id": f"msg_{_RID}",
    "role": "assistant",
    "model": "kimi",
    "content": [{"type": "text", "text": _ANSWER}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 10},
}
GEMINI_OUT: Final = {
    "candidates": [
        {"content": {"parts": [{"text": _ANSWER}], "role": "model"}, "index": 0, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 10, "totalTokenCount": 19},
    "modelVersion": "kimi",
    "responseId": _RID,
}
_MESSAGE_ITEM: Final = {
    "id": f"msg_{_RID}_0",
    "type": "message",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": _ANSWER}],
}
RESPONSE_OUT: Final = {
    "id": f"resp_{_RID}",
    "object": "response",
    "created_at": _CREATED,
    "status": "completed",
    "error": None,
    "incomplete_details": None,
    "model": "kimi",
    "output": [_MESSAGE_ITEM],
    "temperature": 1.0,
    "top_p": 1.0,
    "truncation": "disabled",
    "usage": {
        "input_tokens": 9,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 10,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 19,
    },
    "user": None,
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
}
RESPONSE_DELETED: Final = {"id": f"resp_{_RID}", "object": "response", "deleted": True}
INPUT_ITEMS: Final = {
    "object": "list",
    "data": [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": PROMPT}],
            "id": f"in_{_RID}_0",
        }
    ],
    "first_id": f"in_{_RID}_0",
    "last_id": f"in_{_RID}_0",
    "has_more": False,
}


def _local(answer: Any, body: Any = None, model: str | None = None) -> Any:
    """The body a local route's own function answers (the examples cannot drift from the code)."""
    ctx = RequestContext("example", path_model=model)
    _, _, out = answer(msgspec.json.encode(body) if body is not None else b"", ctx)
    return msgspec.json.decode(out)


MODELS_OUT: Final = _local(openai.list_models)
MODEL_OUT: Final = _local(openai.get_model, model="kimi")
GEMINI_MODELS_OUT: Final = _local(gemini.list_models)
GEMINI_MODEL_OUT: Final = _local(gemini.get_model, model="kimi")
MESSAGES_COUNT_OUT: Final = _local(anthropic.count_tokens, MESSAGES_COUNT)
GEMINI_COUNT_OUT: Final = _local(gemini.count_tokens, GEMINI_COUNT, model="kimi")

_ACCOUNT: Final = {
    "id": "3f9a1c2b7d4e",
    "kind": "kimi_auth",
    "user_id": "cn0abc123",
    "state": "active",
    "state_reason": "",
    "preview": "eyJh…x9Q",
    "ephemeral": False,
    "exp": 1769817600,
    "expires_at": "2026-01-31T00:00:00Z",
    "seconds_left": 2592000,
    "hours_left": 720.0,
    "cooling_until": None,
    "created_at": "2026-01-01T00:00:00Z",
    "last_used_at": None,
    "last_ok_at": "2026-01-01T00:00:05Z",
    "last_error": None,
    "last_error_at": None,
    "counters": {"requests": 0},
    "region": "cn",
    "base_url": "",
    "origin": "https://www.kimi.com",
}
_KEY: Final = {
    "id": "k_5d2c9e",
    "name": "laptop",
    "created_s": 1767225600.0,
    "models": ["kimi", "kimi-k2.5-thinking"],
    "requests_per_minute": 60,
    "tokens_per_minute": None,
    "tokens_per_day": None,
    "concurrent_requests": None,
    "expires_s": None,
    "enabled": True,
    "revoked": False,
    "window_s": 60,
}
_TOKEN_INFO: Final = {"valid": True, "user_id": "cn0abc123", "expires_at": "2026-01-31T00:00:00Z"}
_SECRET: Final = "kgw-3q7Yx9…"
ADMIN_OUT: Final[dict[str, Any]] = {
    "AdminExtractResult": {"success": True, "token": "eyJhbGciOi…", "token_info": _TOKEN_INFO},
    "AdminSaveResult": {
        "success": True,
        "account_id": "3f9a1c2b7d4e",
        "created": True,
        "token_info": _TOKEN_INFO,
    },
    "AdminAuthStatus": {"has_token": True, "accounts": [_ACCOUNT]},
    "AdminClearResult": {"success": True, "removed": 1, "message": "removed 1 account(s)"},
    "AdminTokenLive": {"live": True},
    "AdminAccountList": {"accounts": [_ACCOUNT]},
    "AdminAddResult": {
        "success": True,
        "added": [{"account_id": "3f9a1c2b7d4e", "created": True, "kind": "kimi_auth"}],
        "errors": [],
    },
    "AdminAccountResult": {"success": True, "account": _ACCOUNT},
    "AdminProbeResult": {"result": "ok", "account": _ACCOUNT},
    "AdminProbeAllResult": {"results": {"3f9a1c2b7d4e": "ok"}},
    "AdminSuccess": {"success": True},
    "AdminKeySecret": {"success": True, "key": _KEY, "secret": _SECRET},
    "AdminKeyList": {"keys": [_KEY]},
    "AdminKey": {"key": _KEY},
    "AdminKeyResult": {"success": True, "key": _KEY},
    "AdminKeyUsage": {
        "key": _KEY,
        "days": {"2026-01-01": {"kimi": {"requests": 3, "prompt_tokens": 27, "ttft_ms_avg": 412.5}}},
    },
    "AdminSystem": {
        "jobs": {"stream_length": 2, "pending": 1, "dead_letter": 0},
        "workers": [{"name": "worker-1a2b", "last_heartbeat_ms": 1767225599000, "age_s": 1.0, "alive": True}],
        "accounts": {
            "total": 3,
            "by_state": {"active": 2, "disabled": 1},
            "by_kind": {"kimi_auth": 2, "refresh_token": 1},
            "passthrough": 0,
        },
        "stale_after_s": 15.0,
        "now_ms": 1767225600000,
    },
    "AdminRequestLog": {
        "requests": [
            {
                "id": "1767225600000-0",
                "t": 1767225600.0,
                "request_id": _RID,
                "key": "laptop",
                "key_id": "k_5d2c9e",
                "dialect": "openai",
                "model": "kimi",
                "status": 200,
                "error": "",
                "account": "3f9a1c2b7d4e",
                "duration_ms": 1830.2,
                "ttft_ms": 412.5,
                "prompt_tokens": 9,
                "completion_tokens": 10,
                "estimated": True,
                "prompt": None,
                "answer": None,
            }
        ],
        "next": None,
    },
}

# ---------------------------------------------------------------- stream examples

CHAT_SSE: Final = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"kimi",'
    '"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"kimi",'
    '"choices":[{"index":0,"delta":{"content":"Hello!"},"logprobs":null,"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,"model":"kimi",'
    '"choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)
MESSAGES_SSE: Final = (
    'event: message_start\ndata: {"type":"message_start","message":{"type":"message","id":"msg_1",'
    '"role":"assistant","model":"kimi","content":[],"stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":9,"output_tokens":0}}}\n\n'
    'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"text","text":""}}\n\n'
    'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"text_delta","text":"Hello!"}}\n\n'
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn",'
    '"stop_sequence":null},"usage":{"input_tokens":9,"output_tokens":2}}\n\n'
    'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)
GEMINI_SSE: Final = (
    'data: {"candidates":[{"content":{"parts":[{"text":"Hello!"}],"role":"model"},"index":0}],'
    '"modelVersion":"kimi","responseId":"1"}\n\n'
    'data: {"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"index":0,"finishReason":"STOP"}],'
    '"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2,"totalTokenCount":11},'
    '"modelVersion":"kimi","responseId":"1"}\n\n'
)
RESPONSES_SSE: Final = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{…}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":4,'
    '"item_id":"msg_1_0","output_index":0,"content_index":0,"delta":"Hello!","logprobs":[]}\n\n'
    'event: response.completed\ndata: {"type":"response.completed","sequence_number":9,"response":{…}}\n\n'
)

# ---------------------------------------------------------------- errors, rendered by the dialects


#: An error of each status the operations list, as the gateway raises it.
ERRORS: Final[dict[str, GatewayError]] = {
    "400": BadRequest("messages: a list of at least one message is required", param="messages"),
    "401": AuthenticationFailed("Incorrect API key provided."),
    "403": PermissionDenied("This key may not use the model `kimi-research`."),
    "404": ModelNotFound("The model `gpt-5` does not exist."),
    "429": RateLimited(
        "Rate limit reached for requests per minute: limit 60; retry in 12 s.", retry_after_s=12
    ),
    "5XX": ServiceUnavailable("No upstream worker is available; try again shortly."),
}


def dialect_errors(dialect: Dialect) -> dict[str, Any]:
    """Status → the error body `dialect` renders for it (its own `error_response`)."""
    return {
        status: msgspec.json.decode(dialect.error_response(exc, _RID)[2]) for status, exc in ERRORS.items()
    }


def admin_errors() -> dict[str, Any]:
    """Status → the admin error body (`token_service.admin._errors`' shape)."""
    return {
        status: {"success": False, "error": exc.message, "type": exc.kind, "param": exc.param}
        for status, exc in ERRORS.items()
    }


# ---------------------------------------------------------------- code samples


def curl(
    method: str,
    path: str,
    auth: tuple[str, ...],
    body: Any = None,
    *,
    stream: bool = False,
    admin: bool = False,
) -> str:
    """A pasteable curl of one operation; `auth` are the headers the dialect sends its key (and version) in."""
    command = f"curl {'-N ' if stream else ''}-sS" + ("" if method == "GET" else f" -X {method}")
    lines = [f'{command} "$BASE{path}"', *(f'  -H "{header}"' for header in auth)]
    if body is not None:
        lines.append('  -H "Content-Type: application/json"')
        lines.append(f"  -d '{json.dumps(body, ensure_ascii=False)}'")
    return (ADMIN_PREAMBLE if admin else CURL_PREAMBLE) + " \\\n".join(lines) + "\n"


def python(label: str, source: str) -> dict[str, str]:
    return {"lang": "python", "label": label, "source": source}


_OPENAI_CLIENT: Final = (
    "from openai import OpenAI\n\n"
    f'client = OpenAI(base_url="{BASE_URL}/v1", api_key="sk-your-key")  # any key on an open gateway\n'
)
_ANTHROPIC_CLIENT: Final = (
    f'import anthropic\n\nclient = anthropic.Anthropic(base_url="{BASE_URL}", api_key="sk-your-key")\n'
)


def _genai_client(api_version: str) -> str:
    return (
        "from google import genai\nfrom google.genai import types\n\n"
        "client = genai.Client(\n"
        '    api_key="sk-your-key",\n'
        f'    http_options=types.HttpOptions(base_url="{BASE_URL}", api_version="{api_version}"),\n'
        ")\n"
    )


def python_samples(kind: str, api_version: str = "v1beta") -> list[dict[str, str]]:
    """The official SDK's call for a chat or local route of `kind`, or nothing."""
    genai = _genai_client(api_version)
    samples: Mapping[str, list[dict[str, str]]] = {
        "chat": [
            python(
                "Python (openai)",
                _OPENAI_CLIENT + "completion = client.chat.completions.create(\n"
                f'    model="kimi", messages=[{{"role": "user", "content": "{PROMPT}"}}]\n)\n'
                "print(completion.choices[0].message.content)\n",
            ),
            python(
                "Python (openai, stream)",
                _OPENAI_CLIENT + "stream = client.chat.completions.create(\n"
                f'    model="kimi-search", messages=[{{"role": "user", "content": "{PROMPT}"}}], stream=True\n)\n'
                "for chunk in stream:\n"
                "    if chunk.choices:\n"
                '        print(chunk.choices[0].delta.content or "", end="", flush=True)\n',
            ),
        ],
        "models": [
            python(
                "Python (openai)",
                _OPENAI_CLIENT + "for model in client.models.list():\n    print(model.id)\n",
            )
        ],
        "model": [python("Python (openai)", _OPENAI_CLIENT + 'print(client.models.retrieve("kimi"))\n')],
        "messages": [
            python(
                "Python (anthropic)",
                _ANTHROPIC_CLIENT + "with client.messages.stream(\n"
                f'    model="kimi", max_tokens=1024, messages=[{{"role": "user", "content": "{PROMPT}"}}]\n'
                ") as stream:\n"
                "    for text in stream.text_stream:\n"
                '        print(text, end="", flush=True)\n',
            )
        ],
        "count_tokens": [
            python(
                "Python (anthropic)",
                _ANTHROPIC_CLIENT + "count = client.messages.count_tokens(\n"
                f'    model="kimi", messages=[{{"role": "user", "content": "{PROMPT}"}}]\n)\n'
                "print(count.input_tokens)\n",
            )
        ],
        "responses": [
            python(
                "Python (openai)",
                _OPENAI_CLIENT + f'response = client.responses.create(model="kimi", input="{PROMPT}")\n'
                "print(response.output_text)\n",
            )
        ],
        "response_get": [
            python("Python (openai)", _OPENAI_CLIENT + 'print(client.responses.retrieve("resp_…"))\n')
        ],
        "response_delete": [
            python("Python (openai)", _OPENAI_CLIENT + 'client.responses.delete("resp_…")\n')
        ],
        "input_items": [
            python(
                "Python (openai)",
                _OPENAI_CLIENT
                + 'for item in client.responses.input_items.list("resp_…"):\n    print(item)\n',
            )
        ],
        "generate": [
            python(
                "Python (google-genai)",
                genai + f'response = client.models.generate_content(model="kimi", contents="{PROMPT}")\n'
                "print(response.text)\n",
            )
        ],
        "stream_generate": [
            python(
                "Python (google-genai)",
                genai
                + f'for chunk in client.models.generate_content_stream(model="kimi", contents="{PROMPT}"):\n'
                '    print(chunk.text or "", end="", flush=True)\n',
            )
        ],
        "gemini_count": [
            python(
                "Python (google-genai)",
                genai
                + f'print(client.models.count_tokens(model="kimi", contents="{PROMPT}").total_tokens)\n',
            )
        ],
        "gemini_models": [
            python(
                "Python (google-genai)", genai + "for model in client.models.list():\n    print(model.name)\n"
            )
        ],
        "gemini_model": [python("Python (google-genai)", genai + 'print(client.models.get(model="kimi"))\n')],
    }
    return list(samples.get(kind, []))
