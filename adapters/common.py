"""What every dialect's `parse` and writer share: body decoding, request checks, options, usage counts.

Each dialect keeps its own words (error messages, param spellings); the rules live here once: an empty or
malformed body is a 400 naming the offending field, a request without any text is refused before it costs an
account lease, the model table decides the options, "none"-like conversation ids only keep the chat, every request is held to its dialect's `Bounds` (a 400 naming
the field: each stop sequence is searched for in every chunk of the answer, so their number and length are
event-loop time of every stream in the process), and usage
is the worker's count unless the gateway cut the answer, else an honest estimate (shared/usage_estimate.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

import msgspec

from shared.attachment_input import AttachmentInput
from shared.errors import BadRequest, ModelNotFound
from shared.models import ModelSpec, resolve_model
from shared.schema import ChatOptions, Message, ToolSpec, Usage
from shared.usage_estimate import estimate_prompt_tokens, estimate_tokens

T = TypeVar("T")
#: `ToolChoice.mode`, for the dialects' tables of their own choice names.
ChoiceMode = Literal["auto", "none", "required", "named"]

EMPTY_BODY: Final = "The request body is empty; expected a JSON object."
#: kimi-free-api's spellings of "start a new conversation" in `conversation_id`.
NEW_CONVERSATION: Final = frozenset({"none", "null", "new", "undefined"})
_AT_PATH: Final = re.compile(r"at `\$\.?(.*)`$")
_json_encoder: Final = msgspec.json.Encoder()
_json_decoder: Final = msgspec.json.Decoder()

#: Longer than any model id of the table by far; a longer name is refused before it is echoed anywhere.
MAX_MODEL_CHARS: Final = 128

# ---------------------------------------------------------------- bounds


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one request of a dialect may hold (docs/SECURITY.md lists them)."""

    #: Stop sequences: OpenAI documents 4, Gemini 5; Anthropic documents none, so ours is 16.
    max_stops: int
    #: Characters of one stop sequence.
    max_stop_chars: int = 256
    #: Messages (turns) of one request.
    max_messages: int = 2_000
    #: Characters of text across every message; Kimi's longest context is 256k tokens (~1M characters).
    max_text_chars: int = 2_000_000


OPENAI_BOUNDS: Final = Bounds(max_stops=4)
ANTHROPIC_BOUNDS: Final = Bounds(max_stops=16)
GEMINI_BOUNDS: Final = Bounds(max_stops=5)


def check_bounds(
    bounds: Bounds,
    stops: Sequence[str],
    messages: Sequence[Message],
    *,
    stop_param: str,
    messages_param: str,
) -> None:
    """BadRequest naming the field when the request holds more stops, longer stops, more messages or more text
    than the dialect's `bounds`."""
    if len(stops) > bounds.max_stops:
        raise BadRequest(f"`{stop_param}` holds at most {bounds.max_stops} sequences.", param=stop_param)
    for index, stop in enumerate(stops):
        if len(stop) > bounds.max_stop_chars:
            raise BadRequest(
                f"`{stop_param}[{index}]` is longer than {bounds.max_stop_chars} characters.",
                param=stop_param,
            )
    if len(messages) > bounds.max_messages:
        raise BadRequest(
            f"`{messages_param}` holds at most {bounds.max_messages} messages.", param=messages_param
        )
    if sum(len(m.text()) for m in messages) > bounds.max_text_chars:
        raise BadRequest(
            f"`{messages_param}` hold more than {bounds.max_text_chars} characters of text.",
            param=messages_param,
        )


# ---------------------------------------------------------------- parse


def decode_body(
    body: bytes,
    decode: Callable[[bytes], T],
    *,
    invalid: str = "Invalid request: ",
    malformed: str = "The request body is not valid JSON: ",
) -> T:
    """`decode(body)`, or a BadRequest: `invalid` + msgspec's reason with the field's path as `param`, or
    `malformed` + the parser's reason."""
    if not body.strip():
        raise BadRequest(EMPTY_BODY)
    try:
        return decode(body)
    except msgspec.ValidationError as exc:
        match = _AT_PATH.search(str(exc))
        raise BadRequest(f"{invalid}{exc}", param=match.group(1) if match else None) from exc
    except msgspec.DecodeError as exc:
        raise BadRequest(f"{malformed}{exc}") from exc


def require_text(
    messages: list[Message], attachments: list[AttachmentInput], param: str, message: str
) -> None:
    """Refuse a request that holds nothing to answer: it would cost an account lease and a chat. A tool result
    or an earlier call counts as text (the prompt protocol writes both out, even an empty result), and so does
    an image or document (the worker asks Kimi about a file sent alone, upstream_worker/kimi/flatten.py)."""
    if attachments:
        return
    if not any(m.text().strip() or m.role == "tool" or m.tool_calls for m in messages):
        raise BadRequest(message, param=param)


def compact_json(value: object) -> str:
    """A decoded JSON value (a tool's schema, a call's arguments, a result object) as compact JSON text."""
    return _json_encoder.encode(value).decode()


def arguments_object(arguments: str) -> dict[str, Any]:
    """A call's arguments (JSON text of an object, validated by the worker) as an object; `{}` if they are not
    one, so a reply is always well-formed JSON."""
    try:
        value = _json_decoder.decode(arguments)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def check_named_tool(tools: list[ToolSpec], name: str, param: str) -> None:
    """A `tool_choice` that names a tool must name a declared one."""
    if all(t.name != name for t in tools):
        raise BadRequest(f"Tool choice names `{name}`, which is not among the declared tools.", param=param)


def model_spec(model: str, missing: str) -> ModelSpec:
    """The model table's row for `model`, or ModelNotFound with the dialect's `missing` message (BadRequest for
    a name longer than any model's)."""
    if len(model) > MAX_MODEL_CHARS:
        raise BadRequest(f"`model` is longer than {MAX_MODEL_CHARS} characters.", param="model")
    spec = resolve_model(model)
    if spec is None:
        raise ModelNotFound(missing, param="model")
    return spec


def chat_options(spec: ModelSpec, *, search: bool = False, conversation_id: str | None = None) -> ChatOptions:
    """The options a model id implies, plus the body's extensions (`use_search`, `conversation_id`).

    Any non-empty `conversation_id` keeps the chat; a "none"-like one starts a new conversation."""
    conversation = (conversation_id or "").strip()
    keep = bool(conversation)
    return ChatOptions(
        search=spec.search or search,
        silent=spec.silent,
        thinking=spec.thinking,
        research=spec.research,
        math=spec.math,
        k1=spec.k1,
        conversation_id=conversation if keep and conversation.lower() not in NEW_CONVERSATION else None,
        keep_chat=keep,
    )


# ---------------------------------------------------------------- usage


class ReplyUsage:
    """The token counts a reply reports; `completion_tokens` includes the reasoning's."""

    __slots__ = ("_reasoning", "_reasoning_tokens", "completion_tokens", "prompt_tokens")

    def __init__(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        reasoning: Sequence[str] = (),
        reasoning_tokens: int | None = None,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self._reasoning = reasoning
        self._reasoning_tokens = reasoning_tokens

    @property
    def reasoning_tokens(self) -> int:
        """The reasoning's share of `completion_tokens`, estimated only for a dialect that reports it."""
        if self._reasoning_tokens is None:
            estimate = estimate_tokens("".join(self._reasoning))
            self._reasoning_tokens = min(estimate, self.completion_tokens)
        return self._reasoning_tokens


def prompt_tokens(messages: list[Message]) -> int:
    """The estimated tokens of a prompt."""
    return estimate_prompt_tokens([m.text() for m in messages])


def reply_usage(
    worker: Usage | None, cut: bool, messages: list[Message], answer: str, reasoning: Sequence[str]
) -> ReplyUsage:
    """The worker's counts for a whole answer; after a cut (or without them) the estimate of what was sent.

    The prompt count stays the worker's whenever it sent one: a cut changes the answer, not the prompt."""
    if worker is not None and not cut:
        return ReplyUsage(worker.prompt_tokens, worker.completion_tokens, reasoning=reasoning)
    thought = estimate_tokens("".join(reasoning))
    prompt = worker.prompt_tokens if worker is not None else prompt_tokens(messages)
    return ReplyUsage(prompt, estimate_tokens(answer) + thought, reasoning_tokens=thought)
