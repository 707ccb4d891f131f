"""The Connect `ChatRequest` JSON (kimi-web-connect.md §2.2–§2.8), as msgspec Structs encoded once per turn.

Field names are snake_case except `kimiplusId` and `agentMode`, which every working client spells that way;
the agent mode also goes into `options.agent_mode`, since the sources disagree on its place (§8.1) and the
server ignores unknown keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from shared.errors import ServiceUnavailable
from shared.models import ModelSpec
from shared.schema import ChatRequest
from upstream_worker.kimi.envelope import encode_envelope
from upstream_worker.kimi.files import CONNECT_READY, KimiFile
from upstream_worker.kimi.flatten import flatten_connect

SEARCH_TOOL = "TOOL_TYPE_SEARCH"
AGENT_KIMIPLUS_DEFAULT = "ok-computer"


class _Wire(msgspec.Struct, omit_defaults=True):
    pass


class TextContent(_Wire):
    content: str


class Block(_Wire):
    message_id: str
    text: TextContent


class FileRef(_Wire):
    id: str
    status: str  # required, so it is sent: the capture always carries it


class FileBlock(_Wire):
    """An uploaded file, after the text block: `{"file": {"id", "status"}}` as the 2026 capture sends it."""

    file: FileRef


class Tool(_Wire):
    type: str
    search: dict[str, object] | None = None


class UserMessage(_Wire):
    role: str
    blocks: list[Block | FileBlock]
    scenario: str
    parent_id: str | None = None
    is_goal: bool | None = None


class Options(_Wire):
    thinking: bool  # required, so `false` is sent too
    enable_plugin: bool | None = None
    agent_mode: str | None = None
    #: The 2026 catalogue's entry id and effort (kimi-web-2026.md §4.2), from the model table.
    model: str | None = None
    reasoning_effort: str | None = None


class ConnectChatRequest(_Wire):
    scenario: str
    tools: list[Tool]
    message: UserMessage
    options: Options
    chat_id: str = ""
    kimiplusId: str | None = None
    agentMode: str | None = None


_encoder = msgspec.json.Encoder()


def build_request(
    request: ChatRequest,
    spec: ModelSpec,
    chat_id: str | None,
    parent_id: str | None,
    files: Sequence[KimiFile] = (),
) -> ConnectChatRequest:
    """One turn: a new chat carries the flattened history, a continuation only the new user turn; `files`
    (uploaded through the file service) follow the text block.

    A model without a web lane is refused: a kimi-auth account (always Connect) must not serve it in its stead.
    """
    if not spec.web:
        raise ServiceUnavailable(f"the model {spec.id!r} is served only through official API keys")
    continuation = chat_id is not None
    text = flatten_connect(request.messages, continuation)
    search = spec.search or request.options.search
    agent = spec.agent_mode
    return ConnectChatRequest(
        scenario=spec.scenario,
        chat_id=chat_id or "",
        tools=[Tool(SEARCH_TOOL, {})] if search else [],
        message=UserMessage(
            role="user",
            blocks=[Block("", TextContent(text)), *(FileBlock(FileRef(f.id, CONNECT_READY)) for f in files)],
            scenario=spec.scenario,
            parent_id=parent_id or ("" if not continuation else None),
            is_goal=False if agent else None,
        ),
        options=Options(
            thinking=spec.thinking or request.options.thinking,
            enable_plugin=True if agent else None,
            agent_mode=agent,
            model=spec.web_model,
            reasoning_effort=spec.reasoning_effort,
        ),
        kimiplusId=(spec.kimiplus_id or AGENT_KIMIPLUS_DEFAULT) if agent else None,
        agentMode=agent,
    )


def encode_request(body: ConnectChatRequest) -> bytes:
    """The HTTP body: one flag-0 envelope around the JSON."""
    return encode_envelope(_encoder.encode(body))
