"""The event loop every service runs on: uvloop where it is installed, unless KIMI_EVENT_LOOP=asyncio.

uvloop shortens each hop of the request path (gateway → Redis → worker → Kimi → worker → Redis → gateway);
`make bench` measured more gateway throughput with it (docs/BENCHMARK.md). The standard loop stays one
environment variable away, and is what runs where uvloop does not exist (Windows).
"""

from __future__ import annotations

import asyncio
import os


def install_event_loop() -> str:
    """Install the fastest available event loop policy for this process; returns its name."""
    if os.environ.get("KIMI_EVENT_LOOP", "").strip().lower() == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"
