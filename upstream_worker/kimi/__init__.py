"""Kimi client drivers: REST (`/api/...`) and Connect (`/apiv2/...`), yielding canonical events."""

from __future__ import annotations

from typing import Literal

from shared.models import ModelSpec
from upstream_worker.kimi.call import Creds, KimiCredentials, UpstreamCall
from upstream_worker.kimi.connect import ConnectDriver
from upstream_worker.kimi.rest import RestDriver

__all__ = [
    "ConnectDriver",
    "Creds",
    "KimiCredentials",
    "RestDriver",
    "UpstreamCall",
    "driver_for",
]


def driver_for(kind: str, spec: ModelSpec) -> Literal["rest", "connect"]:
    """kimi_auth accounts (no refresh token) always speak Connect; refresh_token accounts follow the model."""
    if kind == "kimi_auth":
        return "connect"
    return spec.protocol
