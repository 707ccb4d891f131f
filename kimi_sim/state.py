"""Everything the simulator remembers: accounts and their tokens, chats, streams, quotas, faults, the log."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from .config import K1_KIMIPLUS_ID, SimConfig
from .faults import Faults
from .official_state import OfficialState
from .tokens import decode_claims, mint_jwt, new_digits, new_xid

AccountKind = Literal["refresh_token", "kimi_auth"]
#: kimi-web-2026.md §1: `cn` is www.kimi.com (the simulator's root), `global` is www.kimi.ai (`/kimi-ai`).
Region = Literal["cn", "global"]
#: Each region's path prefix on the simulator's one origin.
REGION_PREFIXES: dict[str, str] = {"cn": "", "global": "/kimi-ai"}
#: Token issuers (kimi-web-2026.md §2.2): `user-center` (older: `space_id`, no `aud`), `account` (2026-09: `aud`,
#: `code_membership`, no `space_id`).
ISSUERS = ("user-center", "account")
StreamStatus = Literal["running", "completed", "client_closed", "cut", "error"]
#: Where an uploaded file's parse goes: `ready`, `failed`, or `never` (it stays processing: `parse_stalled`).
ParseOutcome = Literal["ready", "failed", "never"]
#: Kimi+ agents a chat may be created with besides "kimi" and K1 ("翻译通" from the spec, by default).
DEFAULT_AGENTS = frozenset({"coo6l3pkqq4ri39f36bg"})


def iso_time(ts: float) -> str:
    """RFC 3339 with microseconds, as Connect timestamps are rendered (`2025-10-21T04:23:57.122636Z`)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SimAccount:
    kind: AccountKind
    token: str
    sub: str
    exp: int
    space_id: str
    abstract_user_id: str
    device_id: str
    ssid: str
    revoked: bool = False
    #: "free" or "paid": free accounts are refused the gated models (`SimConfig.paid_models`, `peak_hours`).
    plan: str = "free"
    #: The region whose host serves this account; the other region answers its tokens 401.
    region: str = "cn"
    #: Which issuer style its tokens have (`ISSUERS`).
    issuer: str = "user-center"


@dataclass
class Chat:
    id: str
    user: str
    protocol: str
    name: str
    kimiplus_id: str
    create_time: float
    update_time: float
    messages: list[dict[str, Any]] = field(default_factory=list)
    #: REST segment id (the `req` id) → the prompt and the answer text still owed after a `length` event.
    pending_segments: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "user": self.user,
            "protocol": self.protocol,
            "name": self.name,
            "kimiplus_id": self.kimiplus_id,
            "create_time": iso_time(self.create_time),
            "update_time": iso_time(self.update_time),
            "messages": self.messages,
        }


@dataclass
class StreamRecord:
    id: str
    protocol: str
    path: str
    user: str
    chat_id: str
    status: StreamStatus = "running"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "protocol": self.protocol,
            "path": self.path,
            "user": self.user,
            "chat_id": self.chat_id,
            "status": self.status,
        }


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "body": self.body,
        }


@dataclass
class SimFile:
    """One uploaded file, of one user, through either protocol (REST pre-sign + PUT + /api/file, Connect
    `/apiv2-files/file/upload`). The bytes live in `SimState.blobs` under `sha256`."""

    id: str
    owner: str
    protocol: str
    name: str
    mime: str
    size: int
    sha256: str
    #: `image` or `file`: REST's register `type`, Connect's `FILE_TYPE_IMAGE` / `FILE_TYPE_DOCUMENT`.
    kind: str
    outcome: ParseOutcome = "ready"
    #: Parse-progress answers that still say "processing" before `outcome` shows.
    pending_polls: int = 0
    create_time: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        """`processing`, `ready` or `failed`, as of now (no poll consumed)."""
        if self.pending_polls > 0 or self.outcome == "never":
            return "processing"
        return self.outcome

    def poll(self) -> str:
        """One parse-progress answer: consumes a pending poll, then reports the status."""
        if self.pending_polls > 0:
            self.pending_polls -= 1
            return "processing"
        return self.status

    def record(self) -> dict[str, Any]:
        """What tests read: which bytes reached "Kimi", for which account, as what."""
        return {
            "id": self.id,
            "account": self.owner,
            "protocol": self.protocol,
            "name": self.name,
            "mime": self.mime,
            "size": self.size,
            "sha256": self.sha256,
            "kind": self.kind,
            "status": self.status,
        }


class InvalidToken(Exception):
    """A token the simulator did not issue, or one that expired or was revoked."""


class SimState:
    """The simulator's memory. One per app; tests reach it through `SimServer.state`."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.faults = Faults()
        self.reset()

    def reset(self) -> None:
        self.accounts: dict[str, SimAccount] = {}
        self.refresh_tokens: dict[str, str] = {}
        self.agents: set[str] = set(DEFAULT_AGENTS) | {K1_KIMIPLUS_ID}
        self.chats: dict[str, Chat] = {}
        self.deleted_chats: list[str] = []
        self.streams: deque[StreamRecord] = deque(maxlen=self.config.log_limit)
        self.requests: deque[LoggedRequest] = deque(maxlen=self.config.log_limit)
        self.active_streams: Counter[str] = Counter()
        self.long_text_rounds: dict[str, deque[float]] = {}
        self.research_used: Counter[str] = Counter()
        #: file id → file, both protocols; `uploads` lists them in upload order (what tests assert on).
        self.files: dict[str, SimFile] = {}
        self.uploads: list[SimFile] = []
        #: sha256 → bytes of every uploaded file (served by the Connect signed URLs).
        self.blobs: dict[str, bytes] = {}
        #: REST object storage: object name → (bytes, Content-Type) of `PUT /oss/<object>`.
        self.objects: dict[str, tuple[bytes, str]] = {}
        #: REST pre-sign `file_id` → its object name (the image path registers by `file_id` alone).
        self.presigned: dict[str, str] = {}
        #: REST `/api/file` register key (object name or pre-sign file id) → the file id it created.
        self.registered: dict[str, str] = {}
        #: Official API keys (kimi_sim/official.py).
        self.official = OfficialState()
        self.faults.disarm_all()

    # -- accounts and tokens -------------------------------------------------------------------------

    def add_account(
        self,
        kind: AccountKind,
        exp_in_s: int | None = None,
        plan: str = "free",
        region: str = "cn",
        issuer: str | None = None,
    ) -> SimAccount:
        """A new user of `region`; its `token` is a refresh token or a kimi-auth JWT, expiring in `exp_in_s`
        seconds. `issuer` defaults to the region's usual one: `account` on global, `user-center` on cn."""
        if kind not in ("refresh_token", "kimi_auth"):
            raise ValueError(f"unknown account kind {kind!r}")
        if plan not in ("free", "paid"):
            raise ValueError(f"unknown plan {plan!r}")
        if region not in REGION_PREFIXES:
            raise ValueError(f"unknown region {region!r}")
        issuer = issuer or ("account" if region == "global" else "user-center")
        if issuer not in ISSUERS:
            raise ValueError(f"unknown issuer {issuer!r}")
        account = SimAccount(
            kind,
            "",
            new_xid(),
            0,
            new_xid(),
            new_xid(),
            new_digits(),
            new_digits(),
            plan=plan,
            region=region,
            issuer=issuer,
        )
        if kind == "refresh_token":
            ttl = self.config.refresh_ttl_s if exp_in_s is None else exp_in_s
            account.token = self.mint_refresh(account, ttl)
        else:
            ttl = self.config.kimi_auth_ttl_s if exp_in_s is None else exp_in_s
            account.token = self.mint_access(account, ttl)
        account.exp = decode_claims(account.token)["exp"]
        self.accounts[account.sub] = account
        return account

    def _base_claims(self, account: SimAccount, ttl_s: int) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": account.issuer, "exp": now + ttl_s, "iat": now, "jti": new_xid()}
        if account.issuer == "account":
            claims["aud"] = ["kimi.ai" if account.region == "global" else "kimi.com"]
        return claims

    def _user_claims(self, account: SimAccount) -> dict[str, Any]:
        """The user's ids; `space_id` only from the older issuer, `region` only on international tokens (no
        China sample has one, kimi-web-2026.md §1.3)."""
        claims: dict[str, Any] = {"sub": account.sub, "abstract_user_id": account.abstract_user_id}
        if account.issuer == "user-center":
            claims["space_id"] = account.space_id
        if account.region == "global":
            claims["region"] = "overseas"
        return claims

    def mint_refresh(self, account: SimAccount, ttl_s: int) -> str:
        claims = self._base_claims(account, ttl_s) | {"typ": "refresh"} | self._user_claims(account)
        token = mint_jwt(claims)
        self.refresh_tokens[token] = account.sub
        return token

    def mint_access(self, account: SimAccount, ttl_s: int) -> str:
        claims = (
            self._base_claims(account, ttl_s)
            | {"typ": "access", "app_id": "kimi"}
            | self._user_claims(account)
            | {"ssid": account.ssid, "device_id": account.device_id, "membership": {"level": 10}}
        )
        if account.issuer == "account":
            claims["code_membership"] = {"level": 10}
        return mint_jwt(claims)

    def refresh(self, refresh_token: str, region: str = "cn") -> tuple[str, str]:
        """A new (access_token, refresh_token); the old refresh token dies only with rotate_refresh_tokens."""
        account = self._live_account(refresh_token, self.refresh_tokens.get(refresh_token), "refresh", region)
        if self.config.rotate_refresh_tokens:
            del self.refresh_tokens[refresh_token]
        access = self.mint_access(account, self.config.access_ttl_s)
        return access, self.mint_refresh(account, self.config.refresh_ttl_s)

    def account_for_access(self, token: str, region: str = "cn") -> SimAccount:
        """The account of a live access / kimi-auth JWT (typ=access, app_id=kimi) of `region`, else
        InvalidToken."""
        try:
            claims = decode_claims(token)
        except ValueError as exc:
            raise InvalidToken("malformed token") from exc
        if claims.get("app_id") != "kimi":
            raise InvalidToken("not a kimi access token")
        return self._live_account(token, claims.get("sub"), "access", region)

    def _live_account(self, token: str, sub: Any, typ: str, region: str) -> SimAccount:
        try:
            claims = decode_claims(token)
        except ValueError as exc:
            raise InvalidToken("malformed token") from exc
        account = self.accounts.get(sub) if isinstance(sub, str) else None
        if account is None or account.revoked or claims.get("sub") != sub:
            raise InvalidToken("unknown token")
        if claims.get("typ") != typ:
            raise InvalidToken("wrong token type")
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= time.time():
            raise InvalidToken("expired token")
        if account.region != region:
            raise InvalidToken("a token of the other region")
        return account

    def revoke(self, sub: str) -> bool:
        """Invalidate every token of a user (a banned or logged-out account)."""
        account = self.accounts.get(sub)
        if account is None:
            return False
        account.revoked = True
        return True

    # -- chats ---------------------------------------------------------------------------------------

    def new_chat(self, user: str, protocol: str, kimiplus_id: str = "kimi", name: str = "未命名会话") -> Chat:
        now = time.time()
        chat = Chat(new_xid(), user, protocol, name, kimiplus_id, now, now)
        self.chats[chat.id] = chat
        return chat

    def chat_for(self, user: str, chat_id: str) -> Chat | None:
        chat = self.chats.get(chat_id)
        return chat if chat is not None and chat.user == user else None

    def delete_chat(self, user: str, chat_id: str) -> bool:
        if self.chat_for(user, chat_id) is None:
            return False
        del self.chats[chat_id]
        self.deleted_chats.append(chat_id)
        return True

    def user_chats(self, user: str) -> list[Chat]:
        """The user's chats, most recently updated first."""
        mine = [c for c in self.chats.values() if c.user == user]
        return sorted(mine, key=lambda c: (c.update_time, c.id), reverse=True)

    # -- streams and quotas --------------------------------------------------------------------------

    def user_busy(self, user: str) -> bool:
        limit = self.config.max_streams_per_user
        return bool(limit) and self.active_streams[user] >= limit

    def open_stream(self, protocol: str, path: str, user: str, chat_id: str) -> StreamRecord | None:
        """A running stream record, or None when the user already runs `max_streams_per_user` streams."""
        if self.user_busy(user):
            return None
        self.active_streams[user] += 1
        record = StreamRecord(new_xid(), protocol, path, user, chat_id)
        self.streams.append(record)
        return record

    def close_stream(self, record: StreamRecord, status: StreamStatus) -> None:
        if record.status == "running":
            self.active_streams[record.user] -= 1
            if self.active_streams[record.user] <= 0:
                del self.active_streams[record.user]
        record.status = status

    def take_long_text_round(self, user: str, prompt: str) -> bool:
        """Count a long-text round; False when the user's quota for the window is used up."""
        if len(prompt) < self.config.long_text_chars:
            return True
        now = time.monotonic()
        rounds = self.long_text_rounds.setdefault(user, deque())
        while rounds and rounds[0] <= now - self.config.quota_window_s:
            rounds.popleft()
        if len(rounds) >= self.config.quota_rounds:
            return False
        rounds.append(now)
        return True

    def research_usage(self, user: str) -> dict[str, int]:
        total = self.config.research_total
        used = self.research_used[user]
        return {"remain": max(total - used, 0), "total": total, "used": used}

    # -- files -------------------------------------------------------------------------------------

    def add_file(
        self, owner: str, protocol: str, name: str, mime: str, kind: str, data: bytes, path: str
    ) -> SimFile:
        """Record an upload made by the call to `path`; an armed `parse_failed` / `parse_stalled` fault
        matching that path decides that the file's parse fails / never ends."""
        outcome: ParseOutcome = "ready"
        if self.faults.take("parse_stalled", path) is not None:
            outcome = "never"
        elif self.faults.take("parse_failed", path) is not None:
            outcome = "failed"
        sha256 = hashlib.sha256(data).hexdigest()
        file_id = new_xid() if protocol == "rest" else str(uuid.uuid4())
        sim_file = SimFile(file_id, owner, protocol, name, mime, len(data), sha256, kind, outcome)
        sim_file.pending_polls = self.config.file_parse_polls
        self.files[file_id] = sim_file
        self.uploads.append(sim_file)
        self.blobs[sha256] = data
        return sim_file

    def file_for(self, user: str, file_id: str) -> SimFile | None:
        """The user's own file; another user's file does not exist for them."""
        sim_file = self.files.get(file_id)
        return sim_file if sim_file is not None and sim_file.owner == user else None

    def stored_bytes(self, user: str) -> int:
        return sum(f.size for f in self.uploads if f.owner == user)

    def snapshot(self) -> dict[str, Any]:
        return {
            "chats": {chat_id: chat.as_dict() for chat_id, chat in self.chats.items()},
            "deleted_chats": list(self.deleted_chats),
            "streams": [record.as_dict() for record in self.streams],
            "uploads": [sim_file.record() for sim_file in self.uploads],
        }
