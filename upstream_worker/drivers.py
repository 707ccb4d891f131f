"""The upstream drivers, in one registry keyed by protocol name: a new upstream is one entry of `DRIVERS`.

Which protocol serves a job follows from the account's kind and the model (`token_service.client.protocol_for`);
the runner takes that protocol's driver from the process's registry, built once by `open_drivers` on the
process's one `ClientSession` and Redis client. A driver keeps no resource of its own: the session and the
client are closed by `upstream_worker/resources.py`, so nothing is left to close at shutdown.

    rest, connect   Kimi's web chat (upstream_worker/kimi), with a web account's credentials
    moonshot        the official API (upstream_worker/moonshot) with an API key, through `KeyLane`: real usage,
                    native tool calls (not in `PROMPTED_TOOLS`: the runner sends the tools as they are, no
                    prompt emulation), images inlined from the job's attachment bytes
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Protocol, cast

import aiohttp
import redis.asyncio as aioredis

from shared.attachments import AttachmentStore, request_attachments
from shared.errors import ServiceUnavailable
from shared.schema import Event
from shared.settings import WorkerSettings
from token_service.client import Credentials
from upstream_worker.kimi import ConnectDriver, RestDriver
from upstream_worker.kimi.call import KimiCredentials, UpstreamCall
from upstream_worker.moonshot import KeyCall, KeyCreds, MoonshotDriver


class Driver(Protocol):
    """One upstream protocol's client.

    `chat` yields the turn's canonical events (`Start`, content, `Keepalive`, optionally `Usage`, then `Done`)
    and raises `shared.errors` exceptions, classified by type, for its failures; it fills in `call.chat_id` /
    `call.parent_id` / `call.created_chat` as it learns them. `cleanup` is the trace cleanup after the turn
    (Kimi: delete the chat the call created unless the client keeps it); it never raises, because a failed
    cleanup must not fail a finished turn, and returns whether it removed anything. `delete_chat` removes a
    kept chat later (the chat sweeper, upstream_worker/sweeper.py); it never raises either, and says whether
    the upstream confirmed.
    """

    def chat(self, call: UpstreamCall) -> AsyncIterator[Event]: ...

    async def cleanup(self, call: UpstreamCall) -> bool: ...

    async def delete_chat(self, creds: KimiCredentials, chat_id: str) -> bool: ...


class KeyLane:
    """The official API driver as a registry `Driver`: the leased key and its base URL from the pool's
    credentials, the request's images from the job's attachment bytes. It yields the API's real `Usage`
    (`estimated=False`, which the runner keeps) and native `ToolCallEvent`s."""

    def __init__(self, driver: MoonshotDriver, attachments: AttachmentStore, default_base_url: str) -> None:
        self._driver = driver
        self._attachments = attachments
        self._default_base_url = default_base_url

    async def chat(self, call: UpstreamCall) -> AsyncIterator[Event]:
        key_call = KeyCall(call.request, call.spec, self._key(call.creds), await self._images(call))
        # An async generator function: closing it closes the HTTP body when the job is cancelled.
        chat = cast(AsyncGenerator[Event, None], self._driver.chat(key_call))
        async with contextlib.aclosing(chat) as events:
            async for event in events:
                yield event

    async def cleanup(self, call: UpstreamCall) -> bool:
        """The API keeps no chat of a turn: nothing to clean up."""
        return False

    async def delete_chat(self, creds: KimiCredentials, chat_id: str) -> bool:
        """The API keeps no chat: there is none to delete (no stored response of a key records one)."""
        return False

    def _key(self, creds: KimiCredentials) -> KeyCreds:
        if not isinstance(creds, Credentials):  # keys come from the pool only, never from a client
            raise ServiceUnavailable("the official API lane needs an API key of the pool")
        return KeyCreds(creds.account_id, creds.access_token, creds.origin or self._default_base_url)

    async def _images(self, call: UpstreamCall) -> dict[str, bytes]:
        parts = [part for part in request_attachments(call.request.messages) if part.kind == "image"]
        job_id = call.request.request_id
        return {part.sha256: await self._attachments.get(job_id, part.sha256) for part in parts}


#: Builds one protocol's driver from the process's shared session, the worker's settings and its Redis client.
DriverFactory = Callable[[aiohttp.ClientSession, WorkerSettings, aioredis.Redis], Driver]

#: Every upstream protocol the worker speaks.
DRIVERS: Mapping[str, DriverFactory] = {
    "rest": lambda session, settings, redis: RestDriver(
        session, settings.common.kimi_base_url, settings.timeouts
    ),
    "connect": lambda session, settings, redis: ConnectDriver(
        session, settings.common.kimi_base_url, settings.timeouts
    ),
    "moonshot": lambda session, settings, redis: KeyLane(
        MoonshotDriver(session, settings.timeouts), AttachmentStore(redis), settings.pool.moonshot_base_url
    ),
}

#: Protocols whose upstream has no function-tool type (Kimi's web chat): a request's tools travel through the
#: prompt protocol and the answer's calls are read by the parser (upstream_worker/tool_turn.py). A protocol not
#: listed takes `tools` itself (an official API) and its driver yields `ToolCallEvent`s.
PROMPTED_TOOLS: frozenset[str] = frozenset({"rest", "connect"})


def open_drivers(
    session: aiohttp.ClientSession,
    settings: WorkerSettings,
    redis: aioredis.Redis,
    factories: Mapping[str, DriverFactory] = DRIVERS,
) -> dict[str, Driver]:
    """One driver per protocol, sharing `session` and `redis`."""
    return {protocol: build(session, settings, redis) for protocol, build in factories.items()}
