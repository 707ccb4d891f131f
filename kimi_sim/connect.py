"""The Connect RPC surface (`/apiv2/...`, kimi-web-connect.md §1.5, §2, §3, §5, §7)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from aiohttp import web

from . import answers, tools
from .common import bearer, json_response, pick, region_of, state_of
from .config import SimConfig
from .envelope import FLAG_DATA, FLAG_END_STREAM, frame, json_frame, split_frames
from .faults import CONNECT_STREAM_FAULTS
from .files import connect_file_ids, note_items, referenced_files
from .state import Chat, InvalidToken, SimAccount, SimFile, StreamRecord, StreamStatus, iso_time
from .streaming import FrameWriter, run_stream
from .tokens import new_xid
from .utf8 import split_utf8_chunks, whole

CONNECT_JSON = "application/connect+json"
CHAT_PATH = "/apiv2/kimi.gateway.chat.v1.ChatService/Chat"
HEARTBEAT = json_frame({"heartbeat": {}})
END_OK = json_frame({}, FLAG_END_STREAM)
OVERLOADED = "Too many people are chatting with Kimi right now. Subscribe to enter a priority queue!"
AGENT_SCENARIOS = frozenset({"SCENARIO_OK_COMPUTER"})
THINKING_SCENARIOS = frozenset({"SCENARIO_K1"})
RESEARCH_SCENARIOS = frozenset({"SCENARIO_RESEARCH", "SCENARIO_DEEP_RESEARCH"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
FILE_PROBLEMS = {
    "not_found": ("not_found", "file not found", "REASON_FILE_NOT_FOUND"),
    "not_ready": ("failed_precondition", "file is not parsed yet", "REASON_FILE_NOT_READY"),
}


def error_body(code: str, message: str, reason: str | None = None, **debug: Any) -> dict[str, Any]:
    """A Connect `Error`; `reason` and `debug` go in `details[0].debug` as Kimi's gateway renders them."""
    error: dict[str, Any] = {"code": code, "message": message}
    if reason is not None:
        localized = {"locale": "en-US", "message": message}
        error["details"] = [
            {
                "type": "kimi.gateway.ErrorDetail",
                "debug": {"reason": reason, "localizedMessage": localized, **debug},
            }
        ]
    return error


def unary_error(status: int, code: str, message: str, reason: str | None = None) -> web.Response:
    return json_response(error_body(code, message, reason), status=status)


def unauthenticated() -> web.Response:
    """HTTP 401 with the §3.7a body (also the Chat stream's answer to a bad token)."""
    return unary_error(401, "unauthenticated", "Invalid auth token", "REASON_INVALID_AUTH_TOKEN")


def trailer_response(error: dict[str, Any], leading: list[bytes] | None = None) -> web.Response:
    """HTTP 200 whose body is `leading` frames then a flag-2 error trailer."""
    body = b"".join(leading or []) + json_frame({"error": error}, FLAG_END_STREAM)
    return web.Response(body=body, status=200, content_type=CONNECT_JSON)


def invalid_argument(message: str) -> web.Response:
    return trailer_response(error_body("invalid_argument", message))


def authed(handler: Callable[[web.Request, SimAccount], Awaitable[web.StreamResponse]]) -> Handler:
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            account = state_of(request).account_for_access(bearer(request) or "", region_of(request))
        except InvalidToken:
            return unauthenticated()
        return await handler(request, account)

    return wrapper


def decode_chat_request(request: web.Request, raw: bytes) -> dict[str, Any] | str:
    """The ChatRequest JSON inside the one flag-0 envelope, or a reason why the body is invalid."""
    if not request.content_type.startswith(CONNECT_JSON):
        return f"content type must be {CONNECT_JSON}"
    try:
        frames = split_frames(raw)
    except ValueError as exc:
        return str(exc)
    if len(frames) != 1 or frames[0][0] != FLAG_DATA:
        return "the request must be exactly one data envelope"
    try:
        message = msgspec.json.decode(frames[0][1])
    except msgspec.DecodeError:
        return "the request envelope is not JSON"
    if not isinstance(message, dict) or not isinstance(message.get("message"), dict):
        return "the request has no message"
    return message


def prompt_of(message: dict[str, Any]) -> str:
    blocks = message.get("blocks")
    texts = [
        str(block["text"].get("content") or "")
        for block in (blocks if isinstance(blocks, list) else [])
        if isinstance(block, dict) and isinstance(block.get("text"), dict)
    ]
    return "\n".join(texts)


@authed
async def chat(request: web.Request, account: SimAccount) -> web.StreamResponse:
    state = state_of(request)
    parsed = decode_chat_request(request, await request.read())
    if isinstance(parsed, str):
        return invalid_argument(parsed)
    message: dict[str, Any] = parsed["message"]
    prompt = prompt_of(message)
    if not prompt.strip():
        return invalid_argument("the message has no text")
    chat_id = str(pick(parsed, "chat_id", "chatId") or "")
    existing = state.chat_for(account.sub, chat_id) if chat_id else None
    if chat_id and existing is None:
        return trailer_response(error_body("not_found", "chat not found", "REASON_CHAT_NOT_FOUND"))
    files, problem = referenced_files(state, account.sub, connect_file_ids(message))
    if problem is not None:
        return trailer_response(error_body(*FILE_PROBLEMS[problem]))
    faults = state.faults.take_stream_faults(request.path, CONNECT_STREAM_FAULTS)
    if "user_stream_pushing" in faults or state.user_busy(account.sub):
        return busy()
    if "quota_exhausted" in faults or not state.take_long_text_round(account.sub, prompt):
        error = error_body(
            "resource_exhausted", "Long-text quota exhausted", "REASON_LONG_TEXT_QUOTA_EXCEEDED"
        )
        return trailer_response(error, [HEARTBEAT])
    if account.plan == "free" and _refused_for_free(state.config, parsed):
        error = error_body("resource_exhausted", OVERLOADED, "REASON_SERVER_OVERLOADED_FOR_FREE_USER")
        return trailer_response(error, [HEARTBEAT])
    scenario = str(parsed.get("scenario") or message.get("scenario") or "SCENARIO_K2D5")
    kimiplus_id = str(pick(parsed, "kimiplus_id", "kimiplusId") or "")
    target = existing or state.new_chat(account.sub, "connect", kimiplus_id or "kimi", "Untitled Chat")
    record = state.open_stream("connect", request.path, account.sub, target.id)
    if record is None:
        return busy()
    if scenario in RESEARCH_SCENARIOS:
        state.research_used[account.sub] += 1
    script = ConnectScript(request, target, parsed, prompt, scenario, faults, existing is None, files)
    return await script.run(record)


def _refused_for_free(config: SimConfig, parsed: dict[str, Any]) -> bool:
    """A free account asking for a gated model (`options.model`), or any model at peak hours (§4.4)."""
    options = parsed.get("options")
    model = str(options.get("model") or "") if isinstance(options, dict) else ""
    return config.peak_hours or (bool(model) and model in config.paid_models.split(","))


def busy() -> web.Response:
    error = error_body(
        "resource_exhausted", "Another reply is being generated for this user", "REASON_USER_STREAM_PUSHING"
    )
    return trailer_response(error)


class ConnectScript:
    """One Chat stream: the §7.4 event script, with this call's faults applied."""

    def __init__(
        self,
        request: web.Request,
        chat: Chat,
        parsed: dict[str, Any],
        prompt: str,
        scenario: str,
        faults: dict[str, dict[str, Any]],
        is_new: bool,
        files: list[SimFile] | None = None,
    ) -> None:
        self.request = request
        self.chat = chat
        self.parsed = parsed
        self.prompt = prompt
        self.scenario = scenario
        self.faults = faults
        self.is_new = is_new
        self.files = files or []
        self.config = state_of(request).config
        self.response = web.StreamResponse(headers={"Content-Type": CONNECT_JSON})
        self.writer = FrameWriter(request, self.response, faults, HEARTBEAT, self.config.heartbeat_interval_s)
        self.offset = 0
        self.text_sent = ""
        #: The tool-call answer when the prompt declares tools (kimi_sim/tools.py), else None.
        history = "\n".join(str(m.get("content") or "") for m in chat.messages)
        self.tool = tools.tool_reply(history, prompt, faults)

    async def run(self, record: StreamRecord) -> web.StreamResponse:
        reset = self.faults.get("cut_mid_stream", {}).get("mode") == "reset"
        try:
            return await run_stream(self.request, self.response, self.writer, record, self._script, reset)
        finally:
            self.chat.update_time = time.time()

    async def event(self, op: str | None, mask: str | None, **payload: Any) -> None:
        self.offset += 1
        event: dict[str, Any] = {}
        if op is not None:
            event["op"] = op
        if mask is not None:
            event["mask"] = mask
        event["eventOffset"] = self.offset
        event.update(payload)
        await self.writer.send(json_frame(event))

    async def trailer(self, error: dict[str, Any] | None) -> None:
        await self.writer.send(END_OK if error is None else json_frame({"error": error}, FLAG_END_STREAM))

    async def _script(self) -> StreamStatus:
        await self.writer.send(HEARTBEAT)
        if (early := await self._early_error()) is not None:
            return early
        user_id, assistant_id = await self._messages()
        if (stall := self.faults.get("stall_mid_stream")) is not None:
            await self.writer.flush()
            await self.writer.pause(float(stall.get("seconds", 1.0)))
        if self._has_search():
            await self._search()
        if self._thinking():
            await self._think()
        if self.scenario in AGENT_SCENARIOS:
            await self._tool()
        ended = await self._text()
        self.chat.messages.append(
            {"id": assistant_id, "role": "assistant", "content": whole(self.text_sent), "parent_id": user_id}
        )
        if ended is not None:
            return ended
        return await self._finish(assistant_id)

    async def _early_error(self) -> StreamStatus | None:
        """Faults answered with heartbeats then an error trailer instead of a reply."""
        if (fault := self.faults.get("resource_exhausted")) is not None:
            for _ in range(int(fault.get("heartbeats", 1)) - 1):
                await self.writer.send(HEARTBEAT)
            await self.trailer(
                error_body("resource_exhausted", OVERLOADED, "REASON_SERVER_OVERLOADED_FOR_FREE_USER")
            )
            return "error"
        if "paywall" in self.faults:
            message = "This feature requires a subscription"
            paywall = {"type": "PAYWALL_TYPE_SUBSCRIPTION", "scenario": self.scenario}
            await self.trailer(error_body("resource_exhausted", message, "REASON_PAYWALL", paywall=paywall))
            return "error"
        if "unauthenticated_trailer" in self.faults:
            await self.trailer(
                error_body("unauthenticated", "Invalid auth token", "REASON_INVALID_AUTH_TOKEN")
            )
            return "error"
        return None

    async def _messages(self) -> tuple[str, str]:
        now = iso_time(time.time())
        if self.is_new:
            chat = {"id": self.chat.id, "name": self.chat.name, "createTime": now, "updateTime": now}
            await self.event("set", None, chat=chat)
        message = self.parsed["message"]
        parent_id = str(pick(message, "parent_id", "parentId") or "")
        user_id, assistant_id = new_xid(), new_xid()
        user = {
            "id": user_id,
            "parentId": parent_id,
            "role": "user",
            "status": "MESSAGE_STATUS_COMPLETED",
            "blocks": [{"id": "text_0_0", "text": {"content": self.prompt}}],
            "scenario": self.scenario,
            "createTime": now,
        }
        await self.event("set", "message", message=user)
        recorded: dict[str, Any] = {
            "id": user_id,
            "role": "user",
            "content": self.prompt,
            "parent_id": parent_id,
        }
        if self.files:
            recorded["files"] = [f.id for f in self.files]
            meta = [
                {"id": f.id, "name": f.name, "contentType": f.mime, "sizeBytes": str(f.size)}
                for f in self.files
            ]
            await self.event("append", "chat.files", chat={"files": meta})
        self.chat.messages.append(recorded)
        assistant = {
            "id": assistant_id,
            "parentId": user_id,
            "role": "assistant",
            "status": "MESSAGE_STATUS_GENERATING",
            "scenario": self.scenario,
            "createTime": now,
        }
        await self.event("set", "message", message=assistant)
        if (unknown := self.faults.get("unknown_event")) is not None:
            await self.event(None, None, **{str(unknown.get("kind", "simFutureEvent")): {"n": 1}})
        return user_id, assistant_id

    def _has_search(self) -> bool:
        tools = self.parsed.get("tools")
        return isinstance(tools, list) and any(
            isinstance(t, dict) and t.get("type") == "TOOL_TYPE_SEARCH" for t in tools
        )

    def _thinking(self) -> bool:
        options = self.parsed.get("options")
        return (
            isinstance(options, dict) and options.get("thinking") is True
        ) or self.scenario in THINKING_SCENARIOS

    async def _search(self) -> None:
        keywords = answers.search_keywords_for(self.prompt)
        await self.event(
            "set", "block.search.keywords", block={"id": "0_0", "search": {"keywords": keywords}}
        )
        for result in answers.search_results_for(self.prompt):
            page = {
                "title": result["title"],
                "url": result["url"],
                "siteName": result["site_name"],
                "iconUrl": "",
                "snippet": result["snippet"],
                "publishTime": "2025-01-01T00:00:00Z",
                "siteQuality": {},
            }
            await self.event(
                "append", "block.search.webPages", block={"id": "0_0", "search": {"webPages": [page]}}
            )

    def _chunks(self, text: str) -> list[str]:
        """The text's pieces, one per event; `split_utf8_events` cuts characters between events."""
        if "split_utf8_events" in self.faults:
            return split_utf8_chunks(text, self.config.chunk_count)
        return answers.split_chunks(text, self.config.chunk_count)

    async def _think(self) -> None:
        reasoning = answers.reasoning_for(self.prompt)
        if self.tool is not None and self.tool.reasoning is not None:
            reasoning = self.tool.reasoning
        pieces = self._chunks(reasoning)
        for index, piece in enumerate(pieces):
            op, mask = ("set", "block.think") if index == 0 else ("append", "block.think.content")
            await self.event(op, mask, block={"id": "1", "think": {"content": piece}})
            await self._delay()

    async def _tool(self) -> None:
        args = msgspec.json.encode({"query": answers.last_line(self.prompt)}).decode()
        start = {"toolCallId": "web_search_0", "name": "web_search", "status": "STATUS_PENDING"}
        await self.event("set", None, block={"id": "3", "parentId": "2", "tool": start})
        half = len(args) // 2
        for fragment in (args[:half], args[half:]):
            await self.event("append", "block.tool.args", block={"id": "3", "tool": {"args": fragment}})
        running = {"toolCallId": "web_search:1", "args": args, "status": "STATUS_RUNNING"}
        await self.event(
            "set",
            "block.tool.args,block.tool.status,block.tool.toolCallId",
            block={"id": "3", "tool": running},
        )
        done = {"contents": [{"text": "模拟工具结果"}], "status": "STATUS_DONE"}
        await self.event("set", "block.tool.contents,block.tool.status", block={"id": "3", "tool": done})

    async def _text(self) -> StreamStatus | None:
        if self.tool is not None:
            chunks = tools.tool_chunks(self.tool.text, self.config.tool_chunk_chars)
        else:
            text = answers.answer_for(self.prompt) + answers.attachments_note(note_items(self.files))
            chunks = self._chunks(text)
        unknown = self.faults.get("unknown_event")
        for index, piece in enumerate(chunks, 1):
            op, mask = ("set", "block.text") if index == 1 else ("append", "block.text.content")
            block_text: dict[str, Any] = {"content": piece}
            if unknown is not None and index == 1:
                block_text[str(unknown.get("field", "simFutureField"))] = 1
            await self.event(op, mask, block={"id": "2", "text": block_text})
            self.text_sent += piece
            if index == 1 and "malformed_event" in self.faults:
                await self.writer.send(frame(b'{"op":"append","mask":'))
            cut = self.faults.get("cut_mid_stream")
            if cut is not None and index >= int(cut.get("after_chunks", 1)):
                return "cut"
            await self._delay()
        return None

    async def _finish(self, assistant_id: str) -> StreamStatus:
        title = answers.title_for(self.prompt)
        self.chat.name = title
        await self.event("set", "chat.name", chat={"id": self.chat.id, "name": title})
        status = {"id": assistant_id, "status": "MESSAGE_STATUS_COMPLETED"}
        await self.event("set", "message.status", message=status)
        await self.event(None, None, done={})
        if (fault := self.faults.get("done_then_error")) is not None:
            code = str(fault.get("code", "resource_exhausted"))
            await self.trailer(error_body(code, OVERLOADED, "REASON_SERVER_OVERLOADED_FOR_FREE_USER"))
            return "error"
        await self.trailer(None)
        return "completed"

    async def _delay(self) -> None:
        if self.config.chunk_delay_s > 0:
            await self.writer.flush()
            await self.writer.pause(self.config.chunk_delay_s)
