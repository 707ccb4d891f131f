"""Fault knobs: each armed for the next `count` matching calls, optionally only on paths containing `path`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Faults the request middleware applies to any (non-control) call.
HTTP_FAULTS = ("http_401", "http_429", "http_500", "stall_first_byte")
#: Faults the streaming handlers (REST completion, Connect Chat) apply.
STREAM_FAULTS = (
    "resource_exhausted",
    "done_then_error",
    "cut_mid_stream",
    "split_utf8",
    "split_frames",
    "coalesce_frames",
    "malformed_event",
    "stream_error",
    "length",
    "quota_exhausted",
    "user_stream_pushing",
    "paywall",
    "unauthenticated_trailer",
    "stall_mid_stream",
    "tool_call_variant",
    "tool_call_error",
    "no_tool_call",
    "split_utf8_events",
    "unknown_event",
)
#: Faults the upload handlers take (a failed upload; the next uploaded file's parse fails or never ends), matched
#: against the path of the call that uploads (REST `/api/file`, Connect `/apiv2-files/file/upload`).
FILE_FAULTS = ("upload_failed", "parse_failed", "parse_stalled")
#: Faults only the official API's chat completions take (kimi_sim/official.py).
OFFICIAL_FAULTS = ("official_error", "official_finish", "stream_options_rejected")
FAULT_NAMES = frozenset(HTTP_FAULTS + STREAM_FAULTS + FILE_FAULTS + OFFICIAL_FAULTS)
CONNECT_ONLY = ("resource_exhausted", "done_then_error", "paywall", "unauthenticated_trailer")
REST_ONLY = ("stream_error", "length")
REST_STREAM_FAULTS = tuple(name for name in STREAM_FAULTS if name not in CONNECT_ONLY)
CONNECT_STREAM_FAULTS = tuple(name for name in STREAM_FAULTS if name not in REST_ONLY)
OFFICIAL_STREAM_FAULTS = (
    "cut_mid_stream",
    "split_utf8",
    "split_frames",
    "coalesce_frames",
    "malformed_event",
    "stall_mid_stream",
    *OFFICIAL_FAULTS,
)


@dataclass
class ArmedFault:
    name: str
    remaining: int
    path: str | None
    params: dict[str, Any] = field(default_factory=dict)


class Faults:
    """The armed faults; `take` consumes one use of the first matching fault."""

    def __init__(self) -> None:
        self._armed: list[ArmedFault] = []

    def arm(self, name: str, count: int = 1, path: str | None = None, **params: Any) -> None:
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        self._armed.append(ArmedFault(name, count, path, params))

    def take(self, name: str, path: str) -> dict[str, Any] | None:
        """The params of an armed `name` fault matching `path` (one use consumed), else None."""
        for fault in self._armed:
            if fault.name == name and (fault.path is None or fault.path in path):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._armed.remove(fault)
                return fault.params
        return None

    def take_stream_faults(self, path: str, names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
        """Every fault of `names` armed for `path`, by name (one use of each consumed)."""
        taken = {}
        for name in names:
            params = self.take(name, path)
            if params is not None:
                taken[name] = params
        return taken

    def disarm_all(self) -> None:
        self._armed.clear()

    def armed(self) -> list[dict[str, Any]]:
        return [{"name": f.name, "remaining": f.remaining, "path": f.path, **f.params} for f in self._armed]
