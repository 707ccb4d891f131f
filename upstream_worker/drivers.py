"""The upstream drivers, in one registry keyed by protocol name: a new upstream is one entry of `DRIVERS`.

Which protocol serves a job follows from the account's kind and the model (`upstream_worker.kimi.driver_for`);
the runner takes that protocol's driver from the process's registry, built once by `open_drivers` on the
process's one `ClientSession`. A driver keeps no resource of its own: the session is closed by
`upstream_worker/resources.py`, so nothing is left to close at shutdown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Protocol

import aiohttp

from shared.schema import Event
from shared.settings import WorkerSettings
from upstream_worker.kimi import ConnectDriver, RestDriver
from upstream_worker.kimi.call import UpstreamCall


class Driver(Protocol):
    """One upstream protocol's client.

    `chat` yields the turn's canonical events (`Start`, content, `Keepalive`, optionally `Usage`, then `Done`)
    and raises `shared.errors` exceptions, classified by type, for its failures; it fills in `call.chat_id` /
    `call.parent_id` / `call.created_chat` as it learns them. `cleanup` is the trace cleanup after the turn
    (Kimi: delete the chat the call created unless the client keeps it); it never raises, because a failed
    cleanup must not fail a finished turn, and returns whether it removed anything.
    """

    def chat(self, call: UpstreamCall) -> AsyncIterator[Event]: ...

    async def cleanup(self, call: UpstreamCall) -> bool: ...


#: Builds one protocol's driver from the process's shared session and the worker's settings.
DriverFactory = Callable[[aiohttp.ClientSession, WorkerSettings], Driver]

#: Every upstream protocol the worker speaks.
DRIVERS: Mapping[str, DriverFactory] = {
    "rest": lambda session, settings: RestDriver(session, settings.common.kimi_base_url, settings.timeouts),
    "connect": lambda session, settings: ConnectDriver(
        session, settings.common.kimi_base_url, settings.timeouts
    ),
}

#: Protocols whose upstream has no function-tool type (Kimi's web chat): a request's tools travel through the
#: prompt protocol and the answer's calls are read by the parser (upstream_worker/tool_turn.py). A protocol not
#: listed takes `tools` itself (an official API) and its driver yields `ToolCallEvent`s.
PROMPTED_TOOLS: frozenset[str] = frozenset({"rest", "connect"})


def open_drivers(
    session: aiohttp.ClientSession, settings: WorkerSettings, factories: Mapping[str, DriverFactory] = DRIVERS
) -> dict[str, Driver]:
    """One driver per protocol, sharing `session`."""
    return {protocol: build(session, settings) for protocol, build in factories.items()}
