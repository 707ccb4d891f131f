"""What every dialect's `parse` and writer share: body decoding, request checks, options, usage counts.

Each dialect keeps its own words (error messages, param spellings); the rules live here once: an empty or
malformed body is a 400 naming the offending field, a request without any text is refused before it costs an
account lease, the model table decides the options, "none"-like conversation ids only keep the chat, and usage
is the worker's count unless the gateway cut the answer, else an honest estimate (shared/usage_estimate.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal, TypeVar

import msgspec

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


def require_text(messages: list[Message], param: str, message: str) -> None:
    """Refuse a request whose messages hold no text at all: it would cost an account lease and a chat. A tool
    result or an earlier call counts as text (the prompt protocol writes both out, even an empty result)."""
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
    """The model table's row for `model`, or ModelNotFound with the dialect's `missing` message."""
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
