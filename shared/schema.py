"""The canonical schema: one chat request and the reply events, as msgspec Structs.

Adapters turn each dialect's wire request into a `ChatRequest` and each `Event` back into wire bytes. Workers
receive `Job`s on the job stream and publish `Event` batches on the job's reply stream. Internal messages
forbid unknown fields; codecs are module-level constants built once.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Internal(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base of internal messages (stream entries): strict, compact."""


# ---------------------------------------------------------------- request


class TextPart(_Internal, tag="text"):
    text: str


AttachmentKind = Literal["image", "file"]
#: Where the client put the bytes: inline (base64, data URL, plain text) or behind a URL the gateway fetched.
AttachmentSource = Literal["inline", "url"]


class AttachmentPart(_Internal, tag="attachment"):
    """An image or document of the conversation, by reference: its bytes wait in Redis under the job's own key
    (shared/attachments.py), never inside the job stream. `kind` follows the sniffed bytes, not the client's
    part type, so an image always takes Kimi's image path."""

    #: Hex SHA-256 of the bytes: the key of the bytes in Redis and of the account's upload cache.
    sha256: str
    #: The type sniffed from the bytes (image/png, application/pdf, text/plain …).
    mime: str
    #: A file name for Kimi, with an extension that matches `mime`.
    name: str
    #: Bytes.
    size: int
    kind: AttachmentKind
    source: AttachmentSource


Part = TextPart | AttachmentPart

Role = Literal["system", "user", "assistant", "tool"]


class ToolCall(_Internal):
    """A call the model made: in an assistant message of the history, or in a `ToolCallEvent` of the answer."""

    #: The id the client sees and sends back with the result (OpenAI `tool_calls[].id`, Anthropic `tool_use.id`).
    id: str
    name: str
    #: The arguments as compact JSON text of an object (OpenAI and Responses carry it as a string already).
    arguments: str


class Message(_Internal):
    role: Role
    content: str | list[Part]
    #: An assistant message's calls (OpenAI `tool_calls`, Anthropic `tool_use` blocks, Gemini `functionCall`).
    tool_calls: list[ToolCall] | None = None
    #: A `tool` message: the call it answers (OpenAI `tool_call_id`, Anthropic `tool_use_id`, Gemini id or name).
    tool_call_id: str | None = None
    #: A `tool` message: the tool's name, when the dialect says it (Gemini `functionResponse.name`).
    name: str | None = None
    #: A `tool` message whose result is an error (Anthropic `is_error`).
    is_error: bool = False

    def text(self) -> str:
        """The message's text parts joined; attachments carry no text."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))


class ChatOptions(_Internal):
    """What the caller asked of Kimi, resolved from the model id, its flags and the request body."""

    search: bool = False
    #: Suppress citations in the answer text (kimi-free-api `-silent`).
    silent: bool = False
    thinking: bool = False
    research: bool = False
    math: bool = False
    k1: bool = False
    #: A conversation to continue (kimi-free-api `conversation_id`); "none"-like values only keep the chat.
    conversation_id: str | None = None
    #: Keep the upstream chat afterwards instead of deleting it (trace cleanup).
    keep_chat: bool = False


class ToolSpec(_Internal):
    """A tool the client declared, whatever its dialect called it (function, tool, functionDeclaration)."""

    name: str
    description: str = ""
    #: The JSON Schema of the arguments, as compact JSON text (`{}` when the client gave none).
    parameters: str = "{}"


class ToolChoice(_Internal):
    """How the model may use the tools: `auto`, `none`, `required` (some tool), or `named` (`name` only)."""

    mode: Literal["auto", "none", "required", "named"] = "auto"
    name: str | None = None
    #: Gemini `allowedFunctionNames`: the calls are restricted to these (None: every declared tool).
    allowed: list[str] | None = None


class ChatRequest(_Internal):
    request_id: str
    model: str
    messages: list[Message]
    stream: bool = True
    options: ChatOptions = msgspec.field(default_factory=ChatOptions)
    #: Unix seconds after which the job is worthless (the gateway has given up).
    deadline_s: float = 0.0
    #: The dialect that asked, for logs and metrics only.
    dialect: str = "openai"
    #: Restrict the lease to these account ids (pass-through tokens become ephemeral accounts).
    account_ids: list[str] | None = None
    #: Tools the model may call; empty when the client declared none.
    tools: list[ToolSpec] = msgspec.field(default_factory=list)
    tool_choice: ToolChoice = msgspec.field(default_factory=ToolChoice)
    #: False: at most one call per answer (OpenAI `parallel_tool_calls`, Anthropic `disable_parallel_tool_use`).
    parallel_tool_calls: bool = True


class Job(_Internal):
    request: ChatRequest
    reply_key: str
    #: Unix seconds the gateway enqueued it, to measure queue wait.
    enqueued_s: float = 0.0


# ---------------------------------------------------------------- reply events

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


class Start(_Internal, tag="start"):
    """The worker took the job and Kimi accepted the request."""

    conversation_id: str | None = None
    account_id: str | None = None
    #: The public name of the serving account's kind (`kimi_web`, `api_key`): the `x-upstream-kind` header.
    kind: str | None = None


class TextDelta(_Internal, tag="text"):
    text: str


class ReasoningDelta(_Internal, tag="reasoning"):
    text: str


class Citation(_Internal, tag="cite"):
    index: int
    title: str
    url: str


class ToolCallEvent(_Internal, tag="tool_call"):
    """One complete, validated call of the answer (`index` counts calls from 0 within the answer).

    Calls are published whole: the web lanes validate each against its tool's schema before anything of it is
    sent. Renderers split `call.arguments` into their dialect's argument fragments when they stream.
    """

    index: int
    call: ToolCall


class Usage(_Internal, tag="usage"):
    """Token counts; `estimated` is true when counted by the gateway's estimator, not by Kimi."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = True


class Keepalive(_Internal, tag="ping"):
    """Kimi is still thinking (heartbeat frames); keeps the gateway's idle timer alive."""


class Done(_Internal, tag="done"):
    finish_reason: FinishReason = "stop"
    conversation_id: str | None = None


class ErrorEvent(_Internal, tag="error"):
    kind: str
    message: str
    retryable: bool = False
    status: int | None = None
    retry_after_s: float | None = None


Event = Start | TextDelta | ReasoningDelta | Citation | ToolCallEvent | Usage | Keepalive | Done | ErrorEvent
TERMINAL_EVENTS = (Done, ErrorEvent)

# ---------------------------------------------------------------- codecs, built once

msgpack_encoder = msgspec.msgpack.Encoder()
job_decoder = msgspec.msgpack.Decoder(Job)
#: One reply stream entry holds a batch of events that were ready together.
events_decoder = msgspec.msgpack.Decoder(list[Event])
event_decoder = msgspec.msgpack.Decoder(Event)


def encode_events(events: list[Event]) -> bytes:
    return msgpack_encoder.encode(events)


def encode_job(job: Job) -> bytes:
    return msgpack_encoder.encode(job)
