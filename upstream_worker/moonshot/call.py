"""What one call of the official API needs: the request, the model's row, and an API key with its base URL.

Both are structural, like `upstream_worker.kimi.KimiCredentials`: the token service's credential of an API key
and the worker's call object satisfy them without either package importing the other. The credential of a key
is the key and the base URL of its platform (`https://api.moonshot.ai` or `https://api.moonshot.cn`; keys are
regional, moonshot-official-api.md §1), never `KIMI_BASE_URL`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from shared.models import ModelSpec
from shared.schema import ChatRequest
from shared.secret import Secret


class MoonshotCredentials(Protocol):
    """An API key's credential (docs/INTERNALS.md "Official API driver")."""

    @property
    def account_id(self) -> str: ...

    @property
    def api_key(self) -> str | Secret: ...

    #: The platform's origin, with or without `/v1` (`https://api.moonshot.ai`, `https://api.moonshot.cn/v1`).
    @property
    def base_url(self) -> str: ...


class MoonshotCall(Protocol):
    """One turn for the official API."""

    @property
    def request(self) -> ChatRequest: ...

    @property
    def spec(self) -> ModelSpec: ...

    @property
    def creds(self) -> MoonshotCredentials: ...

    #: The bytes of the request's image attachments, by sha256 (the job's bytes in Redis,
    #: `shared.attachments.AttachmentStore`); empty when it has none.
    @property
    def images(self) -> Mapping[str, bytes]: ...


@dataclass(frozen=True, slots=True)
class KeyCreds:
    """A plain `MoonshotCredentials`, for tests and until the token service hands out keys."""

    account_id: str
    api_key: str | Secret
    base_url: str


@dataclass(frozen=True, slots=True)
class KeyCall:
    """A plain `MoonshotCall`."""

    request: ChatRequest
    spec: ModelSpec
    creds: MoonshotCredentials
    images: Mapping[str, bytes] = field(default_factory=dict)


def api_root(base_url: str) -> str:
    """`https://api.moonshot.ai/v1` for any spelling of the base URL (trailing `/`, with or without `/v1`)."""
    root = base_url.rstrip("/")
    return root if root.endswith("/v1") else f"{root}/v1"
