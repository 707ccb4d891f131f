"""The schemas of `/openapi.json`: components derived from the msgspec wire Structs (the one schema of each
message; `$ref`s rewritten to `#/components/schemas/…`, each component named by its dialect), and hand schemas
where the wire is written from bytes (stream chunks and events) or dicts (Responses objects, admin answers)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from adapters import anthropic, gemini, openai, responses
from gateway.health import Readiness
from shared.client_keys import ClientKey, RequestRecord
from token_service import client as admin

Schema = dict[str, Any]

_MARK: Final = "\x00ref:"
_REF: Final = "#/components/schemas/"
STR: Final[Schema] = {"type": "string"}
INT: Final[Schema] = {"type": "integer"}
BOOL: Final[Schema] = {"type": "boolean"}
NUM: Final[Schema] = {"type": "number"}
NULL: Final[Schema] = {"type": "null"}


def ref(name: str) -> Schema:
    return {"$ref": _REF + name}


def const(value: Any) -> Schema:
    return {"const": value}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, NULL]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def obj(properties: Mapping[str, Schema], required: Iterable[str] | None = None, **extra: Any) -> Schema:
    """An object; every property is required unless `required` names fewer."""
    names = list(properties) if required is None else list(required)
    return {"type": "object", "properties": dict(properties), "required": names, **extra}


def one_of(*names: str) -> Schema:
    return {"oneOf": [ref(n) for n in names]}


def struct_components(prefix: str, types: Iterable[Any], names: Mapping[str, str]) -> dict[str, Schema]:
    """The components of `types` and everything they reference, named `names[struct]` or prefix + struct."""
    _, found = msgspec.json.schema_components(list(types), ref_template=_MARK + "{name}")
    renamed = {old: names.get(old, prefix + old.lstrip("_")) for old in found}
    return {renamed[old]: {**_rewrite(s, renamed), "title": renamed[old]} for old, s in found.items()}


def _rewrite(value: Any, renamed: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith(_MARK):
        return _REF + renamed[value[len(_MARK) :]]
    if isinstance(value, dict):
        return {k: _rewrite(v, renamed) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, renamed) for v in value]
    return value


def _without(schema: Schema, *fields: str) -> Schema:
    """`schema` less some properties (what an API answer leaves out of its Struct)."""
    properties = {k: v for k, v in schema["properties"].items() if k not in fields}
    required = [r for r in schema.get("required", []) if r not in fields]
    return {**schema, "properties": properties, "required": required}


# ---------------------------------------------------------------- from the Structs

_OPENAI = struct_components(
    "OpenAI",
    [openai._Request, openai._CompletionOut, openai._ModelList, openai._ErrorEnvelope],
    {
        "_Request": "ChatCompletionRequest",
        "_CompletionOut": "ChatCompletion",
        "_ModelList": "ModelList",
        "_ModelOut": "Model",
        "_ErrorEnvelope": "OpenAIError",
        "_ErrorBody": "OpenAIErrorBody",
    },
)
#: The kimi-free-api extensions (`gateway/docs.py` `OPENAI_EXTENSIONS`), on the properties that carry them.
MODEL_FLAGS: Final = (
    "A model id of `GET /v1/models`. On `kimi`, kimi-free-api's flags combine: `-search` (web search), "
    "`-silent` (no citations in the text), `-research`, `-k1`, `-math`, `-thinking` (e.g. `kimi-search-silent`)."
)
_OPENAI["ChatCompletionRequest"]["properties"]["model"]["description"] = MODEL_FLAGS
_OPENAI["ChatCompletionRequest"]["properties"]["use_search"]["description"] = (
    "kimi-free-api extension: search the web for this answer (as the `-search` model flag)."
)
_OPENAI["ChatCompletionRequest"]["properties"]["conversation_id"]["description"] = (
    'kimi-free-api extension: `"none"` keeps the Kimi chat and answers with its id as the completion id; a '
    "later request passes that id and sends only the new turn."
)
_ANTHROPIC = struct_components(
    "Anthropic",
    [
        anthropic._Request,
        anthropic._CountRequest,
        anthropic._MessageOut,
        anthropic._TokenCount,
        anthropic._ErrorResponse,
        anthropic._ErrorEnvelope,
        anthropic._MessageStart,
        anthropic._MessageDelta,
    ],
    {
        "_Request": "MessagesRequest",
        "_CountRequest": "AnthropicCountTokensRequest",
        "_MessageOut": "MessagesResponse",
        "_TokenCount": "AnthropicTokenCount",
        "_ErrorResponse": "AnthropicError",
        "_ErrorEnvelope": "AnthropicErrorEvent",
        "_MessageStart": "AnthropicMessageStartEvent",
        "_MessageDelta": "AnthropicMessageDeltaEvent",
    },
)
#: The Struct's default 0 means "no cap" (it is below the minimum a client may send).
_ANTHROPIC["MessagesRequest"]["properties"]["max_tokens"] = {
    "type": "integer",
    "minimum": 1,
    "description": "The answer's token cap, enforced by the gateway (absent: Kimi's own length).",
}
_GEMINI = struct_components(
    "Gemini",
    [
        gemini._Request,
        gemini._CountRequest,
        gemini._TokenCount,
        gemini._ModelList,
        gemini._ErrorEnvelope,
        # msgspec cannot describe `_ContentOut.parts` (a union of untagged Structs): its two parts are here,
        # the objects around them are written by hand below.
        gemini._PartOut,
        gemini._CallPartOut,
        gemini._UsageOut,
    ],
    {
        "_Request": "GenerateContentRequest",
        "_CountRequest": "GeminiCountTokensRequest",
        "_ErrorEnvelope": "GeminiError",
        "_ModelOut": "GeminiModel",
        "_PartOut": "GeminiTextPart",
        "_CallPartOut": "GeminiFunctionCallPart",
        "_UsageOut": "GeminiUsageMetadata",
    },
)
_RESPONSES = struct_components("Responses", [responses._Request], {"_Request": "ResponsesRequest"})
_RESPONSES["ResponsesRequest"]["properties"]["model"]["description"] = MODEL_FLAGS
_RESPONSES["ResponsesRequest"]["properties"]["use_search"]["description"] = (
    "kimi-free-api extension: search the web for this answer (as a `web_search` tool does)."
)
_ADMIN = struct_components(
    "Admin",
    [
        admin.ExtractBody,
        admin.SaveBody,
        admin.CheckBody,
        admin.AddBody,
        admin.KeyCreateBody,
        admin.Account,
        ClientKey,
        RequestRecord,
        Readiness,
    ],
    {
        "Account": "Account",
        "ClientKey": "ClientKey",
        "Readiness": "Readiness",
        "RequestRecord": "RequestRecord",
    },
)
#: What `token_service.admin._public` and `ClientKey.public` leave out.
_ADMIN["Account"] = _without(
    _ADMIN["Account"], "access_exp", "cooling_until_ms", "last_used_ms", "device_id", "session_id"
)
_ADMIN["ClientKey"] = _without(_ADMIN["ClientKey"], "secret_hash")
_ADMIN["AdminKeyPatchBody"] = {
    **_without(_ADMIN["AdminKeyCreateBody"], "name"),
    "title": "AdminKeyPatchBody",
    "description": "Only the fields sent change; `null` clears a limit, the model list or the expiry.",
    "properties": {
        "name": _ADMIN["AdminKeyCreateBody"]["properties"]["name"],
        **{
            k: v
            for k, v in _ADMIN["AdminKeyCreateBody"]["properties"].items()
            if k not in ("name", "enabled")
        },
        "enabled": BOOL,
    },
}

# ---------------------------------------------------------------- OpenAI chat stream

_TOOL_CALL_DELTA = obj(
    {
        "index": INT,
        "id": STR,
        "type": const("function"),
        "function": obj({"name": STR, "arguments": STR}, required=()),
    },
    required=["index"],
)
_HAND_OPENAI: dict[str, Schema] = {
    "ChatCompletionChunk": obj(
        {
            "id": STR,
            "object": const("chat.completion.chunk"),
            "created": INT,
            "model": STR,
            "choices": array(
                obj(
                    {
                        "index": INT,
                        "delta": obj(
                            {
                                "role": const("assistant"),
                                "content": STR,
                                "reasoning_content": STR,
                                "tool_calls": array(_TOOL_CALL_DELTA),
                            },
                            required=(),
                        ),
                        "logprobs": NULL,
                        "finish_reason": nullable(STR),
                    }
                )
            ),
            "usage": nullable(ref("OpenAIUsageOut")),
        },
        required=["id", "object", "created", "model", "choices"],
        description="One `data:` chunk; with `stream_options.include_usage` the last has `choices: []` and "
        "`usage`, and every other `usage: null`.",
    ),
    "ChatCompletionStreamEvent": {
        "description": "The JSON of each `data:` line: a chunk, an in-band error after the first byte, and "
        "the literal `[DONE]` last. Comment lines (`: keep-alive`) may come while Kimi thinks.",
        "oneOf": [ref("ChatCompletionChunk"), ref("OpenAIError"), const("[DONE]")],
    },
}

# ---------------------------------------------------------------- Anthropic stream

_BLOCK_START = {
    "oneOf": [
        obj({"type": const("text"), "text": STR}),
        obj({"type": const("thinking"), "thinking": STR, "signature": STR}),
        obj({"type": const("tool_use"), "id": STR, "name": STR, "input": {"type": "object"}}),
    ]
}
_BLOCK_DELTA = {
    "oneOf": [
        obj({"type": const("text_delta"), "text": STR}),
        obj({"type": const("thinking_delta"), "thinking": STR}),
        obj({"type": const("signature_delta"), "signature": STR}),
        obj({"type": const("input_json_delta"), "partial_json": STR}),
    ]
}
_HAND_ANTHROPIC: dict[str, Schema] = {
    "AnthropicContentBlockStartEvent": obj(
        {"type": const("content_block_start"), "index": INT, "content_block": _BLOCK_START}
    ),
    "AnthropicContentBlockDeltaEvent": obj(
        {"type": const("content_block_delta"), "index": INT, "delta": _BLOCK_DELTA}
    ),
    "AnthropicContentBlockStopEvent": obj({"type": const("content_block_stop"), "index": INT}),
    "AnthropicMessageStopEvent": obj({"type": const("message_stop")}),
    "AnthropicPingEvent": obj({"type": const("ping")}),
    "MessagesStreamEvent": {
        "description": "The JSON of each event's `data:`; the SSE `event:` name equals its `type`. Order: "
        "message_start, per block content_block_start / _delta… / _stop, message_delta, message_stop; ping "
        "while Kimi thinks; error (in band) after the first byte.",
        **one_of(
            "AnthropicMessageStartEvent",
            "AnthropicContentBlockStartEvent",
            "AnthropicContentBlockDeltaEvent",
            "AnthropicContentBlockStopEvent",
            "AnthropicMessageDeltaEvent",
            "AnthropicMessageStopEvent",
            "AnthropicPingEvent",
            "AnthropicErrorEvent",
        ),
    },
}

# ---------------------------------------------------------------- Gemini stream

_HAND_GEMINI: dict[str, Schema] = {
    "GenerateContentResponse": obj(
        {
            "candidates": array(
                obj(
                    {
                        "content": obj(
                            {
                                "parts": array(one_of("GeminiTextPart", "GeminiFunctionCallPart")),
                                "role": const("model"),
                            }
                        ),
                        "index": INT,
                        "finishReason": {"enum": ["STOP", "MAX_TOKENS", "SAFETY"]},
                    },
                    required=["content", "index"],
                )
            ),
            "usageMetadata": ref("GeminiUsageMetadata"),
            "modelVersion": STR,
            "responseId": STR,
        },
        required=["candidates"],
    ),
    "GenerateContentStreamEvent": {
        "description": "With `alt=sse`, the JSON of each `data:` line: a GenerateContentResponse chunk (the "
        "last with `finishReason` and `usageMetadata`), or an in-band error.",
        **one_of("GenerateContentResponse", "GeminiError"),
    },
    "GenerateContentStreamArray": {
        "description": "Without `alt=sse`: one JSON array of chunks, written as they come.",
        **array(ref("GenerateContentResponse")),
    },
}

# ---------------------------------------------------------------- Responses objects and events

_OUTPUT_TEXT = obj(
    {"type": const("output_text"), "annotations": array({}), "logprobs": array({}), "text": STR}
)
_SUMMARY_TEXT = obj({"type": const("summary_text"), "text": STR})
_SEQ: Final = {"sequence_number": INT}


def _event(kinds: list[str], fields: Mapping[str, Schema]) -> Schema:
    kind = const(kinds[0]) if len(kinds) == 1 else {"enum": kinds}
    return obj({"type": kind, **_SEQ, **fields})


_HAND_RESPONSES: dict[str, Schema] = {
    "ResponseOutputText": _OUTPUT_TEXT,
    "ResponseSummaryText": _SUMMARY_TEXT,
    "ResponseOutputItem": {
        "oneOf": [
            obj(
                {
                    "id": STR,
                    "type": const("message"),
                    "status": {"enum": ["in_progress", "completed"]},
                    "role": const("assistant"),
                    "content": array(ref("ResponseOutputText")),
                }
            ),
            obj({"id": STR, "type": const("reasoning"), "summary": array(ref("ResponseSummaryText"))}),
            obj(
                {
                    "id": STR,
                    "type": const("function_call"),
                    "status": {"enum": ["in_progress", "completed"]},
                    "arguments": STR,
                    "call_id": STR,
                    "name": STR,
                }
            ),
        ]
    },
    "ResponseUsage": obj(
        {
            "input_tokens": INT,
            "input_tokens_details": obj({"cached_tokens": INT}),
            "output_tokens": INT,
            "output_tokens_details": obj({"reasoning_tokens": INT}),
            "total_tokens": INT,
        }
    ),
    "Response": obj(
        {
            "id": STR,
            "object": const("response"),
            "created_at": INT,
            "status": {"enum": ["in_progress", "completed", "incomplete", "failed"]},
            "error": nullable(obj({"code": STR, "message": STR})),
            "incomplete_details": nullable(obj({"reason": const("max_output_tokens")})),
            "model": STR,
            "output": array(ref("ResponseOutputItem")),
            "temperature": {"type": "number"},
            "top_p": {"type": "number"},
            "truncation": {"enum": ["auto", "disabled"]},
            "usage": nullable(ref("ResponseUsage")),
            "user": NULL,
            "instructions": nullable(STR),
            "max_output_tokens": nullable(INT),
            "metadata": {"type": "object", "additionalProperties": STR},
            "parallel_tool_calls": BOOL,
            "previous_response_id": nullable(STR),
            "reasoning": obj({"effort": nullable(STR), "summary": nullable(STR)}),
            "store": BOOL,
            "text": obj({"format": obj({"type": STR}, required=["type"])}),
            "tool_choice": {"anyOf": [STR, obj({"type": STR, "name": nullable(STR)})]},
            "tools": array(obj({"type": const("function"), "name": STR}, required=["type", "name"])),
        },
        required=["id", "object", "created_at", "status", "error", "model", "output", "usage"],
        description="The response object; the request's settings are echoed as OpenAI does.",
    ),
    "ResponseLifecycleEvent": _event(
        [
            "response.created",
            "response.in_progress",
            "response.completed",
            "response.incomplete",
            "response.failed",
        ],
        {"response": ref("Response")},
    ),
    "ResponseOutputItemEvent": _event(
        ["response.output_item.added", "response.output_item.done"],
        {"output_index": INT, "item": ref("ResponseOutputItem")},
    ),
    "ResponseContentPartEvent": _event(
        ["response.content_part.added", "response.content_part.done"],
        {"item_id": STR, "output_index": INT, "content_index": INT, "part": ref("ResponseOutputText")},
    ),
    "ResponseOutputTextDeltaEvent": _event(
        ["response.output_text.delta"],
        {"item_id": STR, "output_index": INT, "content_index": INT, "delta": STR, "logprobs": array({})},
    ),
    "ResponseOutputTextDoneEvent": _event(
        ["response.output_text.done"],
        {"item_id": STR, "output_index": INT, "content_index": INT, "text": STR, "logprobs": array({})},
    ),
    "ResponseReasoningSummaryPartEvent": _event(
        ["response.reasoning_summary_part.added", "response.reasoning_summary_part.done"],
        {"item_id": STR, "output_index": INT, "summary_index": INT, "part": ref("ResponseSummaryText")},
    ),
    "ResponseReasoningSummaryTextDeltaEvent": _event(
        ["response.reasoning_summary_text.delta"],
        {"item_id": STR, "output_index": INT, "summary_index": INT, "delta": STR},
    ),
    "ResponseReasoningSummaryTextDoneEvent": _event(
        ["response.reasoning_summary_text.done"],
        {"item_id": STR, "output_index": INT, "summary_index": INT, "text": STR},
    ),
    "ResponseFunctionCallArgumentsDeltaEvent": _event(
        ["response.function_call_arguments.delta"], {"item_id": STR, "output_index": INT, "delta": STR}
    ),
    "ResponseFunctionCallArgumentsDoneEvent": _event(
        ["response.function_call_arguments.done"],
        {"item_id": STR, "output_index": INT, "name": STR, "arguments": STR},
    ),
    "ResponseDeleted": obj({"id": STR, "object": const("response"), "deleted": const(True)}),
    "ResponseInputItemList": obj(
        {
            "object": const("list"),
            "data": array(obj({"id": STR, "type": STR}, additionalProperties=True)),
            "first_id": nullable(STR),
            "last_id": nullable(STR),
            "has_more": BOOL,
        }
    ),
}
_HAND_RESPONSES["ResponsesStreamEvent"] = {
    "description": "The JSON of each event's `data:`; the SSE `event:` name equals its `type`, and "
    "`sequence_number` counts from 0. A failure after the first byte is `response.failed`.",
    **one_of(*(name for name in _HAND_RESPONSES if name.endswith("Event"))),
}

# ---------------------------------------------------------------- admin answers

_TOKEN_INFO: Final = {"type": "object", "description": "What the token's JWT claims say (or `valid: false`)."}
_KEY = ref("ClientKey")
_HAND_ADMIN: dict[str, Schema] = {
    "AdminError": obj(
        {"success": const(False), "error": STR, "type": STR, "param": nullable(STR)},
        description="Every admin error; `type` is the error kind (e.g. `authentication`, `not_found`).",
    ),
    "AdminSuccess": obj({"success": const(True)}),
    "AdminExtractResult": {
        "oneOf": [
            obj({"success": const(True), "token": STR, "token_info": _TOKEN_INFO}),
            obj({"success": const(False), "error": STR}),
        ]
    },
    "AdminSaveResult": obj(
        {"success": const(True), "account_id": STR, "created": BOOL, "token_info": _TOKEN_INFO}
    ),
    "AdminAuthStatus": obj({"has_token": BOOL, "accounts": array(ref("Account"))}),
    "AdminClearResult": obj({"success": const(True), "removed": INT, "message": STR}),
    "AdminTokenLive": obj({"live": BOOL}),
    "AdminAccountList": obj({"accounts": array(ref("Account"))}),
    "AdminAddResult": obj(
        {
            "success": BOOL,
            "added": array(obj({"account_id": STR, "created": BOOL, "kind": STR})),
            "errors": array(obj({"line": INT, "error": STR})),
        }
    ),
    "AdminAccountResult": obj({"success": const(True), "account": ref("Account")}),
    "AdminProbeResult": obj({"result": ref("AdminProbeVerdict"), "account": ref("Account")}),
    "AdminProbeVerdict": {"enum": ["ok", "auth_failed", "rate_limited", "error", "expired"]},
    "AdminProbeAllResult": obj(
        {"results": {"type": "object", "additionalProperties": ref("AdminProbeVerdict")}},
        description="Each enabled account's verdict, by account id.",
    ),
    "AdminKeySecret": obj(
        {"success": const(True), "key": _KEY, "secret": STR},
        description="The key and its secret, shown this once (it is stored hashed).",
    ),
    "AdminKeyList": obj({"keys": array(_KEY)}),
    "AdminKey": obj({"key": _KEY}),
    "AdminKeyResult": obj({"success": const(True), "key": _KEY}),
    "AdminKeyUsage": obj(
        {
            "key": _KEY,
            "days": {
                "type": "object",
                "description": "{UTC day: {model: {counter: n, …, ttft_ms_avg: ms or null}}}, newest first.",
                "additionalProperties": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": {"type": ["number", "null"]},
                    },
                },
            },
        }
    ),
    "AdminRequestLog": obj(
        {
            "requests": array({"allOf": [ref("RequestRecord"), obj({"id": STR})]}),
            "next": nullable(STR),
        },
        description="A page of the request log, newest first; `next` is the `before` of the next page.",
    ),
    "AdminSystem": obj(
        {
            "jobs": obj({"stream_length": INT, "pending": INT, "dead_letter": INT}),
            "workers": array(obj({"name": STR, "last_heartbeat_ms": INT, "age_s": NUM, "alive": BOOL})),
            "accounts": obj(
                {
                    "total": INT,
                    "by_state": {"type": "object", "additionalProperties": INT},
                    "by_kind": {"type": "object", "additionalProperties": INT},
                    "passthrough": INT,
                }
            ),
            "stale_after_s": NUM,
            "now_ms": INT,
        },
        description="The job stream (queued or running, held by a worker, dead letters), the workers' "
        "heartbeats (alive while at most `stale_after_s` old) and the pool by state and kind.",
    ),
}

# ---------------------------------------------------------------- service

_HAND_SERVICE: dict[str, Schema] = {
    "Health": obj({"status": const("ok")}),
}

COMPONENTS: Final[dict[str, Schema]] = {
    **_OPENAI,
    **_HAND_OPENAI,
    **_ANTHROPIC,
    **_HAND_ANTHROPIC,
    **_GEMINI,
    **_HAND_GEMINI,
    **_RESPONSES,
    **_HAND_RESPONSES,
    **_ADMIN,
    **_HAND_ADMIN,
    **_HAND_SERVICE,
}
