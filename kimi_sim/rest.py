"""The legacy REST surface (`/api/...`, kimi-web-rest.md §4, §5, §11)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import answers, tools
from .common import bearer, body_of, json_response, region_of, state_of
from .config import K1_KIMIPLUS_ID
from .faults import REST_STREAM_FAULTS
from .files import note_items, referenced_files, rest_file_ids
from .state import Chat, InvalidToken, SimAccount, SimFile, StreamRecord, StreamStatus
from .streaming import FrameWriter, run_stream
from .tokens import new_xid
from .utf8 import encode_json, split_utf8_chunks, whole

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTH_EXPIRED = "您的授权已过期，请重新登录"
STREAM_ERROR_MESSAGES = {
    "openai.completion.stream": "Kimi 现在有点累了，晚一点再来问问我吧！",
    "openai.completion.token_length_too_long": (
        "转眼间，你和 Kimi 的这个对话已经超过了 20 万字。Kimi 在不断提升自己对话最大长度，"
        "但现在只能麻烦你开启一个新会话。期待与你再相遇！"
    ),
}


def rest_error(status: int, error_type: str, message: str, **extra: Any) -> web.Response:
    return json_response({"error_type": error_type, "message": message, **extra}, status=status)


def auth_error() -> web.Response:
    return rest_error(401, "auth.token.invalid", AUTH_EXPIRED)


def not_found() -> web.Response:
    return rest_error(404, "chat.not_found", "找不到指定的会话")


def stream_pushing() -> web.Response:
    return rest_error(400, "chat.user_stream_pushing", "当前有对话正在生成中，请稍后再试")


FILE_PROBLEMS = {
    "not_found": ("file.not_found", "找不到指定的文件"),
    "not_ready": ("file.not_ready", "文件尚未解析完成"),
}


def rate_limited() -> web.Response:
    return rest_error(429, "chat.completion.rate_limit", "您的长文本对话次数已达上限，请稍后再试")


def authed(handler: Callable[[web.Request, SimAccount], Awaitable[web.StreamResponse]]) -> Handler:
    """Wrap a handler that needs a live access token (401 auth.token.invalid otherwise)."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        token = bearer(request)
        try:
            account = state_of(request).account_for_access(token or "", region_of(request))
        except InvalidToken:
            return auth_error()
        return await handler(request, account)

    return wrapper


async def refresh_token(request: web.Request) -> web.StreamResponse:
    try:
        access, refresh = state_of(request).refresh(bearer(request) or "", region_of(request))
    except InvalidToken:
        return auth_error()
    return json_response({"access_token": access, "refresh_token": refresh})


@authed
async def get_user(request: web.Request, account: SimAccount) -> web.StreamResponse:
    return json_response({"id": account.sub, "status": "normal", "name": "模拟用户"})


@authed
async def create_chat(request: web.Request, account: SimAccount) -> web.StreamResponse:
    body = body_of(request)
    state = state_of(request)
    kimiplus_id = body.get("kimiplus_id") or "kimi"
    if kimiplus_id != "kimi" and kimiplus_id not in state.agents:
        return rest_error(400, "kimiplus.not_found", "找不到对应的KimiPlus")
    chat = state.new_chat(account.sub, "rest", kimiplus_id, str(body.get("name") or "未命名会话"))
    return json_response({"id": chat.id, "name": chat.name, "kimiplus_id": kimiplus_id})


@authed
async def delete_chat(request: web.Request, account: SimAccount) -> web.StreamResponse:
    if not state_of(request).delete_chat(account.sub, request.match_info["chat_id"]):
        return not_found()
    return json_response({})


def _prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))


@authed
async def completion_stream(request: web.Request, account: SimAccount) -> web.StreamResponse:
    state = state_of(request)
    chat = state.chat_for(account.sub, request.match_info["chat_id"])
    if chat is None:
        return not_found()
    body = body_of(request)
    segment_id = body.get("segment_id")
    continuing = body.get("action") == "continue" and isinstance(segment_id, str)
    prompt = _prompt(body)
    if continuing and segment_id not in chat.pending_segments:
        return rest_error(400, "validation.error", "参数验证错误", detail=["segment_id is invalid"])
    if not continuing and not prompt.strip():
        return rest_error(400, "validation.error", "参数验证错误", detail=["Content is a required field"])
    files, problem = referenced_files(state, account.sub, rest_file_ids(body))
    if problem is not None:
        return rest_error(400, *FILE_PROBLEMS[problem])
    faults = state.faults.take_stream_faults(request.path, REST_STREAM_FAULTS)
    if "user_stream_pushing" in faults:
        return stream_pushing()
    if "quota_exhausted" in faults or not (continuing or state.take_long_text_round(account.sub, prompt)):
        return rate_limited()
    record = state.open_stream("rest", request.path, account.sub, chat.id)
    if record is None:
        return stream_pushing()
    if body.get("use_research"):
        state.research_used[account.sub] += 1
    script = RestScript(request, chat, body, prompt, faults, files)
    return await script.run(record)


class RestScript:
    """One completion stream: the §5.3 event order, with this call's faults applied."""

    def __init__(
        self,
        request: web.Request,
        chat: Chat,
        body: dict[str, Any],
        prompt: str,
        faults: dict[str, dict[str, Any]],
        files: list[SimFile] | None = None,
    ) -> None:
        self.request = request
        self.chat = chat
        self.body = body
        self.prompt = prompt
        self.faults = faults
        self.files = files or []
        self.config = state_of(request).config
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        self.writer = FrameWriter(request, self.response, faults)
        self.group_id = new_xid()
        self.answer_sent = ""
        #: The tool-call answer when the prompt declares tools (kimi_sim/tools.py), else None.
        self.tool: tools.ToolReply | None = None

    async def run(self, record: StreamRecord) -> web.StreamResponse:
        reset = self.faults.get("cut_mid_stream", {}).get("mode") == "reset"
        try:
            return await run_stream(self.request, self.response, self.writer, record, self._events, reset)
        finally:
            self.chat.update_time = time.time()

    async def emit(self, event: dict[str, Any]) -> None:
        await self.writer.send(b"data: " + encode_json(event) + b"\n\n")

    async def _events(self) -> StreamStatus:
        segment_id = self.body.get("segment_id")
        if isinstance(segment_id, str) and self.body.get("action") == "continue":
            text = self.chat.pending_segments.pop(segment_id)
            prompt_echo = self.prompt
        else:
            history = "\n".join(str(m.get("content") or "") for m in self.chat.messages)
            self.tool = tools.tool_reply(history, self.prompt, self.faults)
            if self.tool is not None:
                text = self.tool.text
            else:
                text = answers.answer_for(self.prompt) + answers.attachments_note(note_items(self.files))
            prompt_echo = self.prompt
        req_id, resp_id = new_xid(), new_xid()
        await self.emit(
            {
                "event": "req",
                "id": req_id,
                "group_id": self.group_id,
                "content": prompt_echo,
                "refs": self.body.get("refs") or [],
            }
        )
        user: dict[str, Any] = {"id": req_id, "role": "user", "content": prompt_echo}
        if self.files:
            user["files"] = [f.id for f in self.files]
        self.chat.messages.append(user)
        await self.emit({"event": "resp", "id": resp_id, "group_id": self.group_id})
        if (unknown := self.faults.get("unknown_event")) is not None:
            await self.emit({"event": str(unknown.get("kind", "sim_future_event")), "payload": {"n": 1}})
        await self.emit({"event": "debug", "message": {"need2search": bool(self.body.get("use_search"))}})
        if (stall := self.faults.get("stall_mid_stream")) is not None:
            await self.writer.flush()
            await self.writer.pause(float(stall.get("seconds", 1.0)))
        if self.body.get("use_search"):
            await self._search()
        if self._is_k1():
            await self._k1()
        status = await self._answer(req_id, text)
        self.chat.messages.append({"id": resp_id, "role": "assistant", "content": whole(self.answer_sent)})
        return status

    def _is_k1(self) -> bool:
        return self.body.get("kimiplus_id") == K1_KIMIPLUS_ID or "k1" in str(self.body.get("model") or "")

    async def _search(self) -> None:
        await self.emit({"event": "search_plus", "msg": {"type": "start"}})
        results = answers.search_results_for(self.prompt)
        for number, result in enumerate(results, 1):
            msg = {"type": "get_res", "successNum": number, **result, "date": "2025-01-01"}
            await self.emit({"event": "search_plus", "msg": msg})
        await self.emit({"event": "search_plus", "msg": {"type": "answer"}})
        cards = [
            {"ref_id": i, "url": r["url"], "title": r["title"], "abstract": r["snippet"]}
            for i, r in enumerate(results, 1)
        ]
        await self.emit({"event": "ref_docs", "ref_cards": cards})

    def _chunks(self, text: str) -> list[str]:
        """The text's pieces, one per event; `split_utf8_events` cuts characters between events."""
        if "split_utf8_events" in self.faults:
            return split_utf8_chunks(text, self.config.chunk_count)
        return answers.split_chunks(text, self.config.chunk_count)

    async def _k1(self) -> None:
        reasoning = answers.reasoning_for(self.prompt)
        if self.tool is not None and self.tool.reasoning is not None:
            reasoning = self.tool.reasoning
        for piece in self._chunks(reasoning):
            if self.config.k1_event_shape == "data":
                await self.emit({"event": "k1", "data": {"text": piece}})
            else:
                await self.emit({"event": "k1", "text": piece})
            await self._delay()

    async def _answer(self, req_id: str, text: str) -> StreamStatus:
        length = self.faults.get("length")
        if length is not None:
            keep = len(text) // 2
            text, self.chat.pending_segments[req_id] = text[:keep], text[keep:]
        await self.emit({"event": "zone_set", "zone_type": "answer"})
        if self.tool is not None:
            chunks = tools.tool_chunks(text, self.config.tool_chunk_chars)
        else:
            chunks = self._chunks(text)
        unknown = self.faults.get("unknown_event")
        for index, piece in enumerate(chunks, 1):
            event: dict[str, Any] = {"event": "cmpl", "text": piece}
            if unknown is not None and index == 1:
                event[str(unknown.get("field", "sim_future_field"))] = 1
            await self.emit(event)
            self.answer_sent += piece
            if (ended := await self._after_chunk(index, len(chunks))) is not None:
                return ended
            await self._delay()
        await self.emit({"event": "chat_prompt", "text": "还有什么想问的吗？"})
        if length is not None:
            await self.emit({"event": "length"})
        title = answers.title_for(self.prompt)
        if self.body.get("action") != "continue":
            self.chat.name = title
            await self.emit({"event": "rename", "text": title})
        await self.emit({"event": "all_done"})
        return "completed"

    async def _after_chunk(self, index: int, total: int) -> StreamStatus | None:
        """Mid-answer extras and faults after cmpl number `index`; a final status ends the stream."""
        if index == 1 and "malformed_event" in self.faults:
            await self.writer.send(b'data: {"event":"cmpl","text":\n\n')
        if (error := self.faults.get("stream_error")) is not None and index >= int(
            error.get("after_chunks", 1)
        ):
            error_type = str(error.get("error_type", "openai.completion.stream"))
            message = STREAM_ERROR_MESSAGES.get(error_type, "服务内部错误")
            await self.emit({"event": "error", "error": {"error_type": error_type, "message": message}})
            return "error"
        cut = self.faults.get("cut_mid_stream")
        if cut is not None and index >= int(cut.get("after_chunks", 1)):
            return "cut"
        if index == 1 and total > 1:
            await self.emit({"event": "done"})
        return None

    async def _delay(self) -> None:
        if self.config.chunk_delay_s > 0:
            await self.writer.flush()
            await self.writer.pause(self.config.chunk_delay_s)


@authed
async def empty_object(request: web.Request, account: SimAccount) -> web.StreamResponse:
    return json_response({})


@authed
async def empty_list(request: web.Request, account: SimAccount) -> web.StreamResponse:
    return json_response({"items": []})


@authed
async def research_usage(request: web.Request, account: SimAccount) -> web.StreamResponse:
    return json_response(state_of(request).research_usage(account.sub))


def routes() -> list[web.RouteDef]:
    from . import upload

    return [
        web.get("/api/auth/token/refresh", refresh_token),
        web.get("/api/user", get_user),
        web.post("/api/chat", create_chat),
        web.delete("/api/chat/{chat_id}", delete_chat),
        web.post("/api/chat/{chat_id}/completion/stream", completion_stream),
        web.post("/api/chat/{chat_id}/pre-n2s", empty_object),
        web.post("/api/chat/{chat_id}/token_size", empty_object),
        web.get("/api/chat/research/usage", research_usage),
        web.post("/api/suggestion", empty_list),
        web.post("/api/user/usage", empty_object),
        web.get("/api/chat_1m/user/status", empty_object),
        web.get("/api/kimi_mv/user/status", empty_object),
        web.post("/api/kimiplus/history", empty_list),
        web.post("/api/kimiplus/search", empty_list),
        web.post("/api/chat/list", empty_list),
        web.post("/api/show_case/list", empty_list),
        web.post("/api/prompt-snippet/instance", empty_list),
        *upload.routes(authed),
    ]
