"""What one upstream call needs: the request, the model, the account's credentials, and the chat to continue.

`KimiCredentials` is structural on purpose: token_service's `Credentials` satisfies it without the drivers
importing the token service; `kind` is a name of its kind registry, which only that registry interprets. Read-only properties make it covariant, so a plain `str` field satisfies `str | Secret`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from shared.models import ModelSpec
from shared.schema import ChatRequest
from shared.secret import Secret
from upstream_worker.kimi.files import KimiFile


class KimiCredentials(Protocol):
    """An account's live credentials (token_service `Credentials`, docs/INTERNALS.md "Account pool")."""

    @property
    def account_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def access_token(self) -> str | Secret: ...

    #: The JWT `sub`; sent as X-Traffic-Id. REST falls back to GET /api/user when it is missing.
    @property
    def user_id(self) -> str | None: ...

    @property
    def device_id(self) -> str | None: ...

    @property
    def session_id(self) -> str | None: ...

    #: The account's web origin (its region's host, or its own); None: the driver's KIMI_BASE_URL.
    @property
    def origin(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Creds:
    """A plain implementation of `KimiCredentials`, for tests and pass-through tokens."""

    account_id: str
    kind: str
    access_token: str | Secret
    user_id: str | None = None
    device_id: str | None = None
    session_id: str | None = None
    origin: str | None = None


def origin_of(creds: KimiCredentials, default: str) -> str:
    """Where a call as this account goes: its own origin (kimi-web-2026.md §1: a token works only on its region's
    host), else the driver's configured one."""
    return (creds.origin or default).rstrip("/")


def reveal(token: str | Secret) -> str:
    return token.reveal() if isinstance(token, Secret) else token


@dataclass(slots=True)
class UpstreamCall:
    """One turn sent to Kimi. The driver fills in `chat_id` / `parent_id` as it learns them."""

    request: ChatRequest
    spec: ModelSpec
    creds: KimiCredentials
    #: The Kimi chat to continue; None starts a new chat.
    chat_id: str | None = None
    #: Connect: the last assistant message id of that chat (the next turn's `parent_id`).
    parent_id: str | None = None
    #: Keep the chat afterwards instead of deleting it (trace cleanup).
    keep_chat: bool = False
    #: Set by the driver when this call created the chat (only such chats are ever deleted).
    created_chat: bool = False
    #: Files already uploaded for this account (upstream_worker/kimi/uploads.py) that the turn references.
    files: list[KimiFile] = field(default_factory=list)

    @property
    def is_continuation(self) -> bool:
        return self.chat_id is not None

    @property
    def should_delete(self) -> bool:
        """Trace cleanup: delete a chat this call created, unless the client asked to keep it."""
        return self.created_chat and not self.keep_chat and self.chat_id is not None
