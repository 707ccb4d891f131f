"""The official Moonshot Open Platform API (moonshot-official-api.md), served under a path prefix per region.

`/moonshot/v1/...` stands for `https://api.moonshot.ai/v1/...` (global) and `/moonshot-cn/v1/...` for
`https://api.moonshot.cn/v1/...` (China): chat completions (stream and not), models, balance, token estimate,
with the platform's error shape `{"error": {"type", "message"}}`. Keys come from `POST /__sim/api_keys`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import official_answers as oa
from .answers import split_chunks
from .common import bearer, body_of, json_response, state_of
from .faults import OFFICIAL_STREAM_FAULTS
from .official_rules import ApiFailure, error_body, validate
from .official_state import PREFIXES, ApiKey, Region
from .state import StreamRecord, StreamStatus
from .streaming import FrameWriter, run_stream
from .tokens import new_xid
from .utf8 import encode_json

KeyHandler = Callable[[web.Request, ApiKey], Awaitable[web.StreamResponse]]


def api_error(
    error_type: str,
    message: str | None = None,
    key: ApiKey | None = None,
    model: str = "",
    retry_after: Any = None,
) -> web.Response:
    """The platform's error answer, with `Retry-After` when one is given."""
    after = retry_after if retry_after is not None else 1
    status, body = error_body(error_type, message, key, model, after)
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(body, status=status, headers=headers)


def region_of(request: web.Request) -> Region:
    return "cn" if request.path.startswith(PREFIXES["cn"] + "/") else "global"


def authed(handler: KeyHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A live key of this region (401 incorrect_api_key_error otherwise; a revoked one: invalid_authentication)."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        key = state_of(request).official.keys.get(bearer(request) or "")
        if key is None or key.region != region_of(request):
            return api_error("incorrect_api_key_error")
        if key.revoked:
            return api_error("invalid_authentication_error")
        return await handler(request, key)

    return wrapper


@authed
async def list_models(request: web.Request, key: ApiKey) -> web.StreamResponse:
    data = [
        {
            "id": m.id,
            "object": "model",
            "created": 1_735_689_600,
            "owned_by": "moonshot",
            "context_length": m.context_length,
            "supports_reasoning": m.thinking != "none",
            "supports_image_in": m.vision,
        }
        for m in oa.MODELS.values()
        if key.models is None or m.id in key.models
    ]
    return json_response({"object": "list", "data": data})


@authed
async def balance(request: web.Request, key: ApiKey) -> web.StreamResponse:
    data = {
        "available_balance": key.available_balance,
        "voucher_balance": key.voucher_balance,
        "cash_balance": key.cash_balance,
    }
    return json_response({"code": 0, "data": data, "scode": "0x0", "status": True})


@authed
async def estimate_tokens(request: web.Request, key: ApiKey) -> web.StreamResponse:
    body = body_of(request)
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return api_error("invalid_request_error", "Invalid request: messages must be a list of messages")
    return json_response({"data": {"total_tokens": oa.prompt_tokens(messages)}})


@authed
async def chat_completions(request: web.Request, key: ApiKey) -> web.StreamResponse:
    state = state_of(request)
    body = body_of(request)
    model_id = str(body.get("model") or "")
    faults = state.faults.take_stream_faults(request.path, OFFICIAL_STREAM_FAULTS)
    error = faults.get("official_error")
    streaming = body.get("stream") is True
    if error is not None and not (streaming and "after_chunks" in error):
        return api_error(
            str(error.get("type", "server_error")),
            error.get("message"),
            key,
            model_id,
            error.get("retry_after"),
        )
    if "stream_options_rejected" in faults and "stream_options" in body:
        return api_error("invalid_request_error", "Invalid request: unknown field stream_options")
    try:
        model, thinking = validate(body, key)
        reply = oa.reply_for(body, model, thinking)
    except oa.InvalidRequest as exc:
        return api_error("invalid_request_error", str(exc))
    except ApiFailure as exc:
        return api_error(exc.error_type, exc.message, key, model_id, exc.retry_after)
    if key.available_balance <= 0:
        return api_error("exceeded_current_quota_error", key=key)
    if key.max_concurrency and key.active >= key.max_concurrency:
        message = (
            f"Your account {key.account} request reached organization max concurrency: "
            f"{key.max_concurrency}, please try again after 1 seconds"
        )
        return api_error("rate_limit_reached_error", message)
    completion = Completion(body, model, reply)
    if not streaming:
        return json_response(completion.response())
    key.active += 1
    try:
        return await OfficialStream(request, key, completion, faults).run()
    finally:
        key.active -= 1


class Completion:
    """One answer, rendered as the non-stream JSON or as stream chunks."""

    def __init__(self, body: dict[str, Any], model: oa.SimModel, reply: oa.Reply) -> None:
        self.body = body
        self.model = model
        self.reply = reply
        self.id = f"chatcmpl-{new_xid()}"
        self.created = int(time.time())

    def usage(self) -> dict[str, int]:
        return oa.usage(self.body, self.reply, self.model)

    def response(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.reply.content}
        if self.reply.reasoning:
            message["reasoning_content"] = self.reply.reasoning
        if self.reply.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.reply.tool_calls]
        choice = {"index": 0, "message": message, "finish_reason": self.reply.finish_reason}
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model.id,
            "choices": [choice],
            "usage": self.usage(),
        }

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model.id,
            "choices": [choice],
        }


class OfficialStream:
    """The SSE answer (§3.3): role, reasoning, content, tool-call fragments, the finish chunk, usage, [DONE]."""

    def __init__(
        self, request: web.Request, key: ApiKey, completion: Completion, faults: dict[str, dict[str, Any]]
    ) -> None:
        self.request = request
        self.key = key
        self.completion = completion
        self.faults = faults
        self.config = state_of(request).config
        options = completion.body.get("stream_options")
        self.include_usage = isinstance(options, dict) and options.get("include_usage") is True
        self.response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        self.writer = FrameWriter(request, self.response, faults)
        self.content_chunks = 0

    async def run(self) -> web.StreamResponse:
        state = state_of(self.request)
        record = StreamRecord(new_xid(), "moonshot", self.request.path, self.key.key_id, "")
        state.streams.append(record)
        reset = self.faults.get("cut_mid_stream", {}).get("mode") == "reset"
        return await run_stream(self.request, self.response, self.writer, record, self._script, reset)

    async def send(self, chunk: dict[str, Any]) -> None:
        if self.include_usage and chunk.get("choices"):
            chunk["usage"] = None
        await self.writer.send(b"data: " + encode_json(chunk) + b"\n\n")

    async def _script(self) -> StreamStatus:
        reply, n = self.completion.reply, self.config.chunk_count
        await self.send(self.completion.chunk({"role": "assistant", "content": ""}))
        if (stall := self.faults.get("stall_mid_stream")) is not None:
            await self.writer.flush()
            await self.writer.pause(float(stall.get("seconds", 1.0)))
        for piece in split_chunks(reply.reasoning, n):
            await self.send(self.completion.chunk({"reasoning_content": piece}))
            await self._delay()
        finish = reply.finish_reason
        for piece in split_chunks(reply.content, n):
            await self.send(self.completion.chunk({"content": piece}))
            if (ended := await self._after_content()) is not None:
                if ended != "finish":
                    return ended
                finish = str(self.faults["official_finish"].get("reason", "content_filter"))
                break
            await self._delay()
        else:
            await self._tool_calls()
        await self._finish(finish)
        return "completed"

    async def _after_content(self) -> StreamStatus | str | None:
        """Faults after content chunk number n: an in-band error, a cut, an early finish, a malformed chunk."""
        self.content_chunks += 1
        count = self.content_chunks
        if count == 1 and "malformed_event" in self.faults:
            await self.writer.send(b'data: {"id":"x","choices":[{"delta":\n\n')
        error = self.faults.get("official_error")
        if error is not None and count >= int(error.get("after_chunks", 1)):
            error_type = str(error.get("type", "server_error"))
            _, body = error_body(error_type, error.get("message"), self.key, self.completion.model.id)
            await self.writer.send(b"data: " + encode_json(body) + b"\n\n")
            return "error"
        cut = self.faults.get("cut_mid_stream")
        if cut is not None and count >= int(cut.get("after_chunks", 1)):
            return "cut"
        finish = self.faults.get("official_finish")
        if finish is not None and count >= int(finish.get("after_chunks", 1)):
            return "finish"
        return None

    async def _tool_calls(self) -> None:
        for index, call in enumerate(self.completion.reply.tool_calls):
            head = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            await self.send(self.completion.chunk({"tool_calls": [head]}))
            for piece in split_chunks(call.arguments, 3):
                await self.send(
                    self.completion.chunk(
                        {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                    )
                )

    async def _finish(self, finish: str) -> None:
        usage = self.completion.usage()
        if finish != self.completion.reply.finish_reason:  # cut short: count what was sent
            usage = dict(usage, completion_tokens=self._sent_tokens())
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.include_usage:
            await self.send(self.completion.chunk({}, finish))
            last = {k: v for k, v in self.completion.chunk({}).items() if k != "choices"}
            await self.send({**last, "choices": [], "usage": usage})
        else:
            await self.send(self.completion.chunk({}, finish, usage=usage))
        await self.writer.send(b"data: [DONE]\n\n")

    def _sent_tokens(self) -> int:
        reply, n = self.completion.reply, self.config.chunk_count
        content = "".join(split_chunks(reply.content, n)[: self.content_chunks])
        return len(reply.reasoning) + len(content)

    async def _delay(self) -> None:
        if self.config.chunk_delay_s > 0:
            await self.writer.flush()
            await self.writer.pause(self.config.chunk_delay_s)


def http_fault(name: str, params: dict[str, Any]) -> web.Response:
    """The any-call faults (`http_401`, `http_429`, `http_500`) in the platform's error shape."""
    if name == "http_401":
        return api_error("incorrect_api_key_error")
    if name == "http_500":
        return api_error("server_error")
    return api_error("rate_limit_reached_error", retry_after=params.get("retry_after"))


def is_official(path: str) -> bool:
    return any(path.startswith(prefix + "/") for prefix in PREFIXES.values())


async def mint_key(request: web.Request) -> web.StreamResponse:
    data = await request.json() if request.can_read_body else {}
    try:
        key = state_of(request).official.mint(
            data.get("region", "global"),
            float(data.get("balance", 50.0)),
            data.get("models"),
            int(data.get("max_concurrency", 0)),
        )
    except (ValueError, TypeError) as exc:
        return json_response({"error": str(exc)}, status=400)
    return json_response(key.as_dict())


async def update_key(request: web.Request) -> web.StreamResponse:
    key = state_of(request).official.keys.get(request.match_info["key"])
    if key is None:
        return json_response({"error": "unknown key"}, status=400)
    data = await request.json() if request.can_read_body else {}
    if "balance" in data:
        key.cash_balance, key.voucher_balance = float(data["balance"]), 0.0
    if "revoked" in data:
        key.revoked = bool(data["revoked"])
    if "models" in data:
        key.models = data["models"]
    if "max_concurrency" in data:
        key.max_concurrency = int(data["max_concurrency"])
    return json_response(key.as_dict())


def routes() -> list[web.RouteDef]:
    table: list[web.RouteDef] = [
        web.post("/__sim/api_keys", mint_key),
        web.post("/__sim/api_keys/{key}", update_key),
    ]
    for prefix in PREFIXES.values():
        table += [
            web.post(f"{prefix}/v1/chat/completions", chat_completions),
            web.get(f"{prefix}/v1/models", list_models),
            web.get(f"{prefix}/v1/users/me/balance", balance),
            web.post(f"{prefix}/v1/tokenizers/estimate-token-count", estimate_tokens),
        ]
    return table
