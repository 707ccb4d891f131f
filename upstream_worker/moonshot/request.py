"""The official API's chat request (moonshot-official-api.md §3.1, §5, §6), built from the canonical request.

Messages keep their roles: system, user, assistant (with its native `tool_calls`), tool (with its
`tool_call_id`). Text-only models get string content; a vision model gets parts when the message has images,
each image inlined as a base64 data URL from the bytes the call carries (`images`, by sha256: the job's
attachment bytes, which the platform needs inline: K3 and the vision previews refuse links, §4.2). Documents
would need the platform's file-extract flow (§7) and are refused for now.
The model's row (`ModelSpec.api`) says what else the platform needs: its model id, `thinking.type` for the
models that take it (K2.6, K2.5; never for K3 or K2.7 Code), K3's `reasoning_effort`. Thinking models must get
`reasoning_content` back on every assistant tool-call message (§6); the canonical history does not keep it, so
the request carries a single space, the least the platform accepts. `tool_choice: "required"` goes only to
models that take it; others get `auto` and the platform's documented nudge. Sampling parameters are never sent
(fixed on current models, §4.2). `parallel_tool_calls` is not an API field the platform documents: the
decoder enforces it instead.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping

import msgspec

from shared.errors import BadRequest, ServiceUnavailable
from shared.models import ApiModel, ModelSpec
from shared.schema import AttachmentPart, ChatRequest, Message, Part, TextPart, ToolCall, ToolSpec

#: Moonshot's migration guide for models without `tool_choice: required` (LiteLLM sends the same).
REQUIRED_TOOL_NUDGE = "Please select a tool to handle the current issue."
#: The least `reasoning_content` the platform accepts on a replayed tool-call turn (§6).
MISSING_REASONING = " "


class _Wire(msgspec.Struct, omit_defaults=True):
    pass


class TextContent(_Wire, tag="text", tag_field="type"):
    text: str


class ImageUrl(_Wire):
    url: str


class ImageContent(_Wire, tag="image_url", tag_field="type"):
    image_url: ImageUrl


ContentPart = TextContent | ImageContent


class CallFunction(_Wire):
    name: str
    arguments: str


class Call(_Wire):
    id: str
    type: str  # "function"; no default, so that omit_defaults keeps it
    function: CallFunction


class ApiMessage(_Wire):
    role: str
    content: str | list[ContentPart]
    reasoning_content: str | None = None
    tool_calls: list[Call] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class Function(_Wire):
    name: str
    parameters: msgspec.Raw
    description: str | None = None


class Tool(_Wire):
    type: str
    function: Function


class NamedFunction(_Wire):
    name: str


class NamedChoice(_Wire):
    type: str
    function: NamedFunction


class Thinking(_Wire):
    type: str


class StreamOptions(_Wire):
    include_usage: bool


class ChatBody(_Wire):
    model: str
    messages: list[ApiMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    thinking: Thinking | None = None
    reasoning_effort: str | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedChoice | None = None


_encoder = msgspec.json.Encoder()


def api_model(spec: ModelSpec) -> ApiModel:
    """The row's API model; a model no key serves is the caller's mistake to route here."""
    if spec.api is None:
        raise BadRequest(f"the model {spec.id!r} is not served by official API keys", param="model")
    return spec.api


def build_request(
    request: ChatRequest, spec: ModelSpec, images: Mapping[str, bytes] | None = None
) -> ChatBody:
    """The API request of one turn; `images` holds the bytes of its image attachments by sha256."""
    api = api_model(spec)
    messages = [_message(m, api, images or {}) for m in request.messages]
    tools = _tools(request)
    choice = _tool_choice(request, api) if tools else None
    if tools and request.tool_choice.mode == "required" and choice is None:
        messages.append(ApiMessage(role="user", content=REQUIRED_TOOL_NUDGE))
    return ChatBody(
        model=api.model,
        messages=messages,
        stream=request.stream,
        stream_options=StreamOptions(include_usage=True) if request.stream else None,
        thinking=Thinking(api.thinking) if api.thinking in ("enabled", "disabled") else None,
        reasoning_effort=api.reasoning_effort,
        tools=tools or None,
        tool_choice=choice,
    )


def encode_request(body: ChatBody) -> bytes:
    return _encoder.encode(body)


def _message(message: Message, api: ApiModel, images: Mapping[str, bytes]) -> ApiMessage:
    calls = [_call(c) for c in message.tool_calls or []] or None
    reasoning = MISSING_REASONING if calls and api.thinks and message.role == "assistant" else None
    return ApiMessage(
        role=message.role,
        content=_content(message, api, images),
        reasoning_content=reasoning,
        tool_calls=calls,
        tool_call_id=message.tool_call_id if message.role == "tool" else None,
        name=message.name if message.role == "tool" else None,
    )


def _content(message: Message, api: ApiModel, images: Mapping[str, bytes]) -> str | list[ContentPart]:
    """String content, unless the message carries images for a vision model (§3.1)."""
    if isinstance(message.content, str):
        return message.content
    attachments = [p for p in message.content if isinstance(p, AttachmentPart)]
    if not attachments or message.role == "tool":  # the API's tool messages take text: placeholders stay
        return message.text()
    if any(p.kind != "image" for p in attachments):
        raise BadRequest("documents are not sent through official API keys yet", param="messages")
    if not api.vision:
        raise BadRequest(f"the model {api.model!r} takes no images through an API key", param="messages")
    return [_part(p, images) for p in message.content]


def _part(part: Part, images: Mapping[str, bytes]) -> ContentPart:
    if isinstance(part, TextPart):
        return TextContent(part.text)
    data = images.get(part.sha256)
    if data is None:
        raise ServiceUnavailable("an image of this request is no longer held; send it again")
    return image_part(part, data)


def image_part(part: AttachmentPart, data: bytes) -> ImageContent:
    """The one place an image becomes the API's `image_url` part: a base64 data URL of its bytes.

    The platform takes base64 data URLs (or `ms://` ids of files uploaded with purpose `image`) and refuses
    public URLs on K3 and the vision previews (§4.2), so the bytes travel inline.
    """
    url = f"data:{part.mime};base64,{base64.b64encode(data).decode('ascii')}"
    return ImageContent(ImageUrl(url))


def _call(call: ToolCall) -> Call:
    return Call(call.id, "function", CallFunction(call.name, call.arguments or "{}"))


def _tools(request: ChatRequest) -> list[Tool]:
    allowed = request.tool_choice.allowed
    return [_tool(t) for t in request.tools if allowed is None or t.name in allowed]


def _tool(tool: ToolSpec) -> Tool:
    parameters = msgspec.Raw(tool.parameters.encode() if tool.parameters else b"{}")
    return Tool("function", Function(tool.name, parameters, tool.description or None))


def _tool_choice(request: ChatRequest, api: ApiModel) -> str | NamedChoice | None:
    choice = request.tool_choice
    if choice.mode == "none":
        return "none"
    if choice.mode == "named" and choice.name:
        return NamedChoice("function", NamedFunction(choice.name))
    if choice.mode == "required" and api.tool_choice_required:
        return "required"
    return None  # auto, the platform's default
