"""The official Moonshot Open Platform API (API keys) as an upstream: request, sans-IO decoder, driver."""

from __future__ import annotations

from upstream_worker.moonshot.call import KeyCall, KeyCreds, MoonshotCall, MoonshotCredentials
from upstream_worker.moonshot.driver import MoonshotDriver

__all__ = ["KeyCall", "KeyCreds", "MoonshotCall", "MoonshotCredentials", "MoonshotDriver"]
