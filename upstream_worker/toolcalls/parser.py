"""A strict, sans-IO streaming parser of the tool calls in Kimi's answer text (tools-and-attachments.md §6).

Answer-text deltas go in as they arrive; what comes out at once is the content that can never turn into
markup, and at the end (`finish`) the calls, each checked against its tool, or the one reason the answer's
calls are unusable. Kimi's reasoning arrives as separate deltas and is never fed here, so a call written while
thinking is not a call.

Forms recognised (docs/TOOLS.md has examples): the native section with plural or singular markers, a bare
`<|tool_call_begin|>` without a section, whitespace around markers and ids, `functions.` optional, dotted,
hyphenated and colon names, a missing `<|tool_call_end|>` or section end; the simple form
`functions.NAME:IDX{json}` (also with `<|tool_call_argument_begin|>` between id and JSON); the XML form
`<tool_call><invoke name=…><parameter name=…>…` (also in `<function_calls>`), whose parameter values are
read as JSON where the schema wants a non-string; `<tool_call>{"name": …, "arguments": …}</tool_call>`.

Never content: anything of a call, and any native marker (stray ones, and those quoted inside a code fence or
a `<think>` block are dropped). A suffix that could still become a trigger is held back, whatever byte a
chunk ends on, and released as soon as it cannot. Code fences (``` or ~~~ at a line start) and `<think>`
blocks are examples or musings: calls there are text. Each character is scanned a bounded number of times:
the scans start where the previous one stopped and only a tail shorter than a marker is ever looked at again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from enum import Enum, auto
from typing import Any

import msgspec

from shared.schema import ChatRequest, ToolCall, ToolChoice
from upstream_worker.toolcalls import markup
from upstream_worker.toolcalls.calls import CallFormat, FailureKind, ParsedCall, ParseResult, ToolCallFailure
from upstream_worker.toolcalls.markup import Marker
from upstream_worker.toolcalls.schema_check import check_arguments
from upstream_worker.toolcalls.toolset import Tool, ToolSet


class _Mode(Enum):
    TEXT = auto()
    FENCE = auto()
    THINK = auto()
    SECTION = auto()
    CALL_ID = auto()
    CALL_ARGS = auto()
    SIMPLE = auto()
    XML = auto()


_FUNCTIONS = markup.FUNCTIONS_PREFIX
_XML_TAGS = {"<tool_call>": "</tool_call>", "<function_calls>": "</function_calls>"}
_TEXT_LITERALS = ("<|", "<tool_call>", "<function_calls>", "<think>", _FUNCTIONS, "```", "~~~")
_TEXT_TRIGGER = re.compile("|".join(re.escape(t) for t in _TEXT_LITERALS))
_HELD_MAX = max(len(t) for t in _TEXT_LITERALS) - 1
#: Every proper prefix of a trigger, and the characters one can start with: what a delta's tail may hold back.
_PREFIXES = frozenset(t[:i] for t in _TEXT_LITERALS for i in range(1, len(t)))
_TAIL_START = re.compile("[" + re.escape("".join({t[0] for t in _TEXT_LITERALS})) + "]")
#: A `functions.` head longer than this is prose, not a call id.
_SIMPLE_HEAD_MAX = 200
_NAME_CHARS = frozenset("_.-:")
_STRUCT_CHARS = re.compile(r'[{}"]')
_STRING_CHARS = re.compile(r'["\\]')
_INVOKE = re.compile(r"""<invoke\s+name\s*=\s*["']([^"']*)["']\s*>(.*?)</invoke>""", re.S)
_PARAMETER = re.compile(r"""<parameter\s+name\s*=\s*["']([^"']*)["']\s*>(.*?)</parameter>""", re.S)
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder()


class ToolCallParser:
    """feed(answer text) → content to send now; finish() → the held tail plus the calls or a failure."""

    def __init__(
        self,
        tools: ToolSet,
        choice: ToolChoice | None = None,
        *,
        parallel: bool = True,
        id_prefix: str = "call_",
        first_index: int = 0,
    ) -> None:
        """`id_prefix` + the call's position is the id the client sees (unique per request: the runner passes
        one made from the request id); `first_index` numbers calls written without an index."""
        self._tools = tools
        self._choice = choice or ToolChoice()
        self._parallel = parallel
        self._id_prefix = id_prefix
        self._first_index = first_index
        self._mode = _Mode.TEXT
        self._buf = ""
        #: How far `_buf` was already searched for a line end (FENCE, THINK): a long line fed in small
        #: pieces is scanned once, not once per piece.
        self._scanned = 0
        self._out: list[str] = []
        self._ws = ""
        self._emitted = False
        self._prev_char = "\n"
        self._line_spaces: int | None = 0
        self._fence = ""
        self._section_format: CallFormat = "native"
        self._section_calls = 0
        self._implicit_section = False
        self._call_format: CallFormat = "native"
        self._parts: list[str] = []
        self._written_id = ""
        self._scanner = _BraceScanner()
        self._resume = _Mode.TEXT
        self._close_tag = ""
        self._attempts = 0
        self._calls: list[ParsedCall] = []
        self._failure: ToolCallFailure | None = None
        self._steps: dict[_Mode, Callable[[bool], bool]] = {
            _Mode.TEXT: self._step_text,
            _Mode.FENCE: self._step_lines,
            _Mode.THINK: self._step_lines,
            _Mode.SECTION: self._step_section,
            _Mode.CALL_ID: self._step_call_id,
            _Mode.CALL_ARGS: self._step_call_args,
            _Mode.SIMPLE: self._step_simple,
            _Mode.XML: self._step_xml,
        }

    @classmethod
    def for_request(cls, request: ChatRequest, *, id_prefix: str, first_index: int = 0) -> ToolCallParser:
        """A parser with the request's tools, `tool_choice` and `parallel_tool_calls`."""
        return cls(
            ToolSet(request.tools),
            request.tool_choice,
            parallel=request.parallel_tool_calls,
            id_prefix=id_prefix,
            first_index=first_index,
        )

    def feed(self, text: str) -> str:
        """Consume one delta of answer text; the content that may be sent now (often "")."""
        self._buf += text
        self._run(final=False)
        out = "".join(self._out)
        self._out.clear()
        return out

    def finish(self) -> ParseResult:
        """The answer ended: release or settle whatever was held, then judge the calls as a whole."""
        self._run(final=True)
        self._close_open_call()
        if not self._attempts:
            self._out.append(self._ws)
        self._ws = ""
        self._judge_count()
        content = "".join(self._out)
        self._out.clear()
        if self._failure is not None:
            return ParseResult(content, [], self._failure)
        return ParseResult(content, list(self._calls))

    # ------------------------------------------------------------ the state machine

    def _run(self, final: bool) -> None:
        steps = self._steps
        while self._buf and steps[self._mode](final):
            pass

    def _step_text(self, final: bool) -> bool:
        buf = self._buf
        match = _TEXT_TRIGGER.search(buf)
        if match is None:
            keep = 0 if final else _held_tail(buf)
            self._text(buf[: len(buf) - keep])
            self._buf = buf[len(buf) - keep :]
            return False
        if match.start():
            self._text(buf[: match.start()])
            self._buf = buf = buf[match.start() :]
        token = match.group()
        if token == "<|":
            return self._text_marker(final)
        if token in _XML_TAGS:
            self._begin_call()
            self._close_tag = _XML_TAGS[token]
            self._parts = []
            self._mode = _Mode.XML
            return self._consume(len(token))
        if token == "<think>":
            self._text(token)
            self._mode = _Mode.THINK
            return self._consume(len(token))
        if token == _FUNCTIONS:
            return self._text_functions(final)
        return self._text_fence(token, final)

    def _text_marker(self, final: bool) -> bool:
        kind, end = _marker_at(self._buf, 0, final)
        if end < 0:
            return False
        if kind is None:
            self._text("<|")
            return self._consume(2)
        if kind in (Marker.SECTION_BEGIN, Marker.SECTION_BEGIN_SINGULAR):
            singular = kind is Marker.SECTION_BEGIN_SINGULAR
            self._open_section("native_singular" if singular else "native", implicit=False)
        elif kind is Marker.CALL_BEGIN:
            self._open_section("native_bare", implicit=True)
            self._start_native_call()
        # a stray end or argument marker outside a section is dropped
        return self._consume(end)

    def _text_functions(self, final: bool) -> bool:
        if self._prev_char.isalnum() or self._prev_char in "_.":
            self._text(_FUNCTIONS)
            return self._consume(len(_FUNCTIONS))
        head = _simple_head(self._buf, final)
        if head is None:
            return False
        if not head:
            self._text(_FUNCTIONS)
            return self._consume(len(_FUNCTIONS))
        self._begin_call()
        self._start_simple(head, _Mode.TEXT)
        return True

    def _text_fence(self, token: str, final: bool) -> bool:
        if self._line_spaces is None or self._line_spaces > 3:
            self._text(token)
            return self._consume(len(token))
        run = len(self._buf) - len(self._buf.lstrip(token[0]))
        if run == len(self._buf) and not final:
            return False  # a longer fence may follow
        self._fence = self._buf[:run]
        self._text(self._fence)
        self._mode = _Mode.FENCE
        return self._consume(run)

    def _step_lines(self, final: bool) -> bool:
        """FENCE and THINK: whole lines pass as content (markers removed) until the closing line or tag."""
        buf = self._buf
        if self._mode is _Mode.THINK and (close := buf.find("</think>", max(0, self._scanned - 7))) >= 0:
            self._text(markup.strip_markers(buf[: close + 8]))
            self._mode = _Mode.TEXT
            return self._consume(close + 8)
        newline = buf.find("\n", self._scanned)
        if newline < 0:
            self._scanned = len(buf)
            if final:
                self._text(markup.strip_markers(buf))
                self._consume(len(buf))
            return False
        line = buf[: newline + 1]
        if self._mode is _Mode.FENCE and _closes_fence(line, self._fence):
            self._mode = _Mode.TEXT
        self._text(markup.strip_markers(line))
        return self._consume(newline + 1)

    def _step_section(self, final: bool) -> bool:
        buf = self._buf
        start = len(buf) - len(buf.lstrip())
        self._ws += buf[:start]
        self._buf = buf = buf[start:]
        if not buf:
            return False
        if buf.startswith("<|") or buf == "<":
            kind, end = _marker_at(buf, 0, final)
            if end < 0:
                return False
            if kind is not None:
                self._ws = ""
                return self._section_marker(kind, end)
        elif buf.startswith(_FUNCTIONS) or (not final and _FUNCTIONS.startswith(buf)):
            head = _simple_head(buf, final)
            if head is None:
                return False
            if head:
                self._ws = ""
                self._start_simple(head, _Mode.SECTION)
                return True
        # Prose after the calls: the section ended without its end marker.
        if self._section_calls == 0:
            self._fail(
                "malformed", "the tool-call section holds text instead of a call", None, self._section_format
            )
        self._mode = _Mode.TEXT
        return True

    def _section_marker(self, kind: Marker, end: int) -> bool:
        if kind is Marker.CALL_BEGIN:
            self._start_native_call()
        elif kind is Marker.SECTION_END:
            self._close_section()
        elif kind is Marker.ARGUMENT_BEGIN:
            message = "an argument marker without a call id before it"
            self._fail("malformed", message, None, self._section_format)
        return self._consume(end)

    def _step_call_id(self, final: bool) -> bool:
        kind, end = self._capture_until_marker(final)
        if end < 0:
            return False
        if kind is Marker.ARGUMENT_BEGIN:
            self._written_id = "".join(self._parts)
            self._parts = []
            self._mode = _Mode.CALL_ARGS
        elif kind in (Marker.CALL_END, Marker.CALL_BEGIN, Marker.SECTION_END):
            written = "".join(self._parts).strip()
            self._attempts += 1
            message = f"the call {written!r} has no argument marker"
            self._fail("malformed", message, written, self._call_format)
            self._after_native_marker(kind)
        return self._consume(end)

    def _step_call_args(self, final: bool) -> bool:
        kind, end = self._capture_until_marker(final)
        if end < 0:
            return False
        if kind is Marker.ARGUMENT_BEGIN:
            written = self._written_id.strip()
            self._fail(
                "malformed", f"the call {written!r} has two argument markers", written, self._call_format
            )
        elif kind is not Marker.SECTION_BEGIN and kind is not Marker.SECTION_BEGIN_SINGULAR:
            self._complete(self._call_format, self._written_id, "".join(self._parts))
            self._after_native_marker(kind)
        return self._consume(end)

    def _capture_until_marker(self, final: bool) -> tuple[Marker | None, int]:
        """Move text into the call's parts up to the next known marker; (marker, its end) or (None, -1)."""
        while True:
            buf = self._buf
            found = buf.find("<|")
            if found < 0:
                keep = 1 if buf.endswith("<") and not final else 0
                self._parts.append(buf[: len(buf) - keep])
                self._buf = buf[len(buf) - keep :]
                return None, -1
            self._parts.append(buf[:found])
            self._buf = buf[found:]
            kind, end = _marker_at(self._buf, 0, final)
            if end < 0:
                return None, -1
            if kind is not None:
                return kind, end
            self._parts.append("<|")
            self._buf = self._buf[2:]

    def _after_native_marker(self, kind: Marker | None) -> None:
        if kind is Marker.CALL_BEGIN:
            self._start_native_call()
        elif kind is Marker.SECTION_END or self._implicit_section:
            self._close_section()
        else:
            self._mode = _Mode.SECTION

    def _step_simple(self, final: bool) -> bool:
        end = self._scanner.feed(self._buf)
        if end is None:
            self._parts.append(self._buf)
            self._buf = ""
            return False
        self._parts.append(self._buf[:end])
        self._complete("simple", self._written_id, "".join(self._parts))
        self._mode = self._resume
        return self._consume(end)

    def _step_xml(self, final: bool) -> bool:
        buf = self._buf
        close = buf.find(self._close_tag)
        if close < 0:
            keep = 0 if final else min(len(buf), len(self._close_tag) - 1)
            self._parts.append(buf[: len(buf) - keep])
            self._buf = buf[len(buf) - keep :]
            return False
        self._parts.append(buf[:close])
        self._xml_calls("".join(self._parts), closed=True)
        self._mode = _Mode.TEXT
        return self._consume(close + len(self._close_tag))

    # ------------------------------------------------------------ calls

    def _begin_call(self) -> None:
        """Markup starts: whitespace held before it is dropped, never sent."""
        self._ws = ""

    def _open_section(self, call_format: CallFormat, implicit: bool) -> None:
        self._begin_call()
        self._section_format = call_format
        self._section_calls = 0
        self._implicit_section = implicit
        self._mode = _Mode.SECTION

    def _close_section(self) -> None:
        if self._section_calls == 0 and not self._implicit_section:
            self._fail("malformed", "the tool-call section holds no call", None, self._section_format)
        self._mode = _Mode.TEXT

    def _start_native_call(self) -> None:
        self._call_format = self._section_format
        self._section_calls += 1
        self._parts = []
        self._mode = _Mode.CALL_ID

    def _start_simple(self, head: tuple[str, int], resume: _Mode) -> None:
        written, brace = head
        self._written_id = written
        self._section_calls += 1
        self._scanner = _BraceScanner()
        self._parts = []
        self._resume = resume
        self._mode = _Mode.SIMPLE
        self._buf = self._buf[brace:]

    def _close_open_call(self) -> None:
        """The answer ended inside a call: usable only when its arguments are complete."""
        if self._mode is _Mode.CALL_ARGS:
            self._complete(self._call_format, self._written_id, "".join(self._parts))
        elif self._mode is _Mode.CALL_ID:
            written = "".join(self._parts).strip()
            self._attempts += 1
            self._fail(
                "malformed", f"the answer ends inside the call {written!r}", written, self._call_format
            )
        elif self._mode is _Mode.SIMPLE:
            written = self._written_id.strip()
            self._attempts += 1
            message = f"the arguments of {written!r} end before their JSON object does"
            self._fail("malformed", message, written, "simple")
        elif self._mode is _Mode.XML:
            self._xml_calls("".join(self._parts), closed=False)
        elif self._mode is _Mode.SECTION:
            self._close_section()
        self._mode = _Mode.TEXT

    def _xml_calls(self, body: str, closed: bool) -> None:
        text = body.strip()
        if text.startswith("{"):
            self._json_tag_call(text, closed)
            return
        position = 0
        for match in _INVOKE.finditer(body):
            if body[position : match.start()].strip():
                break
            position = match.end()
            self._invoke_call(match.group(1), match.group(2))
        if body[position:].strip() or position == 0:
            self._attempts += 1
            state = "is not closed" if not closed else "is not an <invoke> element"
            self._fail("malformed", f"the <tool_call> block {state}", None, "xml")

    def _invoke_call(self, name: str, body: str) -> None:
        tool = self._tools.resolve(name)
        arguments: dict[str, Any] = {}
        position = 0
        for match in _PARAMETER.finditer(body):
            if body[position : match.start()].strip():
                break
            position = match.end()
            key = match.group(1)
            arguments[key] = _xml_value(match.group(2), tool.property_schema(key) if tool else {})
        if body[position:].strip():
            self._attempts += 1
            self._fail("malformed", f"the <invoke> of {name!r} holds text outside <parameter>", name, "xml")
            return
        self._complete("xml", name, arguments)

    def _json_tag_call(self, text: str, closed: bool) -> None:
        try:
            data = _decoder.decode(text)
        except msgspec.DecodeError as exc:
            self._attempts += 1
            self._fail("malformed", f"the <tool_call> JSON cannot be read ({exc})", None, "json_tag")
            return
        name = data.get("name") if isinstance(data, dict) else None
        if not isinstance(name, str):
            self._attempts += 1
            self._fail("malformed", 'the <tool_call> JSON has no "name"', None, "json_tag")
            return
        arguments = data.get("arguments", data.get("parameters", {}))
        self._complete("json_tag", name, arguments)

    def _complete(self, call_format: CallFormat, written: str, arguments: Any) -> None:
        """Check one call (name, `tool_choice`, JSON, schema) and keep it, or note the first failure."""
        self._attempts += 1
        written = written.strip()
        tool = self._tools.resolve(written)
        if tool is None:
            self._fail("unknown_tool", f"no tool is called {written!r}", written, call_format)
            return
        if (refusal := self._refusal(tool)) is not None:
            self._fail(refusal[0], refusal[1], written, call_format)
            return
        value = _decode_arguments(arguments)
        if isinstance(value, str):
            self._fail("malformed", f"the arguments of {tool.name} {value}", written, call_format)
            return
        if errors := check_arguments(tool.schema, value):
            message = f"the arguments of {tool.name} do not fit its schema: {'; '.join(errors)}"
            self._fail("invalid_arguments", message, written, call_format)
            return
        _, index = markup.split_native_id(written)
        native = markup.native_id(
            tool.name, self._first_index + self._attempts - 1 if index is None else index
        )
        call_id = f"{self._id_prefix}{len(self._calls)}"
        arguments_json = _encoder.encode(value).decode()
        self._calls.append(ParsedCall(ToolCall(call_id, tool.name, arguments_json), native, call_format))

    def _refusal(self, tool: Tool) -> tuple[FailureKind, str] | None:
        choice = self._choice
        if choice.mode == "none":
            return "forbidden_call", f"{tool.name} was called although no tool may be called in this answer"
        if choice.mode == "named" and tool.name != choice.name:
            return "not_allowed", f"{tool.name} was called although this answer must call {choice.name}"
        if choice.allowed is not None and tool.name not in choice.allowed:
            allowed = ", ".join(choice.allowed)
            return "not_allowed", f"{tool.name} was called although only {allowed} may be called"
        return None

    def _judge_count(self) -> None:
        if not self._parallel and self._attempts > 1:
            message = f"{self._attempts} tools were called although at most one call is allowed"
            self._fail("too_many_calls", message, None, self._calls[-1].format if self._calls else None)
        if self._attempts == 0 and self._choice.mode in ("required", "named"):
            wanted = self._choice.name if self._choice.mode == "named" else "a tool"
            self._fail(
                "call_required", f"the answer calls no tool although it must call {wanted}", None, None
            )

    def _fail(
        self, kind: FailureKind, message: str, tool: str | None, call_format: CallFormat | None
    ) -> None:
        """Note a failure; the first one decides the answer (later calls are still read, never sent)."""
        if self._failure is None:
            self._failure = ToolCallFailure(kind, message, tool, call_format)

    # ------------------------------------------------------------ content

    def _text(self, text: str) -> None:
        """Content, with trailing whitespace held until more text follows (dropped if a call comes next)."""
        if not text:
            return
        self._track(text)
        body = text.rstrip()
        if not body:
            self._ws += text
            return
        if self._emitted or not self._attempts:
            self._out.append(self._ws + body)
        else:  # the answer's first words come after its calls: no leading blank lines
            self._out.append(body.lstrip())
        self._ws = text[len(body) :]
        self._emitted = True

    def _track(self, text: str) -> None:
        """Remember the last character (word boundary of `functions.`) and whether the line is blank so far."""
        self._prev_char = text[-1]
        newline = text.rfind("\n")
        tail = text[newline + 1 :]
        base = 0 if newline >= 0 else self._line_spaces
        self._line_spaces = base + len(tail) if base is not None and not tail.strip(" ") else None

    def _consume(self, count: int) -> bool:
        self._buf = self._buf[count:]
        self._scanned = 0
        return True


class _BraceScanner:
    """Finds where a JSON object ends, fed in pieces: braces counted outside strings, escapes honoured."""

    __slots__ = ("_depth", "_escaped", "_in_string")

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escaped = False

    def feed(self, text: str) -> int | None:
        """The offset just past the object's closing brace in `text`, or None when it has not closed yet."""
        i, n = 0, len(text)
        if self._escaped and n:
            self._escaped, i = False, 1
        while i < n:
            if self._in_string:
                match = _STRING_CHARS.search(text, i)
                if match is None:
                    return None
                i = match.start()
                if text[i] == "\\":
                    if i + 1 == n:
                        self._escaped = True
                        return None
                    i += 2
                    continue
                self._in_string = False
            else:
                match = _STRUCT_CHARS.search(text, i)
                if match is None:
                    return None
                i = match.start()
                char = text[i]
                if char == '"':
                    self._in_string = True
                elif char == "{":
                    self._depth += 1
                else:
                    self._depth -= 1
                    if self._depth <= 0:
                        return i + 1
            i += 1
        return None


def _marker_at(buf: str, start: int, final: bool) -> tuple[Marker | None, int]:
    """At `buf[start]` (`<|` or a lone `<` at the end): (marker, end) for a known marker, (None, start + 2)
    for a `<|` that is plain text, (None, -1) while more text is needed to decide."""
    close = buf.find("|>", start + 2, start + 2 + markup.MAX_MARKER_CHARS)
    if close >= 0:
        kind = markup.marker_kind(buf[start + 2 : close])
        if kind is not None:
            return kind, close + 2
    elif not final and (buf[start:] == "<" or markup.could_be_marker(buf[start + 2 :])):
        return None, -1
    return None, start + 2


def _simple_head(buf: str, final: bool) -> tuple[str, int] | tuple[()] | None:
    """For `buf` starting with `functions.`: (written id, offset of `{`) when a simple-form call starts here,
    () when it is prose, None while more text is needed."""
    n = len(buf)
    i = len(_FUNCTIONS)
    while i < n and (buf[i].isalnum() or buf[i] in _NAME_CHARS) and i < _SIMPLE_HEAD_MAX:
        i += 1
    written = buf[:i]
    j = i
    while j < n and buf[j].isspace() and j < _SIMPLE_HEAD_MAX:
        j += 1
    if j < n and (buf.startswith("<|", j) or buf[j:] == "<"):
        kind, end = _marker_at(buf, j, final)
        if end < 0:
            return None
        if kind is not Marker.ARGUMENT_BEGIN:
            return ()
        j = end
        while j < n and buf[j].isspace():
            j += 1
    if j >= n:
        return None if not final and n < _SIMPLE_HEAD_MAX else ()
    if buf[j] != "{" or i == len(_FUNCTIONS):
        return ()
    return written, j


def _held_tail(buf: str) -> int:
    """How many final characters could be the start of a trigger (held back until the next delta)."""
    start = max(0, len(buf) - _HELD_MAX)
    for match in _TAIL_START.finditer(buf, start):
        if buf[match.start() :] in _PREFIXES:
            return len(buf) - match.start()
    return 0


def _closes_fence(line: str, fence: str) -> bool:
    stripped = line.rstrip("\r\n")
    body = stripped.lstrip(" ")
    if len(stripped) - len(body) > 3:
        return False
    run = len(body) - len(body.lstrip(fence[0]))
    return run >= len(fence) and not body[run:].strip()


def _decode_arguments(arguments: str | dict[str, Any] | Any) -> dict[str, Any] | str:
    """The arguments as an object, or why they are not one (a phrase that follows "the arguments of X")."""
    if isinstance(arguments, str):
        text = arguments.strip()
        if not text:
            return {}
        try:
            arguments = _decoder.decode(text)
        except msgspec.DecodeError as exc:
            return f"are not valid JSON ({exc})"
    if not isinstance(arguments, dict):
        return "are not a JSON object"
    return arguments


def _xml_value(text: str, schema: dict[str, Any]) -> Any:
    """A `<parameter>` value: the text itself for a string (one newline each side trimmed), JSON otherwise."""
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    declared = schema.get("type")
    names = declared if isinstance(declared, list) else [declared]
    if declared is None or any(str(name).lower() == "string" for name in names):
        return text
    try:
        return _decoder.decode(text.strip())
    except msgspec.DecodeError:
        return text


def parse_answer(tools: ToolSet, answer: str | Sequence[str], **options: Any) -> tuple[str, ParseResult]:
    """The whole answer at once (tests, the eval program): (all content, the result of `finish`)."""
    parser = ToolCallParser(tools, **options)
    pieces = [answer] if isinstance(answer, str) else answer
    content = "".join(parser.feed(piece) for piece in pieces)
    result = parser.finish()
    return content + result.content, result
