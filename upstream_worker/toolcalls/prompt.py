"""The prompt protocol: what Kimi's web chat receives when a request carries tools (docs/TOOLS.md).

Kimi's web chat takes one user text and has no function-tool type (kimi-web-connect.md §2.5), so the tools,
the earlier calls and their results travel inside that text. The builders here turn a `ChatRequest` into
plain `Message`s (no tool fields left) that the existing flatten step (upstream_worker/kimi/flatten.py)
turns into the prompt exactly as it does any history:

* a `system` message first: the declarations (declarations.py) and how to call, in K2's native markup;
* the history, each assistant call re-rendered canonically (ids rewritten to `functions.{name}:{n}` with a
  conversation-wide counter, arguments re-serialised, stray markers removed), so an old malformed call or a
  client's `call_…` id never becomes the example Kimi copies (tools-and-attachments.md §6.5);
* results as K2's template writes them: `## Return of functions.{name}:{n}` and the output;
* just before the last message, a short `system` reminder: this answer's `tool_choice` rules, the next call
  index and the call format (the part that must be fresh when the history is long), and, on the repair
  attempt, what was wrong.

A kept chat (`conversation_id`) already holds the declarations and the history, so its next turn is one
`user` message: the new results and text, the rules, and the declarations again only when they changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import msgspec

from shared.schema import ChatRequest, Message, TextPart, ToolChoice
from upstream_worker.toolcalls import markup
from upstream_worker.toolcalls.calls import ParsedCall, ToolCallFailure
from upstream_worker.toolcalls.declarations import DEFAULT_BUDGET_CHARS, Declarations, render_declarations

TOOLS_HEADER = "# Tools"
RETURN_HEADER = "## Return of "
RULES_HEADER = "## Tool rules for this answer"
CALL_FORMAT = markup.render_section([("functions.NAME:INDEX", "{JSON arguments}")])
_INTRO = (
    "You can call functions. Only the functions declared below exist in this conversation; you do not run "
    "them yourself, no built-in tool (search, code runner, sandbox) stands in for them, and the caller runs "
    "each call and sends back its result."
)
_HOW_TO_CALL = f"""## How to call
To call functions, end your answer with one section in exactly this markup, as plain text and never inside a code block:
{CALL_FORMAT}
- One <|tool_call_begin|>…<|tool_call_end|> per call; independent calls go in the same section.
- NAME is a declared function. INDEX counts the calls of the whole conversation from 0.
- The arguments are one JSON object: every required parameter, each of the declared type.
- Stop after the section. The results come in the next message, each as "{RETURN_HEADER}functions.NAME:INDEX" followed by the output."""
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class ToolState(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """What a kept conversation remembers between turns (the runner stores it with the conversation record)."""

    #: Client-facing call id → the id Kimi knows the call by (`functions.{name}:{n}`).
    ids: dict[str, str] = msgspec.field(default_factory=dict)
    #: The index the next call should use (calls are counted across the conversation).
    next_index: int = 0
    #: Native ids of the last answer's calls that no result has answered yet, in order (results without an id,
    #: Gemini's, are matched to these by name, then by order).
    open: list[str] = msgspec.field(default_factory=list)
    #: Digest of the declarations this chat has seen ("" before any).
    declared: str = ""

    def after_answer(self, calls: Sequence[ParsedCall]) -> ToolState:
        """The state once an answer's calls were sent to the client (pass `ParseResult.calls`)."""
        ids = dict(self.ids)
        next_index = self.next_index
        for parsed in calls:
            ids[parsed.call.id] = parsed.native_id
            _, index = markup.split_native_id(parsed.native_id)
            next_index = max(next_index + 1, (index or 0) + 1)
        return ToolState(ids, next_index, [p.native_id for p in calls], self.declared)


class ToolPrompt(msgspec.Struct, frozen=True):
    #: Plain messages for flatten (put them in place of `request.messages`).
    messages: list[Message]
    #: The state after this prompt: give `next_index` to the parser, keep the rest for a continuation.
    state: ToolState
    declarations: Declarations | None


def needs_tool_prompt(request: ChatRequest) -> bool:
    """Whether the request has tools, or a history of calls and results that only this module can render."""
    return bool(request.tools) or any(m.tool_calls or m.role == "tool" for m in request.messages)


def build_prompt(
    request: ChatRequest,
    *,
    correction: ToolCallFailure | None = None,
    budget_chars: int = DEFAULT_BUDGET_CHARS,
) -> ToolPrompt:
    """The messages of a new Kimi chat: tool block, re-rendered history, reminder before the last message.

    `correction` is set on the repair attempt sent as a new chat: the reminder then says what was wrong.
    """
    declarations = render_declarations(request.tools, budget_chars) if request.tools else None
    history = _History()
    messages = [history.render(m) for m in request.messages]
    messages = _merge_results(messages)
    state = ToolState(history.ids, history.counter, history.open_ids(), _digest(declarations))
    if declarations is not None:
        reminder = rules_text(request, state.next_index)
        if correction is not None:
            reminder += "\n" + correction_text(correction, request)
        last = len(messages) - 1 if messages else 0
        messages.insert(last, Message(role="system", content=reminder))
        messages.insert(0, Message(role="system", content=tool_block(declarations)))
    return ToolPrompt(messages, state, declarations)


def build_continuation(
    request: ChatRequest,
    state: ToolState,
    *,
    budget_chars: int = DEFAULT_BUDGET_CHARS,
) -> ToolPrompt:
    """The one user message of a kept chat's next turn: only what came after the last assistant message."""
    declarations = render_declarations(request.tools, budget_chars) if request.tools else None
    digest = _digest(declarations)
    parts: list[str] = []
    if declarations is not None and digest != state.declared:
        parts.append(tool_block(declarations))
    history = _History(state.ids, state.next_index, state.open)
    for message in _new_turn(request.messages):
        rendered = history.render(message)
        text = rendered.text() if message.role != "system" else f"system: {rendered.text()}"
        parts.append(text)
    if declarations is not None:
        parts.append(rules_text(request, state.next_index))
    text = "\n\n".join(part for part in parts if part)
    new_state = ToolState(history.ids, state.next_index, history.open_ids(), digest or state.declared)
    return ToolPrompt([_user_turn(text)], new_state, declarations)


def correction_message(
    failure: ToolCallFailure, request: ChatRequest, *, next_index: int | None = None
) -> Message:
    """The repair turn sent into the same Kimi chat, after the answer that failed.

    With `next_index` (the index the failed answer should have used) the turn ends with this answer's rules,
    so the call is numbered as the conversation expects.
    """
    text = correction_text(failure, request)
    if next_index is not None and request.tool_choice.mode != "none":
        text += "\n\n" + rules_text(request, next_index)
    return _user_turn(text)


def _user_turn(text: str) -> Message:
    """A turn the gateway writes: a text part, not a string, because REST's continuation path wraps the URLs
    of a user's string content for Kimi to fetch, and a URL in a tool result must stay plain text."""
    return Message(role="user", content=[TextPart(text)])


def tool_block(declarations: Declarations) -> str:
    """The system message that declares the tools and says how to call them."""
    return f"{TOOLS_HEADER}\n{_INTRO}\n\n{declarations.text}\n\n{_HOW_TO_CALL}"


def rules_text(request: ChatRequest, next_index: int) -> str:
    """This answer's rules from `tool_choice` and `parallel_tool_calls`, with the call format to use."""
    rules = [choice_rule(request.tool_choice)]
    if not request.parallel_tool_calls and request.tool_choice.mode != "none":
        rules.append("Call at most one function in this answer.")
    if request.tool_choice.mode != "none":
        example = markup.render_section([(f"functions.NAME:{next_index}", "{JSON arguments}")])
        rules.append(f"The next call index is {next_index}. Format: {example}")
    return RULES_HEADER + "\n" + "\n".join(f"- {rule}" for rule in rules)


def choice_rule(choice: ToolChoice) -> str:
    """One sentence per `tool_choice` mode (the simulator recognises the `none` sentence, docs/TOOLS.md)."""
    allowed = f" Only these functions may be called: {', '.join(choice.allowed)}." if choice.allowed else ""
    match choice.mode:
        case "none":
            return "Do not call any function in this answer; answer in plain text."
        case "required":
            return "You must call at least one function in this answer." + allowed
        case "named":
            return f"You must call functions.{choice.name} in this answer."
    return "Call functions when they help; otherwise answer in plain text." + allowed


def correction_text(failure: ToolCallFailure, request: ChatRequest) -> str:
    """What the repair attempt tells Kimi: what was wrong, and to answer again in the right form."""
    if failure.kind == "call_required":
        problem = "Your previous answer called no function"
    else:
        problem = f"Your previous answer had an unusable function call: {failure.message}"
    return (
        f"{problem}. Write the whole answer again. {choice_rule(request.tool_choice)} Use exactly the call "
        f"format {CALL_FORMAT}, with arguments that fit the declared parameters, and never put a call inside "
        "a code block."
    )


class _History:
    """Re-renders messages one by one, numbering calls and pairing results with them."""

    def __init__(
        self, ids: dict[str, str] | None = None, counter: int = 0, open_ids: Sequence[str] = ()
    ) -> None:
        self.ids: dict[str, str] = dict(ids or {})
        self.counter = counter
        #: (client id, native id, name) of calls still waiting for their result.
        self._open: list[tuple[str, str, str]] = [
            (
                next((c for c, n in self.ids.items() if n == native), ""),
                native,
                markup.split_native_id(native)[0],
            )
            for native in open_ids
        ]

    def open_ids(self) -> list[str]:
        return [native for _, native, _ in self._open]

    def render(self, message: Message) -> Message:
        if message.role == "assistant":
            return self._assistant(message)
        if message.role == "tool":
            return Message(role="tool", content=self._result(message))
        return message

    def _assistant(self, message: Message) -> Message:
        text = markup.strip_markers(message.text()).strip()
        if not message.tool_calls:
            if isinstance(message.content, str):
                return Message(role="assistant", content=markup.strip_markers(message.content))
            parts = [
                TextPart(markup.strip_markers(p.text)) if isinstance(p, TextPart) else p
                for p in message.content
            ]
            return Message(role="assistant", content=parts)
        pairs = []
        for call in message.tool_calls:
            native = markup.native_id(call.name, self.counter)
            self.counter += 1
            if call.id:
                self.ids[call.id] = native
            self._open.append((call.id, native, call.name))
            pairs.append((native, canonical_arguments(call.arguments)))
        section = markup.render_section(pairs)
        return Message(role="assistant", content=f"{text}\n{section}" if text else section)

    def _result(self, message: Message) -> str:
        native = self._match(message)
        header = f"{RETURN_HEADER}{native}" + (" (error)" if message.is_error else "")
        return f"{header}\n{_result_text(message)}"

    def _match(self, message: Message) -> str:
        """The native id a result answers: by its call id, else the first open call of its name, else the
        first open call; an unknown result keeps the client's id or name."""
        wanted = message.tool_call_id or ""
        by_id = next(
            (i for i, (client_id, _, _) in enumerate(self._open) if wanted and client_id == wanted), None
        )
        if by_id is None and wanted in self.ids:
            return self.ids[wanted]
        by_name = next((i for i, (_, _, name) in enumerate(self._open) if name == message.name), None)
        position = by_id if by_id is not None else by_name if by_name is not None else 0
        if self._open:
            return self._open.pop(position)[1]
        return wanted or markup.native_id(message.name or "unknown", self.counter)


def canonical_arguments(arguments: str) -> str:
    """Compact JSON of the arguments; `{}` for arguments that are not a JSON object (never shown as an example)."""
    try:
        value = _decoder.decode(arguments or "{}")
    except msgspec.DecodeError:
        return "{}"
    return _encoder.encode(value).decode() if isinstance(value, dict) else "{}"


def _result_text(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content or "(no output)"
    pieces = [p.text if isinstance(p, TextPart) else f"[{p.kind}: {p.name}]" for p in message.content]
    return "\n".join(pieces) or "(no output)"


def _merge_results(messages: list[Message]) -> list[Message]:
    """Consecutive results become one `tool` message, as one turn of the conversation."""
    merged: list[Message] = []
    for message in messages:
        if message.role == "tool" and merged and merged[-1].role == "tool":
            merged[-1] = Message(role="tool", content=f"{merged[-1].text()}\n\n{message.text()}")
        else:
            merged.append(message)
    return merged


def _new_turn(messages: Sequence[Message]) -> Sequence[Message]:
    """What a continuation sends: the messages after the last assistant message (all when there is none)."""
    for position in range(len(messages) - 1, -1, -1):
        if messages[position].role == "assistant":
            return messages[position + 1 :]
    return messages


def _digest(declarations: Declarations | None) -> str:
    if declarations is None:
        return ""
    return hashlib.sha256(declarations.text.encode()).hexdigest()[:16]
