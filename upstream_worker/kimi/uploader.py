"""What the REST and Connect uploaders (upload_rest.py, upload_connect.py) share."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import aiohttp

from shared.errors import UpstreamTimeout
from shared.settings import UpstreamTimeouts
from upstream_worker.kimi.headers import FallbackIds

_T = TypeVar("_T")


class Uploader:
    """What both lanes' uploaders share: the session, the lane's base URL, the deadlines, the fallback ids."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        timeouts: UpstreamTimeouts,
        ids: FallbackIds | None = None,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeouts = timeouts
        self._ids = ids or FallbackIds.draw()

    async def _within_upload_time(self, sending: Awaitable[_T], name: str) -> _T:
        """`sending`, or an `UpstreamTimeout` (504) once it takes longer than the upload's bound."""
        try:
            async with asyncio.timeout(self._timeouts.upload_s):
                return await sending
        except TimeoutError:
            raise UpstreamTimeout(
                f"Kimi did not take the upload of {name!r} within {self._timeouts.upload_s:g} s"
            ) from None
