"""Kimi client drivers: REST (`/api/...`) and Connect (`/apiv2/...`), yielding canonical events.

Which one serves an account for a model is the account kind's business: `token_service.client.protocol_for`.
"""

from __future__ import annotations

from upstream_worker.kimi.call import Creds, KimiCredentials, UpstreamCall
from upstream_worker.kimi.connect import ConnectDriver
from upstream_worker.kimi.rest import RestDriver

__all__ = [
    "ConnectDriver",
    "Creds",
    "KimiCredentials",
    "RestDriver",
    "UpstreamCall",
]
