"""The simulator's knobs (one frozen object; `POST /__sim/config` swaps in a modified copy)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

K1_KIMIPLUS_ID = "crm40ee9e5jvhsn7ptcg"


@dataclass(frozen=True)
class SimConfig:
    chunk_count: int = 4
    chunk_delay_s: float = 0.0
    access_ttl_s: int = 900
    refresh_ttl_s: int = 90 * 86400
    kimi_auth_ttl_s: int = 30 * 86400
    quota_rounds: int = 30
    quota_window_s: int = 10800
    long_text_chars: int = 2000
    research_total: int = 5
    heartbeat_interval_s: float = 1.0
    rotate_refresh_tokens: bool = False
    #: Concurrent streams one user may run (both protocols together); 0 = unlimited (benchmarks).
    max_streams_per_user: int = 1
    #: REST `k1` events: "text" → {"event":"k1","text":…}; "data" → {"event":"k1","data":{"text":…}}.
    k1_event_shape: str = "text"
    #: Entries kept in the request log and the stream list (oldest dropped first).
    log_limit: int = 10000
    #: Tool-call answers stream in pieces of this many characters, so markers are split across events.
    tool_chunk_chars: int = 7
    #: Parse-progress answers that say "processing" before a file is ready (REST: `/api/file` calls after the
    #: first; Connect: `GetFileParseProgress` calls).
    file_parse_polls: int = 1
    #: Per-user storage of uploaded files (kimi-web-2026.md §6: 500 MB).
    file_quota_bytes: int = 500 * 1024 * 1024
    #: Connect `options.model` entries a free account is refused (kimi-web-2026.md §4.4), comma-separated.
    paid_models: str = "k3-agent,k3-agent-swarm"
    #: Peak hours: free accounts are refused on every model.
    peak_hours: bool = False

    def replace(self, changes: dict[str, Any]) -> SimConfig:
        """A copy with `changes` applied; unknown fields or wrong types raise ValueError."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown config field {name!r}")
            kind = type(getattr(self, name))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} must be {kind.__name__}")
            coerced[name] = value
        return dataclasses.replace(self, **coerced)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
