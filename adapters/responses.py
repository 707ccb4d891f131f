"""OpenAI Responses API (`POST /v1/responses`): wire request → `ChatRequest`, canonical events → the exact bytes.

Wire format: ../shared/spec/tools-and-attachments.md §4; openai-python's `types/responses/` are the final word.

Request: `input` (a string, or items: `message` with user / assistant / system / developer roles and
`input_text` / `output_text` / `refusal` / `input_image` / `input_file` parts, `function_call`,
`function_call_output`; `reasoning` and `web_search_call` items are accepted and skipped, Kimi cannot replay
them), `instructions` (a system message first), `tools` (flat `function` tools; `web_search` /
`web_search_preview` turn on Kimi's own search; every other built-in type, e.g. Codex's `namespace`, `custom`
and `local_shell`, is accepted and ignored: Kimi cannot run it), `tool_choice` (none / auto / required /
`{"type": "function", "name"}`), `parallel_tool_calls`, `reasoning.effort` (`none` / `minimal` turn Kimi's
thinking off, any other effort on), `max_output_tokens` (the gateway cuts the answer; the response is then
`incomplete` with `incomplete_details.reason = "max_output_tokens"`), `text.format` (text; json_object and
json_schema as far as Kimi allows: adapters/json_output.py adds a hint to the turn and cleans a non-stream
answer's code fence; the format is echoed), `metadata` (echoed), `store` (also keeps the Kimi chat),
`include` (every value of the SDK's `ResponseIncludable`, none adding anything; another is a 400),
`truncation` (`auto` / `disabled`, echoed; another is a 400), `user`, `temperature`, `top_p` (accepted).
`previous_response_id` names a stored response to continue (gateway/stored_responses.py: natively in its Kimi
chat when it can, else its history before this request's input; its instructions are not carried over).

Response: a `response` object with a `resp_…` id; `output` holds a `reasoning` item (Kimi's thinking as its
summary), a `message` item with one `output_text` part, then one `function_call` item per call, in that order.
A stream is named SSE events (`event: <type>` + `data:`), each with a `sequence_number` from 0:
`response.created`, `response.in_progress`, then per item `response.output_item.added`, its content events and
`response.output_item.done`, and last `response.completed` (or `response.incomplete` after a cut). An error
after the first byte is `response.failed` (the output so far, the error in `response.error`) followed by an
`error` event (see `ResponsesWriter.error`); the stream then closes, never with a made-up completion.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Final

import msgspec

from adapters import json_output
from adapters.attachments import Place, from_base64, from_url, refuse_file_id
from adapters.base import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    Parsed,
    ReplyOptions,
    RequestContext,
    sse_comment,
    sse_event,
)
from adapters.common import (
    OPENAI_BOUNDS,
    ChoiceMode,
    chat_options,
    check_bounds,
    check_named_tool,
    compact_json,
    decode_body,
    model_spec,
    require_text,
)
from adapters.dispatch import Ending, FunctionDialect
from adapters.json_output import JsonKind
from adapters.openai import error_json
from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest, GatewayError
from shared.schema import ChatRequest, Message, Part, TextPart, ToolCall, ToolChoice, ToolSpec

NAME: Final = "responses"

# ---------------------------------------------------------------- wire request (unknown fields ignored)


class _Wire(msgspec.Struct, omit_defaults=True):
    pass


class _Part(_Wire):
    type: str
    text: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class _Item(_Wire):
    #: Easy input messages (`{"role", "content"}`) carry no type.
    type: str = "message"
    role: str | None = None
    content: str | list[_Part] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[_Part] | None = None


class _Tool(_Wire):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


class _ToolChoice(_Wire):
    type: str
    name: str | None = None


class _Reasoning(_Wire):
    effort: str | None = None
    summary: str | None = None


class _Format(_Wire):
    type: str = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class _Text(_Wire):
    format: _Format | None = None


class _Request(_Wire):
    model: str = "kimi"
    input: str | list[_Item] | None = None
    instructions: str | None = None
    stream: bool | None = None
    tools: list[_Tool] | None = None
    tool_choice: str | _ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    reasoning: _Reasoning | None = None
    max_output_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    text: _Text | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    previous_response_id: str | None = None
    include: list[str] | None = None
    truncation: str | None = None
    use_search: bool | None = None


_request_decoder: Final = msgspec.json.Decoder(_Request)
_json_encoder: Final = msgspec.json.Encoder()

_ROLES: Final = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "refusal", "text", "summary_text"})
#: Input items Kimi cannot replay: skipped.
_SKIPPED_ITEMS: Final = frozenset({"reasoning", "web_search_call"})
_SEARCH_TOOLS: Final = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26"})
_THINKING_OFF: Final = frozenset({"none", "minimal"})
_CHOICE_MODES: Final[dict[str, ChoiceMode]] = {"none": "none", "auto": "auto", "required": "required"}
#: openai-python's `ResponseIncludable`: accepted; none adds anything (Kimi has no encrypted reasoning, no
#: logprobs, no image or tool outputs to repeat), so the response is the same with or without them.
_INCLUDABLE: Final = frozenset(
    {
        "file_search_call.results",
        "web_search_call.results",
        "web_search_call.action.sources",
        "message.input_image.image_url",
        "computer_call_output.output.image_url",
        "code_interpreter_call.outputs",
        "reasoning.encrypted_content",
        "message.output_text.logprobs",
    }
)
_TRUNCATIONS: Final = frozenset({"auto", "disabled"})
#: `response.error.code` of a failed response, by error kind (the SDK's `ResponseError` codes; Codex retries
#: `rate_limit_exceeded`); every other failure is a `server_error`.
_FAILURE_CODES: Final = {"rate_limited": "rate_limit_exceeded", "content_filter": "invalid_prompt"}
_JSON_FORMATS: Final[dict[str, JsonKind]] = {"json_object": "json_object", "json_schema": "json_schema"}


class ResponsesReply(ReplyOptions, frozen=True, kw_only=True):
    """`ReplyOptions` plus the request fields the response object echoes."""

    echo: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The request's input as items (a string input as one user message), for `GET …/input_items`.
    input_items: list[dict[str, Any]] = msgspec.field(default_factory=list)
    #: Where the writer puts the finished response object, for the gateway to store (`store`).
    sink: list[dict[str, Any]] = msgspec.field(default_factory=list)
    #: Where the writer puts the Kimi conversation the answer ran in, when its chat was kept (web lanes).
    kept_chat: list[str] = msgspec.field(default_factory=list)


def parse(body: bytes, ctx: RequestContext) -> Parsed:
    """The canonical request of a `POST /v1/responses` body; raises BadRequest / ModelNotFound."""
    wire = decode_body(body, _request_decoder.decode)
    text_format = _text_format(wire.text.format if wire.text is not None else None)
    _check_include(wire.include or [])
    if wire.truncation is not None and wire.truncation not in _TRUNCATIONS:
        raise BadRequest(
            f"Invalid value for `truncation`: `{wire.truncation}` (expected `auto` or `disabled`).",
            param="truncation",
        )
    spec = model_spec(wire.model.strip(), f"The model `{wire.model.strip()}` does not exist.")
    messages: list[Message] = []
    if wire.instructions:
        messages.append(Message(role="system", content=wire.instructions))
    messages.extend(_input(wire.input, ctx.attachments, len(messages)))
    require_text(messages, ctx.attachments, "input", "The request holds no text; `input` needs some.")
    if text_format.type in _JSON_FORMATS:
        schema = compact_json(text_format.schema) if text_format.schema is not None else None
        messages = _with_hint(messages, json_output.hint(_JSON_FORMATS[text_format.type], schema))
    check_bounds(OPENAI_BOUNDS, (), messages, stop_param="stop", messages_param="input")
    tools, search = _tools(wire.tools or [])
    # A stored response keeps its Kimi chat, so that `previous_response_id` can continue it natively.
    options = chat_options(spec, search=search or bool(wire.use_search))
    options = msgspec.structs.replace(options, keep_chat=wire.store is not False)
    effort = wire.reasoning.effort if wire.reasoning is not None else None
    if effort is not None:
        options = msgspec.structs.replace(options, thinking=effort not in _THINKING_OFF)
    request = ChatRequest(
        request_id=ctx.request_id,
        model=wire.model.strip(),
        messages=messages,
        stream=bool(wire.stream),
        options=options,
        dialect=NAME,
        tools=tools,
        tool_choice=_tool_choice(wire.tool_choice, tools),
        parallel_tool_calls=wire.parallel_tool_calls is not False,
    )
    echo = {
        "instructions": wire.instructions,
        "max_output_tokens": wire.max_output_tokens,
        "metadata": wire.metadata or {},
        "parallel_tool_calls": wire.parallel_tool_calls is not False,
        "previous_response_id": wire.previous_response_id,
        "reasoning": {"effort": effort, "summary": wire.reasoning.summary if wire.reasoning else None},
        "store": wire.store is not False,
        "text": {"format": {"type": text_format.type, **msgspec.to_builtins(text_format)}},
        "tool_choice": _choice_echo(wire.tool_choice),
        "tools": [_tool_echo(t) for t in tools],
        "truncation": wire.truncation or "disabled",
    }
    reply = ResponsesReply(max_tokens=wire.max_output_tokens, echo=echo, input_items=_input_items(body, ctx))
    return Parsed(request, reply)


def _text_format(wire: _Format | None) -> _Format:
    """`text.format`: text, json_object, or json_schema with its `name` and `schema`; else a 400 naming it."""
    if wire is None:
        return _Format()
    if wire.type not in ("text", *_JSON_FORMATS):
        raise BadRequest(f"Unsupported `text.format` type `{wire.type}`.", param="text.format.type")
    if wire.type == "json_schema":
        if not wire.name:
            raise BadRequest("A `json_schema` format needs `name`.", param="text.format.name")
        if wire.schema is None:
            raise BadRequest("A `json_schema` format needs `schema`.", param="text.format.schema")
        return wire
    return _Format(type=wire.type)


def _check_include(include: list[str]) -> None:
    for i, value in enumerate(include):
        if value not in _INCLUDABLE:
            raise BadRequest(f"Invalid value for `include[{i}]`: `{value}`.", param="include")


def _with_hint(messages: list[Message], text: str) -> list[Message]:
    """The messages with `text` after the last user message's text (the turn Kimi answers; a continued Connect
    chat sends only that one), or as a last system message when no user message holds text."""
    for position in range(len(messages) - 1, -1, -1):
        message = messages[position]
        if message.role == "user":
            content: str | list[Part] = (
                f"{message.content}\n\n{text}"
                if isinstance(message.content, str)
                else [*message.content, TextPart(text=text)]
            )
            return [*messages[:position], Message(role="user", content=content), *messages[position + 1 :]]
    return [*messages, Message(role="system", content=text)]


def _input(wire: str | list[_Item] | None, attachments: list[AttachmentInput], first: int) -> list[Message]:
    """The input items as canonical messages: consecutive `function_call` items join one assistant message."""
    if wire is None:
        raise BadRequest("`input` is required.", param="input")
    if isinstance(wire, str):
        return [Message(role="user", content=wire)]
    messages: list[Message] = []
    for i, item in enumerate(wire):
        param = f"input[{i}]"
        if item.type in _SKIPPED_ITEMS:
            continue
        if item.type == "message":
            role = _ROLES.get(item.role or "")
            if role is None:
                raise BadRequest(f"Unknown role `{item.role}`.", param=f"{param}.role")
            content = _content(item.content, param, first + len(messages), attachments)
            messages.append(Message(role=role, content=content))  # type: ignore[arg-type]
        elif item.type == "function_call":
            if not item.call_id or not item.name:
                raise BadRequest("A `function_call` item needs `call_id` and `name`.", param=param)
            call = ToolCall(item.call_id, item.name, item.arguments or "{}")
            last = messages[-1] if messages else None
            if last is not None and last.role == "assistant" and last.tool_calls is not None:
                last.tool_calls.append(call)
            elif last is not None and last.role == "assistant":
                messages[-1] = Message(role="assistant", content=last.content, tool_calls=[call])
            else:
                messages.append(Message(role="assistant", content="", tool_calls=[call]))
        elif item.type == "function_call_output":
            if not item.call_id:
                raise BadRequest("A `function_call_output` item needs `call_id`.", param=f"{param}.call_id")
            output = _content(item.output, f"{param}.output", first + len(messages), attachments)
            messages.append(Message(role="tool", content=output, tool_call_id=item.call_id))
        else:
            raise BadRequest(f"Input items of type `{item.type}` are not supported.", param=f"{param}.type")
    return messages


def _input_items(body: bytes, ctx: RequestContext) -> list[dict[str, Any]]:
    """The body's `input` as the items `GET /v1/responses/{id}/input_items` lists, each with an id."""
    raw = msgspec.json.decode(body).get("input")
    items = (
        raw if isinstance(raw, list) else [{"role": "user", "content": [{"type": "input_text", "text": raw}]}]
    )
    out = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            kept = {"type": "message", **item} if "role" in item else dict(item)
            kept.setdefault("id", f"in_{ctx.request_id}_{i}")
            out.append(kept)
    return out


def _content(
    wire: str | list[_Part] | None, param: str, index: int, attachments: list[AttachmentInput]
) -> str | list[Part]:
    if wire is None or isinstance(wire, str):
        return wire or ""
    parts: list[Part] = []
    for j, part in enumerate(wire):
        place = Place(f"{param}.content[{j}]", index, j)
        if part.type in _TEXT_PARTS:
            parts.append(TextPart(text=part.text or ""))
        else:
            attachments.append(_attachment(part, place))
    return parts


def _attachment(part: _Part, place: Place) -> AttachmentInput:
    if part.type == "input_image":
        if part.image_url:
            return from_url(part.image_url, place, kind="image")
        if part.file_id:
            raise refuse_file_id(place)
        raise BadRequest("An `input_image` part needs `image_url`.", param=place.param)
    if part.type == "input_file":
        if part.file_data:
            if part.file_data.startswith("data:"):
                return from_url(part.file_data, place, name=part.filename)
            return from_base64(part.file_data, place, name=part.filename)
        if part.file_url:
            return from_url(part.file_url, place, name=part.filename)
        if part.file_id:
            raise refuse_file_id(place)
        raise BadRequest("An `input_file` part needs `file_data` or `file_url`.", param=place.param)
    raise BadRequest(f"Unsupported content part of type `{part.type}`.", param=place.param)


def _tools(wire: list[_Tool]) -> tuple[list[ToolSpec], bool]:
    """Function tools as specs, and whether a web search tool asks for Kimi's search; other types are ignored."""
    specs, search = [], False
    for i, tool in enumerate(wire):
        if tool.type in _SEARCH_TOOLS:
            search = True
        elif tool.type == "function":
            if not tool.name:
                raise BadRequest("A function tool needs `name`.", param=f"tools[{i}].name")
            specs.append(ToolSpec(tool.name, tool.description or "", compact_json(tool.parameters or {})))
    return specs, search


def _tool_choice(wire: str | _ToolChoice | None, tools: list[ToolSpec]) -> ToolChoice:
    if wire is None or not tools:
        return ToolChoice()
    if isinstance(wire, str):
        if wire not in _CHOICE_MODES:
            raise BadRequest(f"Invalid value for `tool_choice`: `{wire}`.", param="tool_choice")
        return ToolChoice(_CHOICE_MODES[wire])
    if wire.type == "function" and wire.name:
        check_named_tool(tools, wire.name, "tool_choice")
        return ToolChoice("named", wire.name)
    raise BadRequest(f"Tool choice of type `{wire.type}` is not supported.", param="tool_choice")


def _choice_echo(wire: str | _ToolChoice | None) -> Any:
    if wire is None:
        return "auto"
    return wire if isinstance(wire, str) else {"type": wire.type, "name": wire.name}


def _tool_echo(spec: ToolSpec) -> dict[str, Any]:
    parameters = msgspec.json.decode(spec.parameters)
    return {
        "type": "function",
        "name": spec.name,
        "description": spec.description,
        "parameters": parameters,
        "strict": False,
    }


# ---------------------------------------------------------------- errors


def error_response(exc: GatewayError, request_id: str) -> tuple[int, dict[str, str], bytes]:
    """The Responses API answers errors in OpenAI's `{"error": {message, type, param, code}}` shape."""
    return exc.status, {}, error_json(exc)


# ---------------------------------------------------------------- rendering


def _usage(ending: Ending) -> dict[str, Any]:
    usage = ending.usage
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


class ResponsesWriter:
    """One response's output items, as stream events or as one body; items are opened and closed in order."""

    keepalive: Final = sse_comment(b"keep-alive")
    echoes_keepalive: Final = False

    def __init__(self, request: ChatRequest, reply: ReplyOptions, ctx: RequestContext) -> None:
        self.stream = request.stream
        self.content_type = SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE
        self._id = f"resp_{request.request_id}"
        self._model = request.model
        self._created = int(ctx.now_s or time.time())
        self._echo: dict[str, Any] = reply.echo if isinstance(reply, ResponsesReply) else {}
        self._sink: list[dict[str, Any]] = reply.sink if isinstance(reply, ResponsesReply) else []
        self._kept_chat: list[str] = reply.kept_chat if isinstance(reply, ResponsesReply) else []
        #: A JSON `text.format`: the non-stream answer's text is cleaned (adapters/json_output.py).
        self._json: JsonKind | None = _JSON_FORMATS.get(
            self._echo.get("text", {}).get("format", {}).get("type")
        )
        self._seq = 0
        #: Finished output items, in order.
        self._output: list[dict[str, Any]] = []
        #: The open item ("reasoning" / "message"), and its text so far.
        self._open: str | None = None
        self._text: list[str] = []

    # -- the response object

    def response(
        self, status: str, ending: Ending | None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The `response` object as the SDK reads it, with the output items finished so far."""
        incomplete = None
        if ending is not None and ending.reason == "max_tokens":
            incomplete = {"reason": "max_output_tokens"}
        return {
            "id": self._id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "error": error,
            "incomplete_details": incomplete,
            "model": self._model,
            "output": list(self._output),
            "temperature": 1.0,
            "top_p": 1.0,
            "usage": _usage(ending) if ending is not None else None,
            "user": None,
            **self._echo,
        }

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        """One named event with the next sequence number; `response.created` and `.in_progress` come first."""
        begin = b""
        if self._seq == 0:  # the relay may ask for a piece's bytes before `head`, so the stream begins here
            snapshot = self.response("in_progress", None)
            begin = self._emit("response.created", {"response": snapshot})
            begin += self._emit("response.in_progress", {"response": snapshot})
        return begin + self._emit(kind, fields)

    def _emit(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return sse_event(kind.encode(), _json_encoder.encode(payload))

    # -- the writer's pieces

    def head(self) -> bytes:
        return b""

    def adopt(self, conversation_id: str) -> None:
        self._kept_chat.append(conversation_id)

    def answer(self, text: str) -> bytes:
        out = self._switch("message")
        self._text.append(text)
        if not self.stream:
            return b""
        fields = {"item_id": self._item_id(), "output_index": len(self._output), "content_index": 0}
        return out + self._event("response.output_text.delta", {**fields, "delta": text, "logprobs": []})

    def reasoning(self, text: str) -> bytes:
        out = self._switch("reasoning")
        self._text.append(text)
        if not self.stream:
            return b""
        fields = {"item_id": self._item_id(), "output_index": len(self._output), "summary_index": 0}
        return out + self._event("response.reasoning_summary_text.delta", {**fields, "delta": text})

    def tool_call(self, index: int, call: ToolCall) -> bytes:
        out = self._switch(None)
        item_id = f"fc_{self._id[5:]}_{index}"
        item = {"id": item_id, "type": "function_call", "status": "in_progress", "arguments": ""}
        item |= {"call_id": call.id, "name": call.name}
        done = item | {"status": "completed", "arguments": call.arguments}
        position = len(self._output)
        self._output.append(done)
        if not self.stream:
            return b""
        fields = {"item_id": item_id, "output_index": position}
        return (
            out
            + self._event("response.output_item.added", {"output_index": position, "item": item})
            + self._event("response.function_call_arguments.delta", {**fields, "delta": call.arguments})
            + self._event(
                "response.function_call_arguments.done",
                {**fields, "name": call.name, "arguments": call.arguments},
            )
            + self._event("response.output_item.done", {"output_index": position, "item": done})
        )

    def finish(self, ending: Ending, text: str) -> bytes:
        out = self.answer(text) if text else b""
        out += self._switch(None)
        final = self._final(ending)
        return out + self._event(f"response.{final['status']}", {"response": final})

    def error(self, exc: GatewayError) -> bytes:
        """`response.failed` (the response so far, `status: failed`, `error: {code, message}` with a code of the
        SDK's `ResponseError`), then the `error` event: `code` / `message` / `param` at its top level as the
        SDK's `ResponseErrorEvent` declares them, and the OpenAI error object under `error` as the live API
        sends it (which is what makes openai-python raise `APIError` from the stream)."""
        body = msgspec.json.decode(error_json(exc))["error"]
        failure = {"code": _FAILURE_CODES.get(exc.kind, "server_error"), "message": exc.message}
        response = self.response("failed", None, failure)
        response["output"] = [*self._output, *self._partial()]
        code = body["code"] or body["type"]
        return self._event("response.failed", {"response": response}) + self._event(
            "error", {"code": code, "message": exc.message, "param": exc.param, "error": body}
        )

    def body(self, ending: Ending, answer: str, reasoning: str) -> bytes:
        self._switch(None)
        return _json_encoder.encode(self._final(ending))

    def _final(self, ending: Ending) -> dict[str, Any]:
        """The finished response (`completed`, or `incomplete` after a cut), also left in the reply's sink."""
        final = self.response("incomplete" if ending.reason == "max_tokens" else "completed", ending)
        self._sink.append(final)
        return final

    # -- items

    def _partial(self) -> list[dict[str, Any]]:
        """The item still open when the answer failed, as far as it got (a message is `incomplete`)."""
        if self._open is None:
            return []
        text = "".join(self._text)
        if self._open == "reasoning":
            return [{"id": self._item_id(), "type": "reasoning", "summary": [_summary_part(text)]}]
        item = {"id": self._item_id(), "type": "message", "status": "incomplete", "role": "assistant"}
        return [item | {"content": [_text_part(text)]}]

    def _item_id(self) -> str:
        prefix = "rs" if self._open == "reasoning" else "msg"
        return f"{prefix}_{self._id[5:]}_{len(self._output)}"

    def _switch(self, kind: str | None) -> bytes:
        """Close the open item unless it is `kind`, then open `kind` (None: open nothing)."""
        if self._open == kind:
            return b""
        out = self._close()
        if kind is None:
            return out
        self._open, self._text = kind, []
        if not self.stream:
            return out
        position, item_id = len(self._output), self._item_id()
        if kind == "reasoning":
            item = {"id": item_id, "type": "reasoning", "summary": []}
            part = {
                "item_id": item_id,
                "output_index": position,
                "summary_index": 0,
                "part": _summary_part(""),
            }
            return (
                out
                + self._event("response.output_item.added", {"output_index": position, "item": item})
                + self._event("response.reasoning_summary_part.added", part)
            )
        item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        part = {"item_id": item_id, "output_index": position, "content_index": 0, "part": _text_part("")}
        return (
            out
            + self._event("response.output_item.added", {"output_index": position, "item": item})
            + self._event("response.content_part.added", part)
        )

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        text, position, item_id = "".join(self._text), len(self._output), self._item_id()
        kind, self._open, self._text = self._open, None, []
        if kind == "reasoning":
            item = {"id": item_id, "type": "reasoning", "summary": [_summary_part(text)]}
            self._output.append(item)
            if not self.stream:
                return b""
            fields = {"item_id": item_id, "output_index": position, "summary_index": 0}
            return (
                self._event("response.reasoning_summary_text.done", {**fields, "text": text})
                + self._event("response.reasoning_summary_part.done", {**fields, "part": _summary_part(text)})
                + self._event("response.output_item.done", {"output_index": position, "item": item})
            )
        if self._json is not None and not self.stream:
            text = json_output.clean(text, self._json)
        part = _text_part(text)
        item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [part],
        }
        self._output.append(item)
        if not self.stream:
            return b""
        fields = {"item_id": item_id, "output_index": position, "content_index": 0}
        return (
            self._event("response.output_text.done", {**fields, "text": text, "logprobs": []})
            + self._event("response.content_part.done", {**fields, "part": part})
            + self._event("response.output_item.done", {"output_index": position, "item": item})
        )


DIALECT: Final = FunctionDialect(NAME, parse, ResponsesWriter, error_response)
