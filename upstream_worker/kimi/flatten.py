"""Turning a chat history into the single prompt Kimi's web chat takes (kimi-web-rest.md §7.4).

REST follows kimi-free-api exactly:

* pass-through mode (a continuation, or fewer than 2 messages): every message's text followed by "\\n", text
  parts one per line, no role prefixes;
* merge mode: a `system` line asking Kimi to focus on the latest message goes just before the last
  message, then every message becomes `<role>:<text>\\n` (one line per text part).

In both, http(s) URLs in a user's string content are wrapped the way the web UI does it so Kimi fetches
the page. Connect uses merge mode without URL wrapping for new chats, and only the last user turn when
continuing a chat (the chat already holds the history, kimi-web-connect.md §2.7).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from shared.schema import AttachmentPart, Message, TextPart

FOCUS_LATEST = "关注用户最新的消息"
FOCUS_LATEST_WITH_FILES = "关注用户最新发送文件和消息"
_URL = re.compile(r"https?://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")


def wrap_urls(text: str) -> str:
    return _URL.sub(lambda m: f'<url id="" type="url" status="" title="" wc="">{m.group(0)}</url>', text)


def flatten_rest(messages: Sequence[Message], continuation: bool) -> str:
    """The one user message kimi-free-api sends for this history."""
    if continuation or len(messages) < 2:
        return _files_alone("".join(_passthrough(m) for m in messages), messages)
    focus = FOCUS_LATEST_WITH_FILES if _has_attachment(messages[-1]) else FOCUS_LATEST
    merged = [*messages[:-1], Message(role="system", content=focus), messages[-1]]
    return "".join(_merged(m, wrap=True) for m in merged)


def flatten_connect(messages: Sequence[Message], continuation: bool) -> str:
    """The text block of a Connect Chat request."""
    if continuation:
        return _files_alone(last_user_text(messages), messages)
    if len(messages) < 2:
        return _files_alone("".join(m.text() for m in messages), messages)
    focus = FOCUS_LATEST_WITH_FILES if _has_attachment(messages[-1]) else FOCUS_LATEST
    merged = [*messages[:-1], Message(role="system", content=focus), messages[-1]]
    return "".join(_merged(m, wrap=False) for m in merged).rstrip("\n")


def _files_alone(text: str, messages: Sequence[Message]) -> str:
    """A turn of files without a word: Kimi takes no empty prompt, so it gets the web chat's own request to
    look at the files the user just sent."""
    if text.strip() or not messages or not _has_attachment(messages[-1]):
        return text
    return FOCUS_LATEST_WITH_FILES


def last_user_text(messages: Sequence[Message]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return message.text()
    return messages[-1].text() if messages else ""


def _passthrough(message: Message) -> str:
    if isinstance(message.content, str):
        text = wrap_urls(message.content) if message.role == "user" else message.content
        return text + "\n"
    return "".join(part.text + "\n" for part in message.content if isinstance(part, TextPart))


def _merged(message: Message, wrap: bool) -> str:
    role = message.role or "user"
    if isinstance(message.content, str):
        text = wrap_urls(message.content) if wrap and role == "user" else message.content
        return f"{role}:{text}\n"
    return "".join(f"{role}:{part.text}\n" for part in message.content if isinstance(part, TextPart))


def turn_attachments(messages: Sequence[Message], protocol: str, continuation: bool) -> list[AttachmentPart]:
    """The attachments one turn must reference, once each, in order of appearance: those of every message the
    flattened text carries (REST always sends the whole history; Connect only the last user turn when it
    continues a chat, whose earlier files Kimi already holds)."""
    if protocol == "connect" and continuation:
        users = [m for m in messages if m.role == "user"]
        messages = users[-1:]
    seen: dict[str, AttachmentPart] = {}
    for message in messages:
        for part in _attachments(message):
            seen.setdefault(part.sha256, part)
    return list(seen.values())


def _attachments(message: Message) -> list[AttachmentPart]:
    if isinstance(message.content, str):
        return []
    return [part for part in message.content if isinstance(part, AttachmentPart)]


def _has_attachment(message: Message) -> bool:
    return bool(_attachments(message))
