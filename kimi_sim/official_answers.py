"""What the simulated official API answers, deterministically, and how it counts tokens (pure functions).

The rules (kimi_sim/README.md "Official API"):
- the last message is a `tool` result → `Tool {name} returned: {content}`;
- tools are declared, `tool_choice` is not `none`, and lines of the last user message read `call NAME {json}`
  for declared tools → those calls (ids `NAME:N`, N counting the conversation's calls from 0), no text;
  `required` without such a line calls the first declared tool with `{}`;
- otherwise `answers.answer_for(last user text)`, preceded by `[image i: N bytes, sha256:XXXXXXXXXXXXXXXX] ` per
  image of the last user message (vision models);
- thinking models also answer `reasoning_for(last user text or tool result)` as `reasoning_content`.
Usage: `prompt_tokens` = characters of every message's text (string content, text parts, and the names and
arguments of assistant tool calls) + 256 per image; `completion_tokens` = characters of the reasoning, the
content and every call's name and arguments; `total_tokens` their sum.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .answers import answer_for, reasoning_for

IMAGE_TOKENS = 256
_CALL_LINE = re.compile(r"^\s*call\s+([A-Za-z_][A-Za-z0-9_-]*)\s+(\{.*\})\s*$")


@dataclass(frozen=True)
class SimModel:
    id: str
    context_length: int
    #: "toggle": thinks unless `thinking.type` is disabled; "always": always thinks; "none": never.
    thinking: str = "none"
    vision: bool = False
    #: temperature, top_p, n, penalties are fixed: sending them is an error (§4.2).
    fixed_sampling: bool = False
    #: accepts tool_choice "required" (§6).
    required_ok: bool = False
    #: `thinking.keep`: "any" (null or "all"), "all" (only "all"), "none" (not supported).
    keep: str = "none"
    #: takes the top-level `reasoning_effort` (K3).
    effort: bool = False


MODELS: dict[str, SimModel] = {
    m.id: m
    for m in (
        SimModel("kimi-k3", 1_048_576, "always", True, True, True, effort=True),
        SimModel("kimi-k2.7-code", 262_144, "always", True, True, keep="all"),
        SimModel("kimi-k2.7-code-highspeed", 262_144, "always", True, True, keep="all"),
        SimModel("kimi-k2.6", 262_144, "toggle", True, True, keep="any"),
        SimModel("kimi-k2.5", 262_144, "toggle", True, True),
        SimModel("moonshot-v1-8k", 8_192),
        SimModel("moonshot-v1-32k", 32_768),
        SimModel("moonshot-v1-128k", 131_072),
        SimModel("moonshot-v1-auto", 131_072),
        SimModel("moonshot-v1-8k-vision-preview", 8_192, vision=True),
        SimModel("moonshot-v1-32k-vision-preview", 32_768, vision=True),
        SimModel("moonshot-v1-128k-vision-preview", 131_072, vision=True),
    )
}


class InvalidRequest(Exception):
    """A request the API refuses with 400 invalid_request_error; the message is the API's."""


@dataclass
class ToolCallOut:
    id: str
    name: str
    arguments: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass
class Reply:
    reasoning: str
    content: str
    tool_calls: list[ToolCallOut] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


def text_of(content: Any) -> str:
    """A message's text: string content, or its text parts joined with newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def images_of(content: Any) -> list[bytes]:
    """The decoded bytes of each `image_url` part; InvalidRequest for anything but a base64 data URL."""
    if not isinstance(content, list):
        return []
    images = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            ref = part.get("image_url")
            url = ref.get("url") if isinstance(ref, dict) else ref
            images.append(_data_url_bytes(str(url or "")))
    return images


def _data_url_bytes(url: str) -> bytes:
    head, sep, data = url.partition(",")
    if not (url.startswith("data:") and sep and head.endswith(";base64")):
        raise InvalidRequest("Invalid request: image_url must be a base64 data URL or an ms:// file id")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("Invalid request: image_url is not valid base64") from exc


def reply_for(body: dict[str, Any], model: SimModel, thinking: bool) -> Reply:
    messages: list[dict[str, Any]] = body["messages"]
    last = messages[-1]
    if last.get("role") == "tool":
        result = text_of(last.get("content"))
        content = f"Tool {_tool_name(messages, last)} returned: {result}"
        return Reply(reasoning_for(result) if thinking else "", content)
    text = text_of(last.get("content"))
    calls = _calls(body, text, _calls_so_far(messages))
    if calls:
        return Reply(reasoning_for(text) if thinking else "", "", calls)
    notes = "".join(
        f"[image {i}: {len(data)} bytes, sha256:{hashlib.sha256(data).hexdigest()[:16]}] "
        for i, data in enumerate(images_of(last.get("content")), 1)
    )
    return Reply(reasoning_for(text) if thinking else "", notes + answer_for(text))


def _tool_name(messages: list[dict[str, Any]], result: dict[str, Any]) -> str:
    call_id = result.get("tool_call_id")
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict) and call.get("id") == call_id:
                return str((call.get("function") or {}).get("name") or "tool")
    return str(result.get("name") or "tool")


def _calls_so_far(messages: list[dict[str, Any]]) -> int:
    return sum(len(m.get("tool_calls") or []) for m in messages if m.get("role") == "assistant")


def _calls(body: dict[str, Any], text: str, first: int) -> list[ToolCallOut]:
    declared = [
        t["function"]["name"] for t in body.get("tools") or [] if isinstance(t, dict) and "function" in t
    ]
    choice = body.get("tool_choice", "auto")
    if not declared or choice == "none":
        return []
    if isinstance(choice, dict):
        declared = [str((choice.get("function") or {}).get("name"))]
    calls = []
    for line in text.splitlines():
        match = _CALL_LINE.match(line)
        if match is None or match.group(1) not in declared:
            continue
        try:
            arguments = json.loads(match.group(2))
        except ValueError:
            continue
        name = match.group(1)
        calls.append(ToolCallOut(f"{name}:{first + len(calls)}", name, _compact(arguments)))
    if not calls and (choice == "required" or isinstance(choice, dict)):
        calls.append(ToolCallOut(f"{declared[0]}:{first}", declared[0], "{}"))
    return calls


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        total += len(text_of(content)) + IMAGE_TOKENS * _image_count(content)
        for call in message.get("tool_calls") or []:
            function = (call.get("function") or {}) if isinstance(call, dict) else {}
            total += len(str(function.get("name") or "")) + len(str(function.get("arguments") or ""))
    return total


def _image_count(content: Any) -> int:
    if not isinstance(content, list):
        return 0
    return sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")


def completion_tokens(reply: Reply) -> int:
    calls = sum(len(c.name) + len(c.arguments) for c in reply.tool_calls)
    return len(reply.reasoning) + len(reply.content) + calls


def usage(body: dict[str, Any], reply: Reply, model: SimModel) -> dict[str, int]:
    prompt, completion = prompt_tokens(body["messages"]), completion_tokens(reply)
    out = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    if model.id.startswith("kimi-"):
        out["cached_tokens"] = 0  # automatic context caching (§3.2); nothing is cached here
    return out
