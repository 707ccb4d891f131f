"""What one upstream call needs: the request, the model, the account's credentials, and the chat to continue.

`KimiCredentials` is structural on purpose: token_service's `Credentials` satisfies it without either package
importing the other. Read-only properties make it covariant, so a plain `str` field satisfies `str | Secret`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from shared.models import ModelSpec
from shared.schema import ChatRequest
from shared.secret import Secret
from shared.settings import WorkerSettings

AccountKind = Literal["kimi_auth", "refresh_token"]


class KimiCredentials(Protocol):
    """An account's live credentials (token_service `Credentials`, docs/ARCHITECTURE.md "Account pool")."""

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


@dataclass(frozen=True, slots=True)
class Creds:
    """A plain implementation of `KimiCredentials`, for tests and pass-through tokens."""

    account_id: str
    kind: str
    access_token: str | Secret
    user_id: str | None = None
    device_id: str | None = None
    session_id: str | None = None


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

    @property
    def is_continuation(self) -> bool:
        return self.chat_id is not None

    @property
    def should_delete(self) -> bool:
        """Trace cleanup: delete a chat this call created, unless the client asked to keep it."""
        return self.created_chat and not self.keep_chat and self.chat_id is not None


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream deadlines (seconds). Agent lanes think for minutes before the first byte."""

    connect_s: float = 15.0
    first_byte_s: float = 120.0
    agent_first_byte_s: float = 600.0
    #: Longest silence between two chunks once the body has started.
    idle_s: float = 90.0

    @classmethod
    def from_settings(cls, settings: WorkerSettings) -> Timeouts:
        return cls(
            connect_s=settings.connect_timeout_s,
            first_byte_s=settings.first_byte_timeout_s,
            agent_first_byte_s=settings.agent_first_byte_timeout_s,
            idle_s=settings.idle_timeout_s,
        )

    def first_byte_for(self, spec: ModelSpec) -> float:
        return self.agent_first_byte_s if spec.is_agent else self.first_byte_s
